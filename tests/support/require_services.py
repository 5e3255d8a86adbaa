"""A pytest plugin: with ``REQUIRE_SERVICES=1`` a run that skips anything fails;
and a test that asks for a service fixture must carry the ``services`` marker.

:func:`tests.support.services.missing` already fails a test whose service is absent; this
catches every other way a test can skip (a ``pytest.skip()`` of its own, ``skipif``,
``importorskip``), so a run that was asked to prove everything cannot report
"1 skipped" and pass.

``-m "not services"`` must run on a machine with neither RabbitMQ nor an
Elasticsearch API: collection stops with a usage error naming any test that
requests ``rabbitmq_url`` or ``elasticsearch_url`` (directly or through its
fixtures) without the marker. Loaded by ``conftest.py``; ``tests/system/test_suite_rules.py``
runs it on a throwaway test file.
"""

from __future__ import annotations

import os

import pytest

_skipped: list[str] = []


def _required() -> bool:
    return os.environ.get("REQUIRE_SERVICES") == "1"


SERVICE_FIXTURES = frozenset({"rabbitmq_url", "elasticsearch_url"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    unmarked = [
        item.nodeid
        for item in items
        if SERVICE_FIXTURES & set(getattr(item, "fixturenames", ()))
        and item.get_closest_marker("services") is None
    ]
    if unmarked:
        raise pytest.UsageError(
            "these tests use a service fixture but lack @pytest.mark.services:\n  "
            + "\n  ".join(unmarked)
        )


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and not hasattr(report, "wasxfail"):
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _required() and _skipped and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _required() and _skipped:
        terminalreporter.write_line(
            f"REQUIRE_SERVICES=1 but {len(_skipped)} test(s) skipped, so the run fails: "
            + ", ".join(_skipped[:10]),
            red=True,
        )

"""A pytest plugin: with ``REQUIRE_SERVICES=1`` a run that skips anything fails.

:func:`tests.services.missing` already fails a test whose service is absent; this
catches every other way a test can skip (a ``pytest.skip()`` of its own, ``skipif``,
``importorskip``), so a run that was asked to prove everything cannot report
"1 skipped" and pass. Loaded by ``conftest.py``; ``tests/test_suite_rules.py``
runs it on a throwaway test file.
"""

from __future__ import annotations

import os

import pytest

_skipped: list[str] = []


def _required() -> bool:
    return os.environ.get("REQUIRE_SERVICES") == "1"


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

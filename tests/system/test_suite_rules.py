"""Rules the suite keeps about itself: no quiet skips, a deadline on every test."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.services import local_broker_ctl

ROOT = Path(__file__).resolve().parent.parent.parent

pytest_plugins = ["pytester"]

SKIPPING = """
import pytest

from tests.support.services import local_broker_ctl

def test_runs():
    assert True

def test_skips():
    pytest.skip("a service is somewhere else")
"""


@pytest.mark.parametrize(("required", "code"), [("1", 1), ("", 0)])
def test_a_skip_fails_the_run_only_when_services_are_required(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, required: str, code: int
) -> None:
    monkeypatch.setenv("REQUIRE_SERVICES", required)
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    pytester.makepyfile(test_skipping=SKIPPING)
    result = pytester.runpytest_subprocess(
        "-p", "tests.support.require_services", "-p", "no:cacheprovider"
    )
    result.assert_outcomes(passed=1, skipped=1)
    assert result.ret == code
    if required:
        result.stdout.fnmatch_lines(["*REQUIRE_SERVICES=1 but 1 test(s) skipped*test_skips*"])


def test_every_test_has_a_deadline(pytestconfig: pytest.Config) -> None:
    # pytest-timeout's global default (pyproject.toml): a hang fails instead of stalling CI.
    assert float(pytestconfig.getini("timeout")) > 0


@pytest.mark.parametrize(
    "url", ["amqp://guest:guest@127.0.0.1/", "amqp://guest:guest@localhost:5672/", "amqp://u@[::1]/"]
)
def test_the_local_broker_is_recognised_however_it_is_written(url: str) -> None:
    assert local_broker_ctl(url, "a restart").endswith("rabbitmqctl")


def test_a_remote_broker_fails_a_required_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REQUIRE_SERVICES", "1")
    with pytest.raises(pytest.fail.Exception, match="needs this machine's broker"):
        local_broker_ctl("amqp://guest:guest@broker.example:5672/", "a restart")
    monkeypatch.setenv("REQUIRE_SERVICES", "0")
    with pytest.raises(pytest.skip.Exception):
        local_broker_ctl("amqps://guest:guest@broker.example/", "a restart")

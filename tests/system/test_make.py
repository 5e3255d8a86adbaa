"""``make run`` installs what running needs and nothing more; ``make test`` adds the
development extras; CI installs promtool (as make would run them: ``make -n -B``)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent


def _plan(target: str) -> str:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    # Under `make test` (as .ci/run runs it) the parent's MAKELEVEL/MAKEFLAGS would make the
    # child print "Entering directory" lines: the plan is read as a fresh make sees it.
    env = {k: v for k, v in os.environ.items() if k not in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS")}
    return subprocess.run(
        ["make", "-n", "-B", "--no-print-directory", target],
        cwd=ROOT, capture_output=True, text=True, check=True, env=env,
    ).stdout  # fmt: skip


def test_make_run_installs_the_runtime_dependencies_only() -> None:
    plan = _plan("run")
    assert "pip install --quiet -e .\n" in plan
    assert "[dev]" not in plan
    assert plan.rstrip().endswith("supervisor.py demo")


def test_make_test_installs_the_development_extras() -> None:
    assert "-e '.[dev]'" in _plan("test")


def test_ci_installs_promtool_before_the_tests() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    assert ci.index("make metrics-deps") < ci.index("make test")
    assert "apt-get install -y prometheus" in _plan("metrics-deps")

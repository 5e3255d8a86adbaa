"""The soak with feedback: bounces and complaints over SNS into a distributed cluster under
faults (SMTP refusals, a killed worker, auth crashing after a save); each report ends its
email BOUNCED or COMPLAINED and still nothing is lost. No broker restart: that is
tests/system/test_soak.py's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
pytestmark = [pytest.mark.services, pytest.mark.slow, pytest.mark.timeout(600)]


def test_soak_with_bounces_and_complaints_loses_nothing(
    elasticsearch_url: str, rabbitmq_url: str, tmp_path: Path
) -> None:
    env = {**os.environ, "ELASTICSEARCH_URL": elasticsearch_url, "RABBITMQ_URL": rabbitmq_url}
    env.pop("MAILACTORS_PROFILE", None)
    argv = [
        sys.executable, str(ROOT / "supervisor.py"), "soak",
        "--emails", "150", "--workers", "2", "--faults", "4xx=0.05,5xx=0.02,kill=1,auth=1",
        "--bounces", "0.1", "--complaints", "0.05",
        "--fault-spacing", "10", "--deadline", "90", "--no-progress",
        "--work-dir", str(tmp_path / "soak"),
    ]  # fmt: skip
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=420, check=False)
    lines = done.stdout.strip().splitlines()
    assert lines, f"no output; stderr:\n{done.stderr[-3000:]}"
    figures = json.loads(lines[-1])
    context = f"{lines[-1]}\nstderr:\n{done.stderr[-2000:]}"
    assert done.returncode == 0, context
    assert figures["submitted"] == 150 and figures["lost"] == 0, context
    feedback = figures["feedback"]
    assert feedback["posted"] > 0 and feedback["not_applied"] == 0, context
    assert figures["bounced"] + figures["complained"] == feedback["posted"], context
    ended = ("sent", "failed", "suppressed", "bounced", "complained")
    assert sum(figures[k] for k in ended) == 150, context

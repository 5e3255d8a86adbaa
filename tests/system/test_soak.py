"""The short soak: ``supervisor.py soak`` with every fault, a few hundred emails.

Real processes (``supervisor.py up --profile distributed``, two email-server
workers), real RabbitMQ (restarted once), the Elasticsearch API, an aiosmtpd
server refusing 5% of messages transiently and 2% permanently; two workers
SIGKILLed and auth crashing twice between a save and its publish. Nothing may
be lost, nothing sent twice beyond the documented window, no FAILED without a
reason, and the limited domain never above its rate in any second at the
server. About 90 seconds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.services import local_broker_ctl

ROOT = Path(__file__).resolve().parent.parent.parent
# The soak runs in a child process bounded at 420 s; the test outlives that bound.
pytestmark = [pytest.mark.services, pytest.mark.slow, pytest.mark.timeout(600)]


def test_short_soak_loses_nothing_and_sends_nothing_twice(
    elasticsearch_url: str, rabbitmq_url: str, tmp_path: Path
) -> None:
    # "all" includes one broker restart, which only this machine's broker can have:
    # elsewhere the soak is missing (a skip, or a failure under REQUIRE_SERVICES=1),
    # never quietly run without it.
    local_broker_ctl(rabbitmq_url, "the soak's broker restart")
    faults = "all"
    env = {**os.environ, "ELASTICSEARCH_URL": elasticsearch_url, "RABBITMQ_URL": rabbitmq_url}
    env.pop("MAILACTORS_PROFILE", None)
    argv = [
        sys.executable, str(ROOT / "supervisor.py"), "soak",
        "--emails", "300", "--workers", "2", "--faults", faults,
        "--fault-spacing", "10", "--deadline", "90", "--no-progress",
        "--work-dir", str(tmp_path / "soak"),
    ]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=420, check=False)
    lines = done.stdout.strip().splitlines()
    assert lines, f"no output; stderr:\n{done.stderr[-3000:]}"
    figures = json.loads(lines[-1])
    log = (tmp_path / "soak" / "cluster.log")
    context = f"{lines[-1]}\nstderr:\n{done.stderr[-2000:]}\n" + (
        "cluster log tail:\n" + "\n".join(log.read_text().splitlines()[-30:])
        if log.exists()
        else ""
    )
    assert figures["submitted"] == 300, context
    assert figures["lost"] == 0, context
    assert figures["duplicates_beyond_window"] == 0, context
    assert figures["failed_without_reason"] == 0, context
    assert figures["sent_not_received"] == 0, context
    assert figures["webhooks"]["missing"] == 0, context  # a receiver failing 10% still has all
    assert figures["sent"] + figures["failed"] + figures["suppressed"] == 300, context
    assert figures["sent"] >= 250, context  # 2% permanent refusals, a few suppressed after
    assert figures["domain_max_per_s"]["slow.example"] <= 10, context
    assert figures["faults"]["sigkill_email_server"] == 2, context
    assert figures["faults"]["auth_crash_after_save"] == 2, context
    assert figures["faults"]["broker_restarts"] == 1, context
    assert not figures["aborted"], context
    assert done.returncode == 0, context

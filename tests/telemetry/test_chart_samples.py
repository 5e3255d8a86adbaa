"""The control command ``metrics``: a process's emails counter and, from an email server only,
the request-to-sent histogram, as JSON-ready samples (what the web view's charts sum)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import msgspec

from actors.telemetry.metrics import EmailMetrics
from actors.telemetry.operations import open_operations
from runtime import ActorSystem, ControlClient
from tests.support.embedded import embedded_config


def _names(samples: list[list[Any]]) -> set[str]:
    return {name for name, _labels, _value in samples}


async def test_each_series_comes_from_its_owner_only() -> None:
    integration = EmailMetrics(components=("integration",))
    integration.latency.observe(0.02)  # counted all the same; exported by an email server only
    assert _names(await integration.chart_samples()) == {"mailactors_emails_total"}
    server = EmailMetrics(components=("email-server",))
    server.latency.observe(0.02)
    samples = await server.chart_samples()
    buckets = {s[1]["le"]: s[2] for s in samples
               if s[0] == "mailactors_request_to_sent_seconds_bucket"}  # fmt: skip
    assert buckets["0.01"] == 0 and buckets["0.025"] == 1 and buckets["+Inf"] == 1


async def test_the_operations_endpoint_answers_metrics_on_its_socket(
    actor_system: ActorSystem, tmp_path: Path
) -> None:
    run_dir = Path(tempfile.mkdtemp(prefix="ma-"))  # a Unix socket path under 108 bytes
    try:
        config = embedded_config(tmp_path, service={"run_dir": str(run_dir)})
        metrics = EmailMetrics(components=("email-server",))
        metrics.emails.labels("email-server", "SENT").inc(3)
        metrics.latency.observe(0.3)
        async with open_operations(actor_system, config, "email-server", metrics=metrics) as ops:
            assert ops.socket_path is not None
            async with await ControlClient.connect_unix(ops.socket_path) as client:
                answer = await client.call("metrics")
    finally:
        shutil.rmtree(run_dir)
    samples = msgspec.json.decode(msgspec.json.encode(answer))
    sent = [v for name, labels, v in samples
            if name == "mailactors_emails_total" and labels["status"] == "SENT"]  # fmt: skip
    assert sent == [3.0]
    assert ["mailactors_request_to_sent_seconds_count", {}, 1.0] in samples

"""Status events for emails nobody has, in a flood: each counted and kept for the console,
one WARNING line per 10 s in the log (the rest at DEBUG), not one line each."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

import pytest

from actors.domain.schema import EmailStatusEvent, Status
from actors.profiles.embedded import open_embedded
from actors.telemetry.metrics import EmailMetrics
from tests.support.embedded import embedded_config
from tests.support.waiting import poll_until


async def test_a_flood_of_unknown_emails_is_one_warning_and_every_one_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    metrics = EmailMetrics()
    caplog.set_level(logging.DEBUG, logger="mailactors.integration")
    async with open_embedded(embedded_config(tmp_path), grpc=False, shutdown=10,
                             metrics=metrics) as app:  # fmt: skip
        for i in range(25):
            await app.bus.publish_status(
                EmailStatusEvent(
                    event_id=f"nobody-{i}", status=Status.SENT, attempt=1,
                    requested_at=datetime.now(UTC), provider="smtp",
                )  # fmt: skip
            )

        def counted() -> float:
            return float(metrics.not_applied.labels("unknown_email")._value.get())  # noqa: SLF001

        await poll_until(lambda: counted() == 25.0, timeout=30, what="25 counted")
    lines = [r for r in caplog.records if "no email with this eventId" in r.getMessage()]
    assert len(lines) == 25  # every one said, with its eventId, ...
    warnings = [r for r in lines if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and getattr(warnings[0], "event_id", None) == "nobody-0"
    assert all(r.levelno == logging.DEBUG for r in lines if r is not warnings[0])  # ... at DEBUG

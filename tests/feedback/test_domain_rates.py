"""Bounce and complaint rates per recipient domain: sends counted as integration records
SENT (the metered store), reports as the sink applies them, in one process; the gauges pass
promtool, a rate over its threshold warns, the window forgets old counts."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from prometheus_client import CollectorRegistry, generate_latest

from actors.bus.memory import MemoryBus
from actors.domain.schema import EmailDocument, EmailStatusEvent, Status
from actors.email_server.suppression import SuppressionList
from actors.feedback import BounceType, Feedback, FeedbackActions, FeedbackKind
from actors.feedback.ledger import SqliteLedger
from actors.stores.sqlite import SqliteStore
from actors.telemetry.metrics import DomainWindow, EmailMetrics, FeedbackMetrics, instrument
from config import FeedbackConfig
from tests.support.promtool import check_metrics


def _report(kind: FeedbackKind, event_id: str, to: str, **kw: Any) -> Feedback:
    return Feedback(
        event_id=event_id, kind=kind, recipient=to, occurred_at=datetime.now(UTC),
        source="dsn", source_id=f"r-{event_id}-{kind}", **kw,
    )  # fmt: skip


async def test_domain_rates_are_counted_exported_and_warn(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    metrics = EmailMetrics(components=("integration",))
    store = instrument(metrics, SqliteStore(tmp_path / "emails.sqlite3"))
    bus = MemoryBus(100)
    await store.open()
    await bus.open()
    settings = FeedbackConfig(rate_min_emails=5, bounce_rate_threshold=0.05, rate_check_s=0)
    async with (
        SuppressionList(tmp_path / "sent.sqlite3") as suppression,
        SqliteLedger(tmp_path / "feedback.sqlite3") as ledger,
    ):
        actions = FeedbackActions(settings, store, bus, suppression, ledger, metrics.feedback)
        # 10 emails to example.org (8 SENT, 2 FAILED: not sends), 20 to Other.NET, all SENT
        docs = [EmailDocument(event_id=f"a{i}", recipient=f"u{i}@example.org",
                              template="welcome") for i in range(10)]  # fmt: skip
        docs += [EmailDocument(event_id=f"b{i}", recipient=f"v{i}@Other.NET",
                               template="welcome") for i in range(20)]  # fmt: skip
        await store.save_many(docs)
        await store.apply_status_many(
            [EmailStatusEvent(event_id=d.event_id,
                              status=Status.FAILED if d.event_id in ("a8", "a9") else Status.SENT)
             for d in docs]
        )  # fmt: skip
        with caplog.at_level(logging.WARNING, "mailactors.feedback"):
            await actions.apply(_report(FeedbackKind.BOUNCE, "a0", "u0@example.org",
                                        bounce_type=BounceType.HARD))  # fmt: skip
            await actions.apply(_report(FeedbackKind.COMPLAINT, "b0", "v0@other.net"))
        await bus.close()
        await store.close()
    page = generate_latest(metrics.registry).decode()
    assert 'mailactors_feedback_domain_rate{domain="example.org",kind="bounce"} 0.125' in page
    assert 'mailactors_feedback_domain_rate{domain="other.net",kind="complaint"} 0.05' in page
    assert 'mailactors_feedback_domain_rate{domain="other.net",kind="bounce"} 0.0' in page
    # 1 of 8 sends bounced: over 5%; 1 of 20 complained: over 0.3%
    assert "recipient domain 'example.org': bounce rate 12.50% over 24 h (8 emails sent)" in (
        caplog.text
    )
    assert "recipient domain 'other.net': complaint rate 5.00% over 24 h (20 emails sent)" in (
        caplog.text
    )
    assert "recipient domain 'other.net': bounce" not in caplog.text
    await trio.to_thread.run_sync(check_metrics, page)


async def test_the_window_forgets_counts_older_than_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    window = DomainWindow(window_s=3600, buckets=12)
    window.add("example.org", "sent", 10)
    await trio.sleep(1800)
    window.add("example.org", "sent", 5)
    window.add("example.org", "bounce")
    assert window.totals("example.org") == {"sent": 15, "bounce": 1}
    await trio.sleep(1900)  # the first 10 are now over an hour old
    assert window.totals("example.org") == {"sent": 5, "bounce": 1}
    await trio.sleep(3600)
    assert window.totals("example.org") == {}
    assert window.totals("never.example") == {}


async def test_emails_in_flight_are_bounded_and_only_a_sent_one_counts() -> None:
    metrics = FeedbackMetrics(CollectorRegistry())
    metrics.MAX_PENDING = 3
    for i in range(5):  # e0 and e1 are forgotten past the bound
        metrics.stored(f"e{i}", f"u{i}@Example.ORG")
    for i in range(5):
        metrics.outcome(f"e{i}", Status.SENT)
    metrics.outcome("e2", Status.SENT)  # a repeat counts once
    metrics.stored("f", "x@example.org")
    metrics.outcome("f", Status.RETRYING)  # still in flight
    metrics.outcome("f", Status.SUPPRESSED)  # never sent
    metrics.outcome("f", Status.SENT)
    assert metrics.by_domain.totals("example.org") == {"sent": 3}

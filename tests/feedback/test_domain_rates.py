"""Bounce and complaint rates per recipient domain: sends counted as integration records
SENT (the metered store), reports as the sink applies them, in one process; the gauges pass
promtool, a rate over its threshold warns, the window forgets old counts."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
import trio
import trio.testing
from prometheus_client import CollectorRegistry, generate_latest

from actors.bus.memory import MemoryBus
from actors.domain.schema import EmailDocument, EmailStatusEvent, Status
from actors.email_server.suppression import SuppressionList
from actors.feedback import BounceType, Feedback, FeedbackActions, FeedbackKind
from actors.feedback.ledger import SqliteLedger
from actors.profiles.embedded import Embedded, open_embedded
from actors.stores.sqlite import SqliteStore
from actors.telemetry.metrics import DomainWindow, EmailMetrics, FeedbackMetrics, instrument
from actors.testing.sns import SnsSigner, fresh, open_sns_host, ses_event, sns_notification
from config import FeedbackConfig
from tests.support.embedded import embedded_config, request
from tests.support.feedback import sns_settings
from tests.support.http import http_config, http_url
from tests.support.promtool import check_metrics
from tests.support.stores import AnyStore, opened, settle, store_maker
from tests.support.waiting import poll_until


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


async def test_a_restarted_process_fills_the_domain_window_from_the_store(
    tmp_path: Path,
) -> None:
    """Sends and bounces counted before a restart are counted after it (from the store,
    once), so the first bounce after a restart is not a bounce with no send."""
    signer = SnsSigner()
    async with open_sns_host(tmp_path / "sns", signer) as sns:
        config = embedded_config(tmp_path, http=http_config(), feedback={
            "ses": sns_settings(sns), "ledger_path": str(tmp_path / "feedback.sqlite3"),
            "rate_check_s": 0.0,
        })  # fmt: skip

        async def bounce(app: Embedded, client: httpx.AsyncClient, event_id: str, to: str) -> None:
            event = ses_event("Bounce", event_id, to)
            fields = sns_notification(event, sns.cert_url, signer, message_id=fresh())
            reply = await client.post(http_url(app) + "/feedback/ses",
                                      content=json.dumps(fields).encode())  # fmt: skip
            assert reply.json()["records"] == ["applied"], reply.text
            await poll_until(lambda: _status_is(app, event_id, Status.BOUNCED), timeout=10,
                             what=f"{event_id} BOUNCED")  # fmt: skip

        before = EmailMetrics()
        async with (
            open_embedded(config, grpc=False, shutdown=10.0, metrics=before) as app,
            httpx.AsyncClient(timeout=30) as client,
        ):
            ids = []
            for to in ("u0@example.org", "u1@example.org", "u2@example.org", "u3@example.org",
                       "w@other.net"):  # fmt: skip
                ids.append((await app.request(request(to=to))).event_id)
                assert (await app.wait_terminal(ids[-1])).status is Status.SENT
            await bounce(app, client, ids[0], "u0@example.org")
            counted = before.feedback.by_domain.totals("example.org")
            assert counted == {"sent": 4, "bounce": 1}

        after = EmailMetrics()  # a new process: nothing counted yet
        async with (
            open_embedded(config, grpc=False, shutdown=10.0, metrics=after) as app,
            httpx.AsyncClient(timeout=30) as client,
        ):

            def filled() -> bool:
                extra = app.system.snapshot().by_path()["feedback/sink"].extra or {}
                return extra.get("domain_rates_from") is not None

            await poll_until(filled, timeout=10, what="the domain window filled")
            assert after.feedback.by_domain.totals("example.org") == counted
            assert after.feedback.by_domain.totals("other.net") == {"sent": 1}
            # One more bounce: 2 of the 4 sends, not 1 of none.
            await bounce(app, client, ids[1], "u1@example.org")
            assert after.feedback.by_domain.totals("example.org") == {"sent": 4, "bounce": 2}
            page = generate_latest(after.registry).decode()
            assert 'mailactors_feedback_domain_rate{domain="example.org",kind="bounce"} 0.5' in page


async def _status_is(app: Embedded, event_id: str, status: Status) -> bool:
    doc = await app.store.get(event_id)
    return doc is not None and doc.status is status


@pytest.fixture(params=["sqlite", pytest.param("elasticsearch", marks=pytest.mark.services)])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AnyStore]:
    async with opened(store_maker(request, tmp_path / "emails.sqlite3")()) as s:
        yield s


async def test_the_window_is_filled_once_and_a_report_applied_meanwhile_counts_once(
    tmp_path: Path, store: AnyStore
) -> None:
    bus = MemoryBus(100)
    await bus.open()
    docs = [EmailDocument(event_id=f"a{i}", recipient=f"u{i}@example.org", template="welcome")
            for i in range(4)]  # fmt: skip
    await store.save_many(docs)
    await store.apply_status_many([EmailStatusEvent(event_id=d.event_id, status=Status.SENT)
                                   for d in docs])  # fmt: skip
    await settle(store)
    metrics = FeedbackMetrics(CollectorRegistry())  # this process starts counting now
    settings = FeedbackConfig(rate_check_s=0)
    async with (
        SuppressionList(tmp_path / "sent.sqlite3") as suppression,
        SqliteLedger(tmp_path / "feedback.sqlite3") as ledger,
    ):
        actions = FeedbackActions(settings, store, bus, suppression, ledger, metrics)
        assert actions.begin_domain_rebuild()
        # A report applied (counted live) before the store is read, and stored by then.
        await actions.apply(_report(FeedbackKind.BOUNCE, "a0", "u0@example.org",
                                    bounce_type=BounceType.HARD))  # fmt: skip
        published = msgspec.json.decode((await bus.next_status()).body, type=EmailStatusEvent)
        await store.apply_status_many([published])
        await settle(store)
        bounced = await store.get("a0")
        assert bounced is not None and bounced.status is Status.BOUNCED  # the store shows it
        assert await actions.rebuild_domain_rates() == 4
        assert metrics.by_domain.totals("example.org") == {"sent": 4, "bounce": 1}
        # The sink restarted in the same process: its window is not filled again.
        again = FeedbackActions(settings, store, bus, suppression, ledger, metrics)
        assert not again.begin_domain_rebuild()
        assert await again.rebuild_domain_rates() == 0
        assert metrics.by_domain.totals("example.org") == {"sent": 4, "bounce": 1}
    await bus.close()


async def test_counts_placed_in_the_past_leave_the_window_on_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    window = DomainWindow(window_s=3600, buckets=12)
    window.add("example.org", "sent", 3, age_s=3000)
    window.add("example.org", "sent", 1, age_s=4000)  # older than the window: not counted
    assert window.totals("example.org") == {"sent": 3}
    await trio.sleep(900)  # 3000 + 900 s: out of the hour
    assert window.totals("example.org") == {}

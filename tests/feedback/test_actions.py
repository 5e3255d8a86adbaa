"""The sink's decisions on their own: real SQLite store, suppression list and ledger, the
in-process bus; what it publishes, suppresses, counts, warns about, and does when the store
is down."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import trio
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from actors.bus.memory import MemoryBus
from actors.domain.edges import StoreUnavailable
from actors.domain.schema import Status
from actors.email_server.suppression import SuppressionList
from actors.feedback import BounceType, FeedbackKind, SinkRef
from actors.feedback.ledger import SqliteLedger
from actors.feedback.service import FeedbackActor, FeedbackResources
from actors.telemetry.metrics import FeedbackMetrics
from config import load_config
from runtime import ChildSpec, open_actor_system
from tests.support.feedback_actions import kit, report


async def test_a_complaint_with_scope_all_suppresses_every_category(tmp_path: Path) -> None:
    async with kit(tmp_path, complaint_scope="all") as k:
        await k.email("e1", "Ana@Example.org", category="newsletter")
        outcome = await k.actions.apply(
            report(FeedbackKind.COMPLAINT, "e1", "ana@example.org", "r1", feedback_type="fraud")
        )
        assert outcome.applied and outcome.suppressed == "complaint, every category"
        entry = k.suppression.lookup("ana@example.org", "transactional")
        assert entry is not None and entry.source == "complaint" and "fraud" in entry.reason
        event = await k.published()
        assert event.status is Status.COMPLAINED and event.schema_version == 2
        assert event.feedback is not None and event.feedback.recipient == "ana@example.org"


async def test_a_delivery_or_a_delay_suppresses_nothing_and_is_counted(tmp_path: Path) -> None:
    async with kit(tmp_path) as k:
        await k.email("e1", "bo@gmail.com")
        for i, kind in enumerate((FeedbackKind.DELAY, FeedbackKind.DELIVERY)):
            outcome = await k.actions.apply(report(kind, "e1", "bo@gmail.com", f"r{i}"))
            assert outcome.applied and outcome.suppressed is None
            assert (await k.published()).status is (Status.DELAYED, Status.DELIVERED)[i]
        assert k.suppression.lookup("bo@gmail.com") is None
        families = {f.name: f for f in text_string_to_metric_families(k.metrics_text())}
        samples = {
            (s.labels["kind"], s.labels["domain"]): s.value
            for s in families["mailactors_feedback"].samples
            if s.name == "mailactors_feedback_total"
        }
        assert samples == {("delay", "gmail.com"): 1.0, ("delivery", "gmail.com"): 1.0}
        # The page is well-formed for Prometheus (promtool: Debian package prometheus).
        checked = await trio.run_process(
            ["promtool", "check", "metrics"], stdin=k.metrics_text().encode(), check=False,
            capture_stdout=True, capture_stderr=True,
        )  # fmt: skip
        assert checked.returncode == 0, checked.stdout + checked.stderr


async def test_rates_over_the_threshold_warn_and_only_pause_when_configured(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with kit(tmp_path, rate_min_emails=2, bounce_rate_threshold=0.2, rate_check_s=0) as k:
        for i in range(4):
            await k.email(f"e{i}", f"u{i}@example.org", category="promo")
        with caplog.at_level(logging.WARNING, "mailactors.feedback"):
            await k.actions.apply(
                report(FeedbackKind.BOUNCE, "e0", "u0@example.org", "r0",
                       bounce_type=BounceType.HARD, status_code="5.1.1")
            )  # fmt: skip
        assert "bounce rate 25.00% over 24 h (4 emails) is over 20.00%" in caplog.text
        assert "pause_on_threshold is off" in caplog.text
        assert k.suppression.lookup("*", "promo") is None  # warned, not paused
        assert "mailactors_feedback_rate{category=\"promo\",kind=\"bounce\"} 0.25" in (
            k.metrics_text()
        )


async def test_the_domain_label_is_bounded() -> None:
    metrics = FeedbackMetrics(CollectorRegistry())
    domains = {metrics.domain(f"a@d{i}.example") for i in range(FeedbackMetrics.MAX_DOMAINS + 50)}
    assert len(domains) == FeedbackMetrics.MAX_DOMAINS + 1 and "other" in domains
    assert metrics.domain("x@d0.example") == "d0.example"


class _DownStore:
    """A store whose reads fail as an unreachable Elasticsearch does."""

    async def get(self, event_id: str) -> None:
        raise StoreUnavailable("elasticsearch: connection refused")

    async def search(self, query: object) -> None:  # the sink's start fills its domain rates
        raise StoreUnavailable("elasticsearch: connection refused")


async def test_a_store_outage_is_answered_try_again_and_the_actor_lives_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = load_config("embedded", env={})
    async with (
        SuppressionList(tmp_path / "sent.sqlite3") as suppression,
        SqliteLedger(tmp_path / "feedback.sqlite3") as ledger,
        open_actor_system("t", shutdown=5.0) as system,
    ):
        resources = FeedbackResources(suppression, ledger, FeedbackMetrics(CollectorRegistry()))
        store: Any = _DownStore()
        await system.spawn(
            ChildSpec("sink", FeedbackActor, args=(config, store, MemoryBus(), resources))
        )
        sink = SinkRef(system.lookup("sink"))
        fb = report(FeedbackKind.BOUNCE, "e1", "a@example.org", "r1", bounce_type=BounceType.HARD)
        assert (await sink.apply(fb)).reason == "unavailable"
        with pytest.raises(StoreUnavailable):
            await sink.report(fb)
        assert system.snapshot().by_path()["sink"].restarts == 0
        assert suppression.lookup("a@example.org") is None
        assert "per-domain rates not filled from the store" in caplog.text

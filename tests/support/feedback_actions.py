"""The feedback sink's decisions on their own, for tests: a real SQLite store, suppression list
and ledger, and the in-process bus (``kit``), and a report to hand it (``report``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest

from actors.bus.memory import MemoryBus
from actors.domain.event_checks import decode_status_event
from actors.domain.schema import EmailDocument, EmailStatusEvent, Status
from actors.email_server.suppression import SuppressionList
from actors.feedback import Feedback, FeedbackActions, FeedbackKind
from actors.feedback.ledger import SqliteLedger
from actors.stores.sqlite import SqliteStore
from actors.telemetry.metrics import FeedbackMetrics
from config import FeedbackConfig

__all__ = ["Kit", "kit", "report"]


class Kit:
    def __init__(
        self,
        store: SqliteStore,
        bus: MemoryBus,
        actions: FeedbackActions,
        registry: CollectorRegistry,
    ) -> None:
        self.registry = registry
        self.store = store
        self.bus = bus
        self.actions = actions
        self.suppression: SuppressionList = actions.suppression  # type: ignore[assignment]

    async def email(self, event_id: str, to: str, category: str = "transactional") -> None:
        doc = EmailDocument(event_id=event_id, recipient=to, template="welcome", category=category)
        await self.store.save_many([doc])
        sent = EmailStatusEvent(event_id=event_id, status=Status.SENT)
        await self.store.apply_status_many([sent])

    async def published(self) -> EmailStatusEvent:
        delivery = await self.bus.next_status()
        await delivery.ack()
        return decode_status_event(delivery.body)

    def metrics_text(self) -> str:
        return generate_latest(self.registry).decode()


@asynccontextmanager
async def kit(tmp_path: Path, **settings: Any) -> AsyncIterator[Kit]:
    store, bus = SqliteStore(tmp_path / "emails.sqlite3"), MemoryBus(100)
    async with (
        SuppressionList(tmp_path / "sent.sqlite3") as suppression,
        SqliteLedger(tmp_path / "feedback.sqlite3") as ledger,
    ):
        await store.open()
        await bus.open()
        try:
            registry = CollectorRegistry()
            actions = FeedbackActions(
                FeedbackConfig(**settings), store, bus, suppression, ledger,
                FeedbackMetrics(registry),
            )  # fmt: skip
            yield Kit(store, bus, actions, registry)
        finally:
            await bus.close()
            await store.close()


def report(kind: FeedbackKind, event_id: str, to: str, source_id: str, **kw: Any) -> Feedback:
    return Feedback(
        event_id=event_id, kind=kind, recipient=to, occurred_at=datetime.now(UTC),
        source="dsn", source_id=source_id, **kw,
    )  # fmt: skip

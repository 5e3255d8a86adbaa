"""Documents for the Store tests, and waiting for a store to settle."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from actors.domain.schema import EmailDocument
from actors.stores.elasticsearch import ElasticsearchStore
from actors.stores.sqlite import SqliteStore

AnyStore = SqliteStore | ElasticsearchStore


T0 = datetime(2024, 1, 1, 12, 0, tzinfo=UTC)


def make_doc(i: int, **changes: Any) -> EmailDocument:
    created = T0 + timedelta(minutes=i, microseconds=i)
    fields: dict[str, Any] = {
        "event_id": f"evt-{i:05d}",
        "recipient": "a@example.com" if i % 2 == 0 else "b@example.com",
        "template": "welcome",
        "variables": {"name": f"User {i}", "items": [1, {"nested": True}]},
        "category": "marketing" if i % 3 == 0 else "transactional",
        "subject": f"Hello {i}",
        "idempotency_key": f"idem-{i}",
        "created_at": created,
        "updated_at": created,
    }
    fields.update(changes)
    return EmailDocument(**fields)


async def settle(store: AnyStore) -> None:
    """Make writes visible to search (Elasticsearch is near-real-time)."""
    if isinstance(store, ElasticsearchStore):
        await store.refresh()

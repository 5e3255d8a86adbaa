"""Documents for the Store tests, and waiting for a store to settle."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from actors.domain.schema import EmailDocument
from actors.stores.elasticsearch import ElasticsearchStore
from actors.stores.sqlite import SqliteStore

AnyStore = SqliteStore | ElasticsearchStore


T0 = datetime(2024, 1, 1, 12, 0, tzinfo=UTC)


def store_maker(request: pytest.FixtureRequest, path: Path) -> Callable[[], AnyStore]:
    """For a fixture parametrised "sqlite" / "elasticsearch": a SqliteStore on *path*, or
    an ElasticsearchStore on the test's own index."""
    if request.param == "sqlite":
        return lambda: SqliteStore(path)
    url: str = request.getfixturevalue("elasticsearch_url")
    index: str = request.getfixturevalue("elasticsearch_index")
    return lambda: ElasticsearchStore(url, index)


@asynccontextmanager
async def opened(store: AnyStore) -> AsyncIterator[AnyStore]:
    """*store* open for the block; an Elasticsearch index is deleted again after it."""
    await store.open()
    try:
        yield store
    finally:
        if isinstance(store, ElasticsearchStore):
            await store.delete_index()
        await store.close()


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

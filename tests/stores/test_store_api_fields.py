"""Issue 17 in both stores: search by tags and metadata, the SCHEDULED scan, the
SCHEDULED -> PENDING / CANCELLED race, and a SQLite file from before the send_at column."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path

import pytest

from actors.domain.edges import ApplyOutcome, SearchQuery
from actors.domain.schema import EmailStatusEvent, Status
from actors.stores.sqlite import SqliteStore
from tests.support.stores import T0, AnyStore, make_doc, opened, settle, store_maker

pytestmark = pytest.mark.trio


@pytest.fixture(params=["sqlite", pytest.param("elasticsearch", marks=pytest.mark.services)])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], AnyStore]:
    return store_maker(request, tmp_path / "emails.sqlite3")


@pytest.fixture
async def store(make_store: Callable[[], AnyStore]) -> AsyncIterator[AnyStore]:
    async with opened(make_store()) as s:
        yield s


async def test_search_by_tags_and_metadata(store: AnyStore) -> None:
    docs = [
        make_doc(0, tags=["receipt", "dec"], metadata={"order": "1", "shop": "a"}),
        make_doc(1, tags=["receipt"], metadata={"order": "2", "shop": "a"}),
        make_doc(2, tags=["news"], metadata={"order": "1"}),
        make_doc(3),
    ]
    await store.save_many(docs)
    await settle(store)

    async def ids(**filters: object) -> list[str]:
        page = await store.search(SearchQuery(**filters))  # type: ignore[arg-type]
        assert page.total == len(page.documents)
        return sorted(d.event_id for d in page.documents)

    e = [d.event_id for d in docs]
    assert await ids(tags=("receipt",)) == sorted([e[0], e[1]])
    assert await ids(tags=("receipt", "dec")) == [e[0]]
    assert await ids(tags=("nope",)) == []
    assert await ids(metadata={"order": "1"}) == sorted([e[0], e[2]])
    assert await ids(metadata={"order": "1", "shop": "a"}) == [e[0]]
    assert await ids(tags=("news",), metadata={"order": "2"}) == []
    with pytest.raises(ValueError, match="metadata: key"):
        await ids(metadata={"a.b": "x"})


async def test_scheduled_before_finds_the_due_ones_soonest_first(store: AnyStore) -> None:
    docs = [
        make_doc(i, status=Status.SCHEDULED, send_at=T0 + timedelta(minutes=m))
        for i, m in enumerate([30, 10, 20, 40])
    ]
    await store.save_many([*docs, make_doc(9)])  # and one PENDING: never in the scan
    await settle(store)
    due = await store.scheduled_before(T0 + timedelta(minutes=35), 10)
    assert [d.event_id for d in due] == [docs[i].event_id for i in (1, 2, 0)]
    assert len(await store.scheduled_before(T0 + timedelta(minutes=35), 2)) == 2
    assert await store.scheduled_before(T0, 10) == []
    # Moved on: no longer scanned.
    await store.apply_status_many(
        [EmailStatusEvent(event_id=docs[1].event_id, status=Status.PENDING, attempt=0)]
    )
    await settle(store)
    due = await store.scheduled_before(T0 + timedelta(minutes=35), 10)
    assert [d.event_id for d in due] == [docs[i].event_id for i in (2, 0)]


async def test_a_cancel_and_the_move_to_pending_cannot_both_win(store: AnyStore) -> None:
    doc = make_doc(0, status=Status.SCHEDULED, send_at=T0)
    await store.save_many([doc])
    cancel = EmailStatusEvent(event_id=doc.event_id, status=Status.CANCELLED, attempt=0)
    due = EmailStatusEvent(event_id=doc.event_id, status=Status.PENDING, attempt=0)
    first, second = await store.apply_status_many([cancel, due])
    assert first.outcome is ApplyOutcome.APPLIED and second.outcome is ApplyOutcome.IGNORED
    stored = await store.get(doc.event_id)
    assert stored is not None and stored.status is Status.CANCELLED
    # And a SENT email cannot be cancelled.
    sent = make_doc(1)
    await store.save_many([sent])
    await store.apply_status_many([EmailStatusEvent(event_id=sent.event_id, status=Status.SENT)])
    (late,) = await store.apply_status_many(
        [EmailStatusEvent(event_id=sent.event_id, status=Status.CANCELLED, attempt=0)]
    )
    assert late.outcome is ApplyOutcome.IGNORED and late.status is Status.SENT


async def test_a_sqlite_file_from_before_send_at_gets_the_column(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as conn:  # the schema as first released
        conn.executescript(
            "CREATE TABLE emails (event_id TEXT PRIMARY KEY, status TEXT NOT NULL,"
            " recipient TEXT NOT NULL, category TEXT NOT NULL, created_at INTEGER NOT NULL,"
            " idempotency_key TEXT, doc TEXT NOT NULL);"
        )
    async with SqliteStore(path) as store:
        doc = make_doc(0, status=Status.SCHEDULED, send_at=T0)
        await store.save_many([doc])
        due = await store.scheduled_before(T0 + timedelta(seconds=1), 10)
    assert [d.event_id for d in due] == [doc.event_id]

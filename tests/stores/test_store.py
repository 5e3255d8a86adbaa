"""The Store contract, run unchanged against every implementation.

SQLite runs in tmp_path; Elasticsearch runs against the ``elasticsearch_url``
fixture (env, Docker or noida-db) with a fresh index per test. Elasticsearch
search is near-real-time, so tests call :func:`settle` before searching.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio

from actors.domain.edges import (
    ApplyOutcome,
    ApplyResult,
    SearchQuery,
    Store,
    StoreUnavailable,
)
from actors.domain.schema import Attachment, EmailDocument, EmailStatusEvent, Status
from actors.stores.elasticsearch import MAPPING, ElasticsearchStore
from actors.stores.sqlite import SqliteStore
from tests.support.protocols import assert_implements
from tests.support.services import free_port
from tests.support.stores import T0, AnyStore, make_doc, opened, settle, store_maker

APPLIED, IGNORED, NOT_FOUND = ApplyOutcome.APPLIED, ApplyOutcome.IGNORED, ApplyOutcome.NOT_FOUND


_clock = [T0 + timedelta(days=1)]


def event(event_id: str, status: Status, attempt: int = 1, **changes: Any) -> EmailStatusEvent:
    _clock[0] += timedelta(milliseconds=1)
    return EmailStatusEvent(
        event_id=event_id, status=status, attempt=attempt, occurred_at=_clock[0], **changes
    )


@pytest.fixture(params=["sqlite", pytest.param("elasticsearch", marks=pytest.mark.services)])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], AnyStore]:
    return store_maker(request, tmp_path / "nested" / "dir" / "emails.sqlite3")


@pytest.fixture
async def store(make_store: Callable[[], AnyStore]) -> AsyncIterator[AnyStore]:
    async with opened(make_store()) as s:
        yield s


def test_both_stores_satisfy_the_protocol(tmp_path: Path) -> None:
    for store in (SqliteStore(tmp_path / "x.db"), ElasticsearchStore("http://x", "i")):
        assert_implements(store, Store)


def test_the_protocol_check_can_fail(tmp_path: Path) -> None:
    class Partial:
        async def open(self) -> None: ...

    with pytest.raises(AssertionError, match="lacks a member"):
        assert_implements(Partial(), Store)

    class WrongSignature(SqliteStore):
        async def get(self, event_id: str, extra: int = 0) -> EmailDocument | None:  # type: ignore[override]
            return None

    with pytest.raises(AssertionError, match="get"):
        assert_implements(WrongSignature(tmp_path / "y.db"), Store)


# -- saving ----------------------------------------------------------------------


async def test_save_then_get(store: AnyStore) -> None:
    doc = make_doc(1, attachments=[Attachment(filename="a.pdf", content_type="x/y", content=b"\0")])
    [result] = await store.save_many([doc])
    assert result.created
    assert result.document == doc
    assert await store.get(doc.event_id) == doc
    assert await store.get("no-such-event") is None


async def test_repeat_event_id_keeps_the_first_document(store: AnyStore) -> None:
    first = make_doc(1)
    again = make_doc(1, recipient="other@example.com", template="changed")
    results = await store.save_many([first, make_doc(2), again])
    assert [r.created for r in results] == [True, True, False]
    assert results[2].document == first
    # ...and in a later batch too.
    [later] = await store.save_many([again])
    assert not later.created
    assert later.document == first
    assert await store.get(first.event_id) == first


async def test_save_many_empty(store: AnyStore) -> None:
    assert await store.save_many([]) == []
    assert await store.apply_status_many([]) == []


# -- lifecycle -------------------------------------------------------------------


async def test_pending_sending_sent(store: AnyStore) -> None:
    doc = make_doc(1)
    await store.save_many([doc])
    eid = doc.event_id
    assert await store.apply_status_many([event(eid, Status.SENDING)]) == [
        ApplyResult(eid, APPLIED, Status.SENDING)
    ]
    sent = event(eid, Status.SENT, provider="smtp", provider_message_id="<m1>", latency_ms=12.5)
    assert await store.apply_status_many([sent]) == [ApplyResult(eid, APPLIED, Status.SENT)]
    got = await store.get(eid)
    assert got is not None
    assert got.status is Status.SENT
    assert got.sent_at == sent.occurred_at
    assert got.provider == "smtp"
    assert got.provider_message_id == "<m1>"
    assert got.latency_ms == 12.5
    assert got.attempts == 1
    assert [h.status for h in got.history] == [Status.SENT]


async def test_retrying_until_failed(store: AnyStore) -> None:
    doc = make_doc(1)
    await store.save_many([doc])
    eid = doc.event_id
    steps = [
        event(eid, Status.SENDING, 1),
        event(eid, Status.RETRYING, 1, error="421 try later", smtp_code=421),
        event(eid, Status.SENDING, 2),
        event(eid, Status.RETRYING, 2, error="421 again", smtp_code=421),
        event(eid, Status.SENDING, 3),
        event(eid, Status.FAILED, 3, error="550 no such user", smtp_code=550),
    ]
    for step in steps:  # one batch each, as they would arrive
        [result] = await store.apply_status_many([step])
        assert result == ApplyResult(eid, APPLIED, step.status)
    got = await store.get(eid)
    assert got is not None
    assert got.status is Status.FAILED
    assert got.error == "550 no such user"
    assert got.attempts == 3
    assert [(h.attempt, h.status) for h in got.history] == [
        (1, Status.RETRYING),
        (2, Status.RETRYING),
        (3, Status.FAILED),
    ]


async def test_suppressed(store: AnyStore) -> None:
    doc = make_doc(1)
    await store.save_many([doc])
    [result] = await store.apply_status_many([event(doc.event_id, Status.SUPPRESSED)])
    assert result == ApplyResult(doc.event_id, APPLIED, Status.SUPPRESSED)
    [again] = await store.apply_status_many([event(doc.event_id, Status.SENDING, 2)])
    assert again == ApplyResult(doc.event_id, IGNORED, Status.SUPPRESSED)


async def test_terminal_never_regresses(store: AnyStore) -> None:
    doc = make_doc(1)
    await store.save_many([doc])
    eid = doc.event_id
    await store.apply_status_many([event(eid, Status.SENDING), event(eid, Status.SENT)])
    before = await store.get(eid)
    late = [
        event(eid, Status.RETRYING, 2, error="late"),
        event(eid, Status.FAILED, 2, error="late"),
        event(eid, Status.SENDING, 3),
        event(eid, Status.SENT, 1),  # a duplicate of the terminal event
        event(eid, Status.SUPPRESSED),
    ]
    results = await store.apply_status_many(late)
    assert results == [ApplyResult(eid, IGNORED, Status.SENT)] * len(late)
    assert await store.get(eid) == before


async def test_duplicates_and_out_of_order_are_harmless(store: AnyStore) -> None:
    a, b = make_doc(1), make_doc(2)
    await store.save_many([a, b])
    # Duplicates: the second copy changes nothing.
    sending = event(a.event_id, Status.SENDING, 1)
    assert [r.outcome for r in await store.apply_status_many([sending])] == [APPLIED]
    assert [r.outcome for r in await store.apply_status_many([sending])] == [IGNORED]
    # Late events from an earlier attempt.
    await store.apply_status_many(
        [event(a.event_id, Status.RETRYING, 1), event(a.event_id, Status.SENDING, 2)]
    )
    late = await store.apply_status_many(
        [event(a.event_id, Status.RETRYING, 1), event(a.event_id, Status.SENDING, 1)]
    )
    assert late == [ApplyResult(a.event_id, IGNORED, Status.SENDING)] * 2
    got = await store.get(a.event_id)
    assert got is not None and got.attempts == 2
    # Out of order: SENT overtakes SENDING.
    assert (await store.apply_status_many([event(b.event_id, Status.SENT)]))[0].outcome is APPLIED
    assert await store.apply_status_many([event(b.event_id, Status.SENDING)]) == [
        ApplyResult(b.event_id, IGNORED, Status.SENT)
    ]


async def test_several_events_for_one_id_in_one_batch(store: AnyStore) -> None:
    a, b = make_doc(1), make_doc(2)
    await store.save_many([a, b])
    batch = [
        event(a.event_id, Status.SENDING, 1),
        event(b.event_id, Status.SENT, 1),  # b: terminal first...
        event(a.event_id, Status.RETRYING, 1),
        event(b.event_id, Status.SENDING, 1),  # ...so this one is late
        event(a.event_id, Status.SENDING, 2),
        event(a.event_id, Status.SENT, 2),
        event(a.event_id, Status.FAILED, 2),  # after SENT: ignored
    ]
    assert await store.apply_status_many(batch) == [
        ApplyResult(a.event_id, APPLIED, Status.SENDING),
        ApplyResult(b.event_id, APPLIED, Status.SENT),
        ApplyResult(a.event_id, APPLIED, Status.RETRYING),
        ApplyResult(b.event_id, IGNORED, Status.SENT),
        ApplyResult(a.event_id, APPLIED, Status.SENDING),
        ApplyResult(a.event_id, APPLIED, Status.SENT),
        ApplyResult(a.event_id, IGNORED, Status.SENT),
    ]
    got = await store.get(a.event_id)
    assert got is not None
    assert (got.status, got.attempts) == (Status.SENT, 2)
    assert [h.status for h in got.history] == [Status.RETRYING, Status.SENT]


async def test_unknown_event_id_is_not_found(store: AnyStore) -> None:
    doc = make_doc(1)
    await store.save_many([doc])
    results = await store.apply_status_many(
        [event("missing", Status.SENT), event(doc.event_id, Status.SENDING)]
    )
    assert results == [
        ApplyResult("missing", NOT_FOUND, None),
        ApplyResult(doc.event_id, APPLIED, Status.SENDING),
    ]
    assert await store.get("missing") is None


# -- search ----------------------------------------------------------------------


async def collect(store: AnyStore, query: SearchQuery) -> tuple[list[list[int]], set[int]]:
    """Every page of a search, as document numbers per page, and the totals seen."""
    pages: list[list[int]] = []
    totals: set[int] = set()
    token = ""
    while True:
        page = await store.search(msgspec.structs.replace(query, page_token=token))
        pages.append([int(d.event_id.removeprefix("evt-")) for d in page.documents])
        totals.add(page.total)
        token = page.next_page_token
        if not token:
            return pages, totals


async def test_search_filters_and_pagination(store: AnyStore) -> None:
    docs = [make_doc(i) for i in range(25)]
    await store.save_many(docs)
    await store.apply_status_many([event(d.event_id, Status.SENT) for d in docs[::5]])
    await settle(store)

    # recipient a: 0, 2, ..., 24 -> 13 documents, newest first, in 3 pages.
    pages, totals = await collect(store, SearchQuery(recipient="a@example.com", page_size=5))
    assert pages == [[24, 22, 20, 18, 16], [14, 12, 10, 8, 6], [4, 2, 0]]
    assert totals == {13}

    pages, totals = await collect(store, SearchQuery(status=Status.SENT, page_size=2))
    assert pages == [[20, 15], [10, 5], [0]]
    assert totals == {5}

    pages, totals = await collect(store, SearchQuery(category="marketing", page_size=3))
    assert pages == [[24, 21, 18], [15, 12, 9], [6, 3, 0]]
    assert totals == {9}

    # created_from inclusive, created_to exclusive: 10..19.
    window = SearchQuery(
        created_from=docs[10].created_at, created_to=docs[20].created_at, page_size=4
    )
    pages, totals = await collect(store, window)
    assert pages == [[19, 18, 17, 16], [15, 14, 13, 12], [11, 10]]
    assert totals == {10}

    combined = SearchQuery(
        recipient="a@example.com", status=Status.PENDING, created_from=docs[10].created_at
    )
    pages, totals = await collect(store, combined)
    assert pages == [[24, 22, 18, 16, 14, 12]]
    assert totals == {6}

    everything = await store.search(SearchQuery(page_size=100))
    assert [d.event_id for d in everything.documents] == [d.event_id for d in reversed(docs)]
    assert (everything.total, everything.next_page_token) == (25, "")

    nothing = await store.search(SearchQuery(recipient="nobody@example.com"))
    assert (nothing.documents, nothing.total, nothing.next_page_token) == ([], 0, "")


async def test_search_page_token_is_checked(store: AnyStore) -> None:
    with pytest.raises(ValueError, match="page_token"):
        await store.search(SearchQuery(page_token="not a token!"))
    with pytest.raises(ValueError, match="page_size"):
        await store.search(SearchQuery(page_size=0))


async def test_pending_older_than(store: AnyStore) -> None:
    docs = [make_doc(i) for i in range(6)]
    await store.save_many(docs)
    await store.apply_status_many([event(docs[1].event_id, Status.SENDING)])
    await settle(store)
    older = await store.pending_older_than(docs[4].created_at, limit=10)
    assert [d.event_id for d in older] == [docs[i].event_id for i in (0, 2, 3)]
    first_two = await store.pending_older_than(docs[4].created_at, limit=2)
    assert [d.event_id for d in first_two] == [docs[0].event_id, docs[2].event_id]
    assert await store.pending_older_than(docs[0].created_at, limit=10) == []
    assert await store.pending_older_than(docs[4].created_at, limit=0) == []


# -- implementation-specific ------------------------------------------------------


async def test_sqlite_data_survives_close_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "emails.sqlite3"
    async with SqliteStore(path) as store:
        await store.save_many([make_doc(1), make_doc(2)])
        await store.apply_status_many([event(make_doc(1).event_id, Status.SENT)])
        before = await store.get(make_doc(1).event_id)
    async with SqliteStore(path) as store:
        assert await store.get(make_doc(1).event_id) == before
        assert await store.get(make_doc(2).event_id) == make_doc(2)
        page = await store.search(SearchQuery(status=Status.PENDING))
        assert [d.event_id for d in page.documents] == [make_doc(2).event_id]
        [again] = await store.save_many([make_doc(1)])
        assert not again.created


async def test_sqlite_store_must_be_open(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "x.db")
    with pytest.raises(RuntimeError, match="not open"):
        await store.get("x")


def test_es_mapping_names_every_document_field() -> None:
    names = {f.encode_name for f in msgspec.structs.fields(EmailDocument)}
    assert names == set(MAPPING["properties"])


async def test_es_refused_connection_is_unavailable() -> None:
    store = ElasticsearchStore(f"http://127.0.0.1:{free_port()}", "emails", request_timeout=2)
    with pytest.raises(StoreUnavailable):
        await store.open()


class FakeCluster:
    """Just enough HTTP to let a store open (the index "exists"); then every
    other request gets ``mode``: a 503, or no answer at all."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.port = 0

    async def serve(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, stream: trio.SocketStream) -> None:
        buffer = b""
        while True:
            while b"\r\n\r\n" not in buffer:
                data = await stream.receive_some()
                if not data:
                    return
                buffer += data
            head, buffer = buffer.split(b"\r\n\r\n", 1)
            method, target = head.split(b" ", 2)[:2]
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            while len(buffer) < length:
                buffer += await stream.receive_some()
            buffer = buffer[length:]
            if method == b"HEAD" or target.endswith(b"/_mapping"):
                status, body = b"200 OK", b'{"acknowledged":true}'
            elif self.mode == "hang":
                await trio.sleep_forever()
            else:
                status, body = b"503 Service Unavailable", b'{"error":"overloaded"}'
            await stream.send_all(
                b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\n"
                b"x-elastic-product: Elasticsearch\r\ncontent-length: "
                + (b"0" if method == b"HEAD" else str(len(body)).encode())
                + b"\r\n\r\n"
                + (b"" if method == b"HEAD" else body)
            )


@pytest.mark.parametrize("mode", ["503", "hang"])
async def test_es_outage_after_open_is_unavailable(mode: str) -> None:
    fake = FakeCluster(mode)
    async with trio.open_nursery() as nursery:
        await nursery.start(fake.serve)
        store = ElasticsearchStore(f"http://127.0.0.1:{fake.port}", "emails", request_timeout=0.5)
        await store.open()
        try:
            with pytest.raises(StoreUnavailable):
                await store.save_many([make_doc(1)])
            with pytest.raises(StoreUnavailable):
                await store.apply_status_many([event("x", Status.SENT)])
            with pytest.raises(StoreUnavailable):
                await store.get("x")
            with pytest.raises(StoreUnavailable):
                await store.search(SearchQuery())
        finally:
            await store.close()
        nursery.cancel_scope.cancel()


@pytest.mark.services
async def test_es_version_conflict_is_read_again_and_reapplied(
    elasticsearch_url: str, elasticsearch_index: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with (
        ElasticsearchStore(elasticsearch_url, elasticsearch_index) as ours,
        ElasticsearchStore(elasticsearch_url, elasticsearch_index) as theirs,
    ):
        try:
            a, b = make_doc(1), make_doc(2)
            await ours.save_many([a, b])
            real_mget = ours._mget
            reads = 0

            async def mget_then_race(ids: Any) -> Any:
                # Another writer changes both documents between our read and our write.
                nonlocal reads
                found = await real_mget(ids)
                reads += 1
                if reads == 1:
                    await theirs.apply_status_many(
                        [event(a.event_id, Status.SENDING), event(b.event_id, Status.SENT)]
                    )
                return found

            monkeypatch.setattr(ours, "_mget", mget_then_race)
            results = await ours.apply_status_many(
                [event(a.event_id, Status.SENT), event(b.event_id, Status.SENDING)]
            )
            assert reads == 2
            assert results == [
                ApplyResult(a.event_id, APPLIED, Status.SENT),  # on top of their SENDING
                ApplyResult(b.event_id, IGNORED, Status.SENT),  # their SENT won
            ]
            got_a, got_b = await ours.get(a.event_id), await ours.get(b.event_id)
            assert got_a is not None and got_a.status is Status.SENT
            assert got_b is not None and got_b.status is Status.SENT
        finally:
            await ours.delete_index()


# -- throughput: everything lands, at no less than a floor far below the measured rate --
#
# The figures belong to the bench; here the batches must all land and the rate must
# not collapse (floors about 1/20 of what these machines measure).


async def test_batched_writes_all_land_at_a_sane_rate(store: AnyStore) -> None:
    n, batch = 2000, 200
    docs = [make_doc(i) for i in range(n)]
    started = time.perf_counter()
    for start in range(0, n, batch):
        results = await store.save_many(docs[start : start + batch])
        assert all(r.created for r in results)
    saved = time.perf_counter() - started
    events = [event(d.event_id, Status.SENT) for d in docs]
    started = time.perf_counter()
    for start in range(0, n, batch):
        applied_results = await store.apply_status_many(events[start : start + batch])
        assert {r.outcome for r in applied_results} == {APPLIED}
    applied = time.perf_counter() - started
    await settle(store)
    page = await store.search(SearchQuery(status=Status.SENT, page_size=1))
    assert page.total == n
    assert n / saved > 100, f"{type(store).__name__}: save_many {n / saved:.0f} docs/s"
    assert n / applied > 100, (
        f"{type(store).__name__}: apply_status_many {n / applied:.0f} events/s"
    )

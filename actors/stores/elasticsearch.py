"""The distributed store: email documents in an Elasticsearch index.

Why it looks like this:

* The official async client runs natively on Trio through its httpx node
  (``node_class="httpxasync"``; httpx uses anyio, which speaks Trio), so there
  is no asyncio bridge on this path. Two things in elastic-transport are
  asyncio-only and are kept off: sniffing (it refuses to run under Trio) and
  retry backoff (it calls ``asyncio.sleep``; its default, 0, never sleeps).
  Retries with a pause are done here, with ``trio.sleep``.
* Only standard Elasticsearch APIs (``_bulk``, ``_mget``, ``_search`` with
  ``search_after``, optimistic concurrency with ``if_seq_no`` /
  ``if_primary_term``), so the same code runs on a real cluster.
* Writes are batched: one ``_bulk`` for a batch of saves or status updates.
  Bulk bodies are built from msgspec JSON bytes, never through ``json.dumps``.
* The document ``_id`` is the eventId, so a repeated save is a 409 on
  ``create``, never a second document.
* Reads by id (:meth:`get`, and the reads inside :meth:`apply_status_many`)
  are real-time. :meth:`search` and :meth:`pending_older_than` are
  near-real-time: a write shows up there after the index refreshes (about a
  second by default). Writes never use ``refresh=wait_for``: it would cost a
  refresh interval per batch. :meth:`refresh` is for tests and tools.
* ``createdAt`` is mapped as ``date_nanos`` rather than ``date``: ``date``
  keeps milliseconds, the documents carry microseconds, and search order and
  ``search_after`` keys should match the stored timestamp exactly (as they do
  in the SQLite store).
* Connection errors, timeouts, 429 and 5xx raise
  :class:`~actors.domain.edges.StoreUnavailable`, so callers keep the work and retry.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar, cast

import msgspec
import trio
from elastic_transport import HttpxAsyncHttpNode
from elasticsearch import ApiError, AsyncElasticsearch, ConnectionTimeout
from elasticsearch import ConnectionError as EsConnectionError

from actors.domain.edges import (
    ApplyOutcome,
    ApplyResult,
    SaveResult,
    SearchPage,
    SearchQuery,
    StoreUnavailable,
    apply_status,
)
from actors.domain.schema import EmailDocument, EmailStatusEvent, Status
from actors.stores.common import (
    OpenClose,
    decode_page_token,
    encode_page_token,
    exact_filters,
    metadata_filters,
)

__all__ = [
    "MAPPING",
    "ElasticsearchStore",
    "IndexClient",
    "StoreItemError",
    "close_client",
    "open_index",
    "unavailable_on_outage",
]

_KEYWORD = {"type": "keyword"}
_TEXT = {"type": "text"}
_DATE = {"type": "date"}
_OPAQUE = {"type": "object", "enabled": False}  # kept in _source, never indexed

MAPPING: dict[str, Any] = {
    # Fields not listed are kept in _source but not indexed: a field added to
    # EmailDocument is stored before the mapping learns about it, never rejected.
    "dynamic": "false",
    "properties": {
        "eventId": _KEYWORD,
        "recipient": _KEYWORD,
        "template": _KEYWORD,
        "category": _KEYWORD,
        "status": _KEYWORD,
        "idempotencyKey": _KEYWORD,
        "provider": _KEYWORD,
        "providerMessageId": _KEYWORD,
        "subject": _TEXT,
        "error": _TEXT,
        "smtpReply": _TEXT,
        "attempts": {"type": "integer"},
        "latencyMs": {"type": "float"},
        "createdAt": {"type": "date_nanos"},
        "updatedAt": _DATE,
        "sentAt": _DATE,
        "nextAttemptAt": _DATE,
        "variables": _OPAQUE,
        "attachments": _OPAQUE,
        "history": _OPAQUE,
        # issue 17: searchable tags and metadata (exact values), the scheduled send time
        "tags": _KEYWORD,
        "metadata": {"type": "flattened"},
        "sendAt": _DATE,
        "fromAddress": _KEYWORD,
        "fromName": _TEXT,
        "replyTo": _KEYWORD,
        "cc": _KEYWORD,
        "bcc": _KEYWORD,
        "headers": _OPAQUE,
    },
}

_SORT_NEWEST = [{"createdAt": {"order": "desc"}}, {"eventId": {"order": "desc"}}]
_SORT_OLDEST = [{"createdAt": {"order": "asc"}}, {"eventId": {"order": "asc"}}]
_MAX_PAGE = 10_000  # Elasticsearch's default index.max_result_window

_encoder = msgspec.json.Encoder()


class StoreItemError(Exception):
    """Elasticsearch refused items of a batch for a reason retrying will not cure
    (a 4xx other than a conflict). The rest of the batch was written."""

    def __init__(self, errors: dict[str, Any]) -> None:
        self.errors = errors  # eventId -> the error Elasticsearch returned for it
        super().__init__(f"Elasticsearch rejected {len(errors)} item(s): {errors}")


def _transient(status: int) -> bool:
    return status == 429 or status >= 500


@contextlib.contextmanager
def unavailable_on_outage(what: str) -> Iterator[None]:
    """Turn "the cluster cannot answer now" into StoreUnavailable; let the rest through."""
    try:
        yield
    except (EsConnectionError, ConnectionTimeout) as exc:
        raise StoreUnavailable(f"elasticsearch {what}: {exc}") from exc
    except ApiError as exc:
        if _transient(exc.status_code):
            raise StoreUnavailable(f"elasticsearch {what}: {exc}") from exc
        raise


def _filters(query: SearchQuery) -> list[dict[str, Any]]:
    """The bool filters of *query*: exact fields, the time range, tags and metadata, template
    and subject."""
    filters: list[dict[str, Any]] = [{"term": {f: v}} for f, v in exact_filters(query)]
    span: dict[str, str] = {}
    if query.created_from is not None:
        span["gte"] = _iso(query.created_from)
    if query.created_to is not None:
        span["lt"] = _iso(query.created_to)
    if span:
        filters.append({"range": {"createdAt": span}})
    for tag in query.tags:
        filters.append({"term": {"tags": tag}})
    for key, value in metadata_filters(query):
        filters.append({"term": {f"metadata.{key}": value}})
    if query.template is not None:
        filters.append({"term": {"template": query.template}})
    if query.subject_text:
        filters.append({"match": {"subject": {"query": query.subject_text, "operator": "and"}}})
    return filters


def _iso(dt: datetime) -> str:
    """RFC 3339 in UTC; a naive datetime is taken to be UTC (as msgspec writes it)."""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _action(op: str, event_id: str, **meta: int) -> bytes:
    return _encoder.encode({op: {"_id": event_id, **meta}})


def _ndjson(lines: list[bytes]) -> Any:
    # The client's NDJSON serializer forwards pre-encoded lines untouched; its
    # type hints only know about dicts.
    return b"\n".join(lines) + b"\n"


def _document(source: Any) -> EmailDocument:
    return msgspec.convert(source, EmailDocument)


async def open_index(
    url: str,
    index: str,
    mappings: dict[str, Any],
    *,
    request_timeout: float,
    what: str,
    add_fields: bool = False,
) -> AsyncElasticsearch:
    """A client that runs on Trio, with ``index`` created from ``mappings`` unless it exists
    (then, with ``add_fields``, the mapping's fields are added: a no-op when they are there
    already; a field mapped with another type is an error, not ignored). Written once for the
    store, the claims and the suppression list: each owns one index the same way. The client
    is closed again if this fails."""
    client = AsyncElasticsearch(
        url,
        node_class=HttpxAsyncHttpNode,  # "httpxasync": the node that runs on Trio
        request_timeout=request_timeout,
        max_retries=1,
        retry_on_timeout=False,
    )
    try:
        with unavailable_on_outage(what):
            if await client.indices.exists(index=index):
                if add_fields:
                    await client.indices.put_mapping(index=index, properties=mappings["properties"])
            else:
                try:
                    await client.indices.create(index=index, mappings=mappings)
                except ApiError as exc:
                    # Another process created it between our check and create.
                    if exc.error != "resource_already_exists_exception":
                        raise
    except BaseException:
        await close_client(client)
        raise
    return client


async def close_client(client: AsyncElasticsearch | None) -> None:
    """Close ``client``, bounded, even when cancelled."""
    if client is not None:
        with trio.move_on_after(5, shield=True):
            await client.close()


class IndexClient(OpenClose):
    """The client plumbing of an object that owns one Elasticsearch index: open (create the
    index from ``mapping``), close, ``async with`` and ``_es``. Written once for the store, the
    claims, the suppression list and the feedback ledger; each says what its index is for."""

    mapping: ClassVar[dict[str, Any]]
    what: ClassVar[str]  # named in outage errors: "open <what>", "delete <what> index"
    add_fields: ClassVar[bool] = False  # see open_index

    def __init__(self, url: str, index: str, *, request_timeout: float = 10.0) -> None:
        self.url = url
        self.index = index
        self._request_timeout = request_timeout
        self._client: AsyncElasticsearch | None = None

    async def open(self) -> None:
        if self._client is not None:
            return
        self._client = await open_index(
            self.url,
            self.index,
            self.mapping,
            request_timeout=self._request_timeout,
            what=f"open {self.what}",
            add_fields=self.add_fields,
        )

    async def close(self) -> None:
        client, self._client = self._client, None
        await close_client(client)

    async def delete_index(self) -> None:
        """Drop the index and everything in it (tests and tools)."""
        with unavailable_on_outage(f"delete {self.what} index"):
            await self._es.indices.delete(index=self.index, ignore_unavailable=True)

    @property
    def _es(self) -> AsyncElasticsearch:
        if self._client is None:
            raise RuntimeError(f"{type(self).__name__} is not open")
        return self._client


class ElasticsearchStore(IndexClient):
    """:class:`actors.domain.edges.Store` on one Elasticsearch index (created at :meth:`open`).

    ``item_retries`` bounds how often items that hit a version conflict or a
    transient per-item error (429, 5xx) inside a bulk response are retried,
    with a short pause, before the call gives up with StoreUnavailable.
    """

    mapping = MAPPING
    what = "emails"
    add_fields = True  # an existing index gets new fields of EmailDocument's mapping

    def __init__(
        self,
        url: str,
        index: str,
        *,
        request_timeout: float = 10.0,
        item_retries: int = 5,
        retry_pause: float = 0.05,
    ) -> None:
        super().__init__(url, index, request_timeout=request_timeout)
        self._item_retries = item_retries
        self._retry_pause = retry_pause

    async def refresh(self) -> None:
        """Make every write so far visible to search (tests and tools; never on the hot path)."""
        with unavailable_on_outage("refresh"):
            await self._es.indices.refresh(index=self.index)

    # -- writes ------------------------------------------------------------------

    async def save_many(self, docs: Sequence[EmailDocument]) -> list[SaveResult]:
        """One ``_bulk`` of ``create`` ops; a 409 means the eventId exists, and the
        stored document is read back (real-time) and returned with created=False."""
        results: list[SaveResult | None] = [None] * len(docs)
        pending = list(range(len(docs)))
        for attempt in range(self._item_retries + 1):
            if not pending:
                break
            if attempt:
                await trio.sleep(self._retry_pause * attempt)
            lines: list[bytes] = []
            for i in pending:
                lines.append(_action("create", docs[i].event_id))
                lines.append(_encoder.encode(docs[i]))
            items = await self._bulk(lines)
            retry: list[int] = []
            exists: list[int] = []
            rejected: dict[str, Any] = {}
            for i, item in zip(pending, items, strict=True):
                status = item["create"]["status"]
                if status in (200, 201):
                    results[i] = SaveResult(docs[i], True)
                elif status == 409:
                    exists.append(i)
                elif _transient(status):
                    retry.append(i)
                else:
                    rejected[docs[i].event_id] = item["create"].get("error")
            if exists:
                stored = await self._mget([docs[i].event_id for i in exists])
                for i in exists:
                    found = stored.get(docs[i].event_id)
                    if found is None:  # deleted since the 409: try to create it again
                        retry.append(i)
                    else:
                        results[i] = SaveResult(found[0], False)
            if rejected:
                raise StoreItemError(rejected)
            pending = sorted(retry)
        if pending:
            raise StoreUnavailable(
                f"elasticsearch save: {len(pending)} item(s) still failing"
                f" after {self._item_retries} retries"
            )
        return cast(list[SaveResult], results)

    async def apply_status_many(self, events: Sequence[EmailStatusEvent]) -> list[ApplyResult]:
        """Read (real-time, with seq_no/primary_term), apply in order, write back
        changed documents in one ``_bulk`` of conditional ``index`` ops. A document
        someone else changed in between (409) is read again and its events applied
        again, so results always describe what was actually written.

        If an item keeps failing, the others are still written; then the call
        raises (StoreUnavailable for transient failures, StoreItemError for
        permanent ones) so the caller retries the batch. Re-applying events that
        were already written is harmless: :func:`apply_status` ignores them.
        """
        by_id: dict[str, list[int]] = {}
        for i, event in enumerate(events):
            by_id.setdefault(event.event_id, []).append(i)
        results: list[ApplyResult | None] = [None] * len(events)
        pending = list(by_id)
        rejected: dict[str, Any] = {}
        for attempt in range(self._item_retries + 1):
            if not pending:
                break
            if attempt:
                await trio.sleep(self._retry_pause * attempt)
            stored = await self._mget(pending)
            writes: list[tuple[str, EmailDocument, int, int]] = []
            for event_id in pending:
                found = stored.get(event_id)
                if found is None:
                    for i in by_id[event_id]:
                        results[i] = ApplyResult(event_id, ApplyOutcome.NOT_FOUND)
                    continue
                doc, seq_no, primary_term = found
                changed = False
                for i in by_id[event_id]:
                    new = apply_status(doc, events[i])
                    if new is None:
                        results[i] = ApplyResult(event_id, ApplyOutcome.IGNORED, doc.status)
                    else:
                        doc, changed = new, True
                        results[i] = ApplyResult(event_id, ApplyOutcome.APPLIED, new.status)
                if changed:
                    writes.append((event_id, doc, seq_no, primary_term))
            if not writes:
                pending = []
                break
            lines: list[bytes] = []
            for event_id, doc, seq_no, primary_term in writes:
                lines.append(
                    _action("index", event_id, if_seq_no=seq_no, if_primary_term=primary_term)
                )
                lines.append(_encoder.encode(doc))
            items = await self._bulk(lines)
            pending = []
            for (event_id, _, _, _), item in zip(writes, items, strict=True):
                status = item["index"]["status"]
                if status == 409 or _transient(status):
                    pending.append(event_id)
                elif status not in (200, 201):
                    rejected[event_id] = item["index"].get("error")
        if rejected:
            raise StoreItemError(rejected)
        if pending:
            raise StoreUnavailable(
                f"elasticsearch status update: {len(pending)} document(s) still failing"
                f" after {self._item_retries} retries"
            )
        return cast(list[ApplyResult], results)

    # -- reads -------------------------------------------------------------------

    async def get(self, event_id: str) -> EmailDocument | None:
        """Real-time: sees every acknowledged write, refreshed or not."""
        found = await self._mget([event_id])
        hit = found.get(event_id)
        return hit[0] if hit is not None else None

    async def search(self, query: SearchQuery) -> SearchPage:
        """Newest first by (createdAt, eventId), ``search_after`` pagination.
        ``created_from`` is inclusive, ``created_to`` exclusive. Near-real-time."""
        if not 1 <= query.page_size < _MAX_PAGE:
            raise ValueError(f"page_size: must be 1..{_MAX_PAGE - 1}, got {query.page_size}")
        filters = _filters(query)
        after: list[int | str] | None = None
        if query.page_token:
            after = list(decode_page_token(query.page_token))
        with unavailable_on_outage("search"):
            resp = await self._es.search(
                index=self.index,
                query={"bool": {"filter": filters}},
                sort=_SORT_OLDEST if query.oldest_first else _SORT_NEWEST,
                size=query.page_size + 1,
                search_after=after,
                track_total_hits=True,
            )
        hits = resp["hits"]["hits"]
        page = hits[: query.page_size]
        token = encode_page_token(page[-1]["sort"]) if len(hits) > query.page_size else ""
        return SearchPage(
            documents=[_document(hit["_source"]) for hit in page],
            next_page_token=token,
            total=int(resp["hits"]["total"]["value"]),
        )

    async def count_by_status(self, query: SearchQuery) -> dict[Status, int]:
        """One terms aggregation on ``status`` (the other filters applied). Near-real-time."""
        filters = _filters(msgspec.structs.replace(query, status=None))
        with unavailable_on_outage("search"):
            resp = await self._es.search(
                index=self.index,
                query={"bool": {"filter": filters}},
                size=0,
                aggs={"by_status": {"terms": {"field": "status", "size": 100}}},
            )
        known = Status._value2member_map_
        return {
            Status(b["key"]): int(b["doc_count"])
            for b in resp["aggregations"]["by_status"]["buckets"]
            if b["key"] in known
        }

    async def pending_older_than(self, before: datetime, limit: int) -> list[EmailDocument]:
        """Oldest first. Near-real-time: a document saved less than a refresh
        interval ago may be missing, which a sweeper looking for old ones can bear."""
        return await self._earliest(Status.PENDING, "createdAt", before, limit)

    async def scheduled_before(self, before: datetime, limit: int) -> list[EmailDocument]:
        """Soonest first. Near-real-time, as :meth:`pending_older_than`: an email scheduled
        less than a refresh interval before it is due may be seen a scan later."""
        return await self._earliest(Status.SCHEDULED, "sendAt", before, limit)

    async def _earliest(
        self, status: Status, field: str, before: datetime, limit: int
    ) -> list[EmailDocument]:
        """Documents in ``status`` with ``field`` (a time) before ``before``, earliest first."""
        if limit < 1:
            await trio.lowlevel.checkpoint()
            return []
        with unavailable_on_outage("search"):
            resp = await self._es.search(
                index=self.index,
                query={
                    "bool": {
                        "filter": [
                            {"term": {"status": status.value}},
                            {"range": {field: {"lt": _iso(before)}}},
                        ]
                    }
                },
                sort=[{field: {"order": "asc"}}, {"eventId": {"order": "asc"}}],
                size=min(limit, _MAX_PAGE),
            )
        return [_document(hit["_source"]) for hit in resp["hits"]["hits"]]

    # -- plumbing ----------------------------------------------------------------

    async def _bulk(self, lines: list[bytes]) -> list[dict[str, Any]]:
        with unavailable_on_outage("bulk"):
            resp = await self._es.bulk(index=self.index, operations=_ndjson(lines))
        items: list[dict[str, Any]] = resp["items"]
        return items

    async def _mget(self, ids: Sequence[str]) -> dict[str, tuple[EmailDocument, int, int]]:
        """Real-time read: eventId -> (document, seq_no, primary_term) for those found."""
        if not ids:
            return {}
        with unavailable_on_outage("mget"):
            resp = await self._es.mget(index=self.index, ids=list(ids))
        found: dict[str, tuple[EmailDocument, int, int]] = {}
        for doc in resp["docs"]:
            if "error" in doc:  # e.g. a shard that cannot answer now
                raise StoreUnavailable(f"elasticsearch mget {doc['_id']}: {doc['error']}")
            if doc.get("found"):
                found[doc["_id"]] = (
                    _document(doc["_source"]),
                    doc["_seq_no"],
                    doc["_primary_term"],
                )
        return found

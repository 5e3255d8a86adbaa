"""The embedded store: email documents in one SQLite file (the default on a fresh machine).

Why it looks like this:

* One connection, used only from worker threads (``trio.to_thread.run_sync``)
  and serialized by a ``trio.Lock``: sqlite3 blocks, and Trio code must never
  block the event loop. A worker thread is not abandoned on cancellation, so a
  transaction that has started always commits or rolls back before the
  caller's cancellation is delivered.
* WAL journal with ``synchronous=NORMAL``: a commit is one append to the WAL
  (durable against a process crash, which is what acknowledging a message
  needs; a power cut may lose the last commits), and readers in other
  processes (the command line's ``search``) never block the writer.
* Every batch is one ``BEGIN IMMEDIATE`` transaction, so a batch of 200
  documents costs one commit rather than 200.
* The document is kept whole as msgspec JSON; the columns beside it exist only
  to filter and sort. ``created_at`` is epoch microseconds (UTC), so it sorts as
  an integer and keeps the full precision of the document's timestamp.
* The lifecycle rule is :func:`actors.domain.edges.apply_status`; this module only
  reads, calls it, and writes back.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import trio

from actors.domain.edges import (
    ApplyOutcome,
    ApplyResult,
    SaveResult,
    SearchPage,
    SearchQuery,
    StoreUnavailable,
    apply_status,
)
from actors.domain.schema import EmailDocument, EmailStatusEvent, Status, document_decoder
from actors.stores.common import (
    OpenClose,
    decode_page_token,
    encode_page_token,
    exact_filters,
    metadata_filters,
)

__all__ = ["SqliteStore"]

T = TypeVar("T")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)
# Far below SQLite's limit on host parameters (32766 since 3.32), and small
# enough that one statement stays cheap to prepare.
_CHUNK = 500
# SQLite result codes (primary, the low byte of an extended code) that mean
# "not now" rather than "wrong": the caller keeps the work and retries.
_TRANSIENT_CODES = frozenset(
    {
        5,  # SQLITE_BUSY: another process holds the write lock past busy_timeout
        6,  # SQLITE_LOCKED
        10,  # SQLITE_IOERR
        13,  # SQLITE_FULL
        14,  # SQLITE_CANTOPEN
        15,  # SQLITE_PROTOCOL
    }
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS emails (
    event_id        TEXT PRIMARY KEY,
    status          TEXT NOT NULL,
    recipient       TEXT NOT NULL,
    category        TEXT NOT NULL,
    created_at      INTEGER NOT NULL,  -- epoch microseconds, UTC
    idempotency_key TEXT,
    doc             TEXT NOT NULL      -- the EmailDocument as JSON (json_extract works)
);
CREATE INDEX IF NOT EXISTS emails_created ON emails (created_at, event_id);
CREATE INDEX IF NOT EXISTS emails_recipient ON emails (recipient, created_at, event_id);
CREATE INDEX IF NOT EXISTS emails_status ON emails (status, created_at, event_id);
CREATE INDEX IF NOT EXISTS emails_category ON emails (category, created_at, event_id);
CREATE INDEX IF NOT EXISTS emails_idempotency ON emails (idempotency_key)
    WHERE idempotency_key IS NOT NULL;
"""
# Added after the first release (issue 17): a file made before gets the column at open.
_SEND_AT = """
CREATE INDEX IF NOT EXISTS emails_send_at ON emails (send_at, event_id)
    WHERE status = 'SCHEDULED';
"""

_INSERT = (
    "INSERT OR IGNORE INTO emails"
    " (event_id, status, recipient, category, created_at, idempotency_key, doc, send_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)

_encoder = msgspec.json.Encoder()

_Row = tuple[str, str, str, str, int, str | None, str, int | None]


def _micros(dt: datetime) -> int:
    """Epoch microseconds; a naive datetime is taken to be UTC (as msgspec writes it)."""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return (dt - _EPOCH) // _MICRO


def _row(doc: EmailDocument) -> _Row:
    return (
        doc.event_id,
        doc.status.value,
        doc.recipient,
        doc.category,
        _micros(doc.created_at),
        doc.idempotency_key,
        _encoder.encode(doc).decode(),
        _micros(doc.send_at) if doc.send_at is not None else None,
    )


def _where(query: SearchQuery) -> tuple[str, list[Any]]:
    """The WHERE clause of *query*'s filters, and its parameters."""
    where: list[str] = []
    params: list[Any] = []
    for column, value in exact_filters(query):
        where.append(f"{column} = ?")
        params.append(value)
    if query.created_from is not None:
        where.append("created_at >= ?")
        params.append(_micros(query.created_from))
    if query.created_to is not None:
        where.append("created_at < ?")
        params.append(_micros(query.created_to))
    for tag in query.tags:
        where.append("EXISTS (SELECT 1 FROM json_each(doc, '$.tags') WHERE value = ?)")
        params.append(tag)
    for key, value in metadata_filters(query):
        where.append(f"json_extract(doc, '$.metadata.\"{key}\"') = ?")  # key checked
        params.append(value)
    where_text, params_text = _text_filters(query)
    return " AND ".join(where + where_text) or "1", params + params_text


def _text_filters(query: SearchQuery) -> tuple[list[str], list[Any]]:
    """Template and subject, read from the stored JSON (no column of their own: the other
    filters' indexes narrow the rows first; alone they scan)."""
    where: list[str] = []
    params: list[Any] = []
    if query.template is not None:
        where.append("json_extract(doc, '$.template') = ?")
        params.append(query.template)
    if query.subject_text:
        escaped = query.subject_text.replace("\\", "\\\\").replace("%", "\\%")
        where.append("json_extract(doc, '$.subject') LIKE ? ESCAPE '\\'")
        params.append("%" + escaped.replace("_", "\\_") + "%")
    return where, params


def _rollback(conn: sqlite3.Connection) -> None:
    # A failed COMMIT may already have ended the transaction; don't hide the real error.
    if conn.in_transaction:
        conn.execute("ROLLBACK")


def _chunks(items: Sequence[T], size: int = _CHUNK) -> Iterable[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class SqliteStore(OpenClose):
    """:class:`actors.domain.edges.Store` on a SQLite file; parent directories are created.

    Use ``async with SqliteStore(path) as store`` or call :meth:`open` and
    :meth:`close`. Every method is a checkpoint; calls are serialized.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = path if str(path) == ":memory:" else Path(path)
        self._conn: sqlite3.Connection | None = None
        self._lock = trio.Lock()

    # -- lifecycle ---------------------------------------------------------------

    async def open(self) -> None:
        async with self._lock:
            if self._conn is None:
                self._conn = await self._in_thread(self._connect)

    def _connect(self) -> sqlite3.Connection:
        if isinstance(self.path, Path):
            self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: no implicit transactions; every batch says BEGIN itself.
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=5000")
            conn.executescript(_SCHEMA)
            columns = {row[1] for row in conn.execute("PRAGMA table_info(emails)")}
            if "send_at" not in columns:
                conn.execute("ALTER TABLE emails ADD COLUMN send_at INTEGER")  # epoch us, UTC
            conn.executescript(_SEND_AT)
        except BaseException:
            conn.close()
            raise
        return conn

    async def close(self) -> None:
        async with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None:
                await trio.to_thread.run_sync(conn.close)

    # -- writes ------------------------------------------------------------------

    async def save_many(self, docs: Sequence[EmailDocument]) -> list[SaveResult]:
        if not docs:
            await trio.lowlevel.checkpoint()
            return []
        return await self._run(self._save_many, list(docs))

    def _save_many(self, conn: sqlite3.Connection, docs: list[EmailDocument]) -> list[SaveResult]:
        ids = list(dict.fromkeys(doc.event_id for doc in docs))
        conn.execute("BEGIN IMMEDIATE")
        try:
            stored = self._select_docs(conn, ids)
            fresh: dict[str, EmailDocument] = {}
            rows: list[_Row] = []
            for doc in docs:
                if doc.event_id not in stored and doc.event_id not in fresh:
                    fresh[doc.event_id] = doc
                    rows.append(_row(doc))
            conn.executemany(_INSERT, rows)
            conn.execute("COMMIT")
        except BaseException:
            _rollback(conn)
            raise
        results: list[SaveResult] = []
        for doc in docs:
            first = fresh.get(doc.event_id)
            if first is doc:
                results.append(SaveResult(doc, True))
            elif first is not None:  # a repeat within this batch: the first one was stored
                results.append(SaveResult(first, False))
            else:
                results.append(SaveResult(stored[doc.event_id], False))
        return results

    async def apply_status_many(self, events: Sequence[EmailStatusEvent]) -> list[ApplyResult]:
        if not events:
            await trio.lowlevel.checkpoint()
            return []
        return await self._run(self._apply_status_many, list(events))

    def _apply_status_many(
        self, conn: sqlite3.Connection, events: list[EmailStatusEvent]
    ) -> list[ApplyResult]:
        ids = list(dict.fromkeys(event.event_id for event in events))
        conn.execute("BEGIN IMMEDIATE")
        try:
            current = self._select_docs(conn, ids)
            changed: set[str] = set()
            results: list[ApplyResult] = []
            for event in events:
                doc = current.get(event.event_id)
                if doc is None:
                    results.append(ApplyResult(event.event_id, ApplyOutcome.NOT_FOUND))
                    continue
                new = apply_status(doc, event)
                if new is None:
                    results.append(ApplyResult(event.event_id, ApplyOutcome.IGNORED, doc.status))
                else:
                    current[event.event_id] = new
                    changed.add(event.event_id)
                    results.append(ApplyResult(event.event_id, ApplyOutcome.APPLIED, new.status))
            conn.executemany(
                "UPDATE emails SET status = ?, doc = ? WHERE event_id = ?",
                [
                    (current[eid].status.value, _encoder.encode(current[eid]).decode(), eid)
                    for eid in ids
                    if eid in changed
                ],
            )
            conn.execute("COMMIT")
        except BaseException:
            _rollback(conn)
            raise
        return results

    # -- reads -------------------------------------------------------------------

    async def get(self, event_id: str) -> EmailDocument | None:
        return await self._run(lambda conn: self._select_docs(conn, [event_id]).get(event_id))

    async def search(self, query: SearchQuery) -> SearchPage:
        """Newest first by (created_at, event_id); keyset pagination, so pages stay
        stable while documents are added. ``created_from`` is inclusive,
        ``created_to`` exclusive. ``total`` counts every match, not just this page."""
        if query.page_size < 1:
            raise ValueError(f"page_size: must be at least 1, got {query.page_size}")
        after = decode_page_token(query.page_token) if query.page_token else None
        return await self._run(self._search, query, after)

    async def count_by_status(self, query: SearchQuery) -> dict[Status, int]:
        """One GROUP BY over the status index (the other filters applied)."""
        unfiltered = msgspec.structs.replace(query, status=None)

        def count(conn: sqlite3.Connection) -> dict[Status, int]:
            filters, params = _where(unfiltered)
            rows = conn.execute(
                f"SELECT status, COUNT(*) FROM emails WHERE {filters} GROUP BY status", params
            ).fetchall()
            known = Status._value2member_map_
            return {Status(status): n for status, n in rows if status in known}

        return await self._run(count)

    def _search(
        self, conn: sqlite3.Connection, query: SearchQuery, after: tuple[int, str] | None
    ) -> SearchPage:
        filters, params = _where(query)
        (total,) = conn.execute(f"SELECT COUNT(*) FROM emails WHERE {filters}", params).fetchone()
        older, order = (">", "ASC") if query.oldest_first else ("<", "DESC")
        if after is not None:
            filters += f" AND (created_at, event_id) {older} (?, ?)"
            params.extend(after)
        rows = conn.execute(
            f"SELECT created_at, event_id, doc FROM emails WHERE {filters}"
            f" ORDER BY created_at {order}, event_id {order} LIMIT ?",
            [*params, query.page_size + 1],
        ).fetchall()
        page = rows[: query.page_size]
        token = ""
        if len(rows) > query.page_size:
            last_created, last_id, _ = page[-1]
            token = encode_page_token((last_created, last_id))
        return SearchPage(
            documents=[document_decoder.decode(doc) for _, _, doc in page],
            next_page_token=token,
            total=total,
        )

    async def pending_older_than(self, before: datetime, limit: int) -> list[EmailDocument]:
        """Oldest first, so a sweeper that takes ``limit`` at a time makes progress."""
        return await self._earliest(Status.PENDING, "created_at", before, limit)

    async def scheduled_before(self, before: datetime, limit: int) -> list[EmailDocument]:
        return await self._earliest(Status.SCHEDULED, "send_at", before, limit)

    async def _earliest(
        self, status: Status, column: str, before: datetime, limit: int
    ) -> list[EmailDocument]:
        """Documents in ``status`` with ``column`` (a time) before ``before``, earliest first."""
        if limit < 1:  # SQLite reads a negative LIMIT as "no limit"
            await trio.lowlevel.checkpoint()
            return []
        cutoff = _micros(before)
        return await self._run(
            lambda conn: [
                document_decoder.decode(doc)
                for (doc,) in conn.execute(
                    f"SELECT doc FROM emails WHERE status = ? AND {column} < ?"
                    f" ORDER BY {column}, event_id LIMIT ?",
                    (status.value, cutoff, limit),
                )
            ]
        )

    # -- plumbing ----------------------------------------------------------------

    @staticmethod
    def _select_docs(conn: sqlite3.Connection, ids: Sequence[str]) -> dict[str, EmailDocument]:
        found: dict[str, EmailDocument] = {}
        for chunk in _chunks(ids):
            marks = ",".join("?" * len(chunk))
            for event_id, doc in conn.execute(
                f"SELECT event_id, doc FROM emails WHERE event_id IN ({marks})", chunk
            ):
                found[event_id] = document_decoder.decode(doc)
        return found

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(conn, *args)`` in a worker thread, one call at a time."""
        async with self._lock:
            conn = self._conn
            if conn is None:
                raise RuntimeError("SqliteStore is not open")
            return await self._in_thread(fn, conn, *args)

    @staticmethod
    async def _in_thread(fn: Callable[..., T], *args: Any) -> T:
        try:
            return await trio.to_thread.run_sync(fn, *args)
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode & 0xFF in _TRANSIENT_CODES:
                raise StoreUnavailable(f"sqlite: {exc}") from exc
            raise

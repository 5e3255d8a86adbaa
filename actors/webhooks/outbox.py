"""Where deliveries wait: the queue interface, and its SQLite outbox (embedded profile).

The embedded outbox is a table in ``webhooks.outbox_path``. A delivery is a row; it
goes ``pending`` -> ``delivered`` or ``failed`` (given up, kept for ``webhooks replay``).
Per endpoint and email, rows are delivered strictly in the order they were queued:
only the oldest pending row of an (endpoint, eventId) is ever taken, and it must be
delivered or given up before the next one goes. A retry is the same row with a later
``due_at``, so nothing about it lives only in memory. Delivered rows are kept for
``max_age_s`` (the webhook-id dedupe of repeats), then deleted.

The distributed profile's queue is RabbitMQ (``actors.webhooks.rabbit``); the
dispatcher uses either through :class:`WebhookQueue`.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence
from typing import Any, Protocol

import trio

from actors.stores.sqlite_file import SqliteFile
from actors.webhooks.events import WebhookItem

__all__ = ["Job", "SqliteOutbox", "WebhookQueue"]

# A process that is not the dispatcher's (``webhooks replay``) changes the file;
# the dispatcher looks at it again at least this often when it has nothing due.
IDLE_RECHECK_S = 2.0
TAKE_BATCH = 64  # due heads read at once by take()


class Job:
    """A delivery taken from the queue, to be settled once (delivered, retry, give_up)."""

    __slots__ = ("item", "handle")

    def __init__(self, item: WebhookItem, handle: Any) -> None:
        self.item = item
        self.handle = handle


class _Batch:
    """Outcome writes that go to the file in one transaction."""

    __slots__ = ("writes", "done", "error")

    def __init__(self) -> None:
        self.writes: list[tuple[str, tuple[Any, ...]]] = []
        self.done = trio.Event()
        self.error: BaseException | None = None


class WebhookQueue(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def add_many(self, items: Sequence[WebhookItem]) -> None:
        """Durable once it returns."""
        ...

    async def take(self, endpoint: str) -> Job:
        """Wait for the next delivery due to ``endpoint``."""
        ...

    async def delivered(self, job: Job) -> None: ...

    async def retry(self, job: Job, delay_s: float, error: str) -> None: ...

    async def give_up(self, job: Job, error: str) -> None: ...

    async def release(self, job: Job) -> None:
        """Hand a job back unsettled (its try was cancelled): it is taken again later."""
        ...

    async def failed(self, limit: int = 100) -> list[WebhookItem]:
        """Deliveries given up (left in place), oldest first."""
        ...

    async def replay(self, endpoint: str | None = None, limit: int | None = None) -> int:
        """Queue given-up deliveries again (as new: attempts and age start over)."""
        ...


_SCHEMA = """
CREATE TABLE IF NOT EXISTS webhook_outbox (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  endpoint TEXT NOT NULL, webhook_id TEXT NOT NULL, event_id TEXT NOT NULL,
  sequence INTEGER NOT NULL, body BLOB NOT NULL, created_at REAL NOT NULL,
  due_at REAL NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT,
  state TEXT NOT NULL DEFAULT 'pending', settled_at REAL,
  UNIQUE (endpoint, webhook_id));
CREATE INDEX IF NOT EXISTS webhook_outbox_heads ON webhook_outbox (endpoint, state, event_id, id);
"""
_COLUMNS = "id, webhook_id, endpoint, event_id, sequence, body, created_at, attempts, last_error"
# The oldest pending row of each (endpoint, eventId) of one endpoint: the only ones that may go.
_HEADS = (
    f"SELECT {_COLUMNS}, due_at FROM webhook_outbox o WHERE endpoint = ? AND state = 'pending'"
    " AND id = (SELECT MIN(id) FROM webhook_outbox WHERE endpoint = o.endpoint"
    " AND event_id = o.event_id AND state = 'pending') ORDER BY due_at, id LIMIT ?"
)


def _item(row: Sequence[Any]) -> WebhookItem:
    _, webhook_id, endpoint, event_id, sequence, body, created_at, attempts, last_error = row[:9]
    return WebhookItem(
        webhook_id=webhook_id, endpoint=endpoint, event_id=event_id, sequence=sequence,
        body=bytes(body), created_at=created_at, attempts=attempts, last_error=last_error,
    )  # fmt: skip


class SqliteOutbox(SqliteFile):
    """The outbox table; ``max_age_s``: how long delivered rows are kept for dedupe."""

    schema = _SCHEMA

    def __init__(self, path: str, max_age_s: float = 86400.0) -> None:
        super().__init__(path)
        self.max_age_s = max_age_s
        self._flying: dict[str, set[str]] = {}  # endpoint -> eventIds being delivered now
        self._wake: dict[str, trio.Event] = {}
        self._ready: dict[str, deque[Any]] = {}  # endpoint -> due heads read, not yet taken
        self._batch: _Batch | None = None  # outcomes waiting for the writer (group commit)
        self._adds = 0

    def _poke(self, endpoint: str) -> None:
        self._wake.pop(endpoint, trio.Event()).set()

    async def add_many(self, items: Sequence[WebhookItem]) -> None:
        rows = [
            (i.endpoint, i.webhook_id, i.event_id, i.sequence, i.body, i.created_at,
             i.created_at, i.attempts, i.last_error)
            for i in items
        ]  # fmt: skip
        await self._execute(
            "INSERT OR IGNORE INTO webhook_outbox (endpoint, webhook_id, event_id, sequence, body,"
            " created_at, due_at, attempts, last_error) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
            many=True,
        )
        self._adds += 1
        if self._adds % 1000 == 0:  # delivered rows outlive their dedupe window: drop them
            await self._execute(
                "DELETE FROM webhook_outbox WHERE state = 'delivered' AND settled_at < ?",
                (time.time() - self.max_age_s,),
            )
        for endpoint in {i.endpoint for i in items}:
            self._poke(endpoint)

    async def take(self, endpoint: str) -> Job:
        flying = self._flying.setdefault(endpoint, set())
        ready = self._ready.setdefault(endpoint, deque())
        while True:
            while ready:  # heads read earlier, due then; still heads (only we settle them)
                row = ready.popleft()
                if row[3] not in flying:
                    flying.add(row[3])
                    return Job(_item(row), row[0])
            assert self._read is not None, "SqliteOutbox.take() before open()"
            wake = self._wake.setdefault(endpoint, trio.Event())
            # One read for a batch of due heads: the query looks at every pending row of
            # the endpoint, so once per delivery it was most of a delivery's CPU.
            rows = self._read.execute(_HEADS, (endpoint, len(flying) + TAKE_BATCH)).fetchall()
            now = time.time()
            wait = IDLE_RECHECK_S
            for row in rows:
                if row[3] in flying:
                    continue
                due = row[-1]
                if due > now:
                    wait = min(wait, due - now)
                    break  # ordered by due_at: nothing after it is due sooner
                ready.append(row)
            if ready:
                continue
            with trio.move_on_after(wait):
                await wake.wait()

    def _landed(self, job: Job) -> None:
        self._flying.get(job.item.endpoint, set()).discard(job.item.event_id)
        self._poke(job.item.endpoint)  # the email's next row may go now

    async def _settle(self, job: Job, sql: str, args: tuple[Any, ...]) -> None:
        """Store one try's outcome; returns once it is stored. Outcomes that arrive while
        the writer is busy share one transaction (one commit, one trip to its thread)."""
        batch = self._batch
        leader = batch is None
        if batch is None:
            batch = self._batch = _Batch()
        batch.writes.append((sql, args))
        try:
            if not leader:
                await batch.done.wait()
                if batch.error is not None:
                    raise OSError(f"webhook outbox write failed: {batch.error!r}")
                return
            try:
                async with self._lock:
                    self._batch = None  # what arrives from now on goes in the next batch
                    await trio.to_thread.run_sync(self._write_batch, batch.writes)
            except BaseException as exc:
                batch.error = exc
                raise
            finally:
                if self._batch is batch:
                    self._batch = None
                batch.done.set()
        finally:
            self._landed(job)

    def _write_batch(self, writes: list[tuple[str, tuple[Any, ...]]]) -> None:
        db = self._write
        assert db is not None, "SqliteOutbox written before open()"
        db.execute("BEGIN")
        try:
            for sql, args in writes:
                db.execute(sql, args)
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    async def delivered(self, job: Job) -> None:
        await self._settle(
            job,
            "UPDATE webhook_outbox SET state = 'delivered', settled_at = ?,"
            " attempts = attempts + 1, last_error = NULL WHERE id = ?",
            (time.time(), job.handle),
        )

    async def retry(self, job: Job, delay_s: float, error: str) -> None:
        await self._settle(
            job,
            "UPDATE webhook_outbox SET due_at = ?, attempts = attempts + 1, last_error = ?"
            " WHERE id = ?",
            (time.time() + delay_s, error, job.handle),
        )

    async def give_up(self, job: Job, error: str) -> None:
        await self._settle(
            job,
            "UPDATE webhook_outbox SET state = 'failed', settled_at = ?,"
            " attempts = attempts + 1, last_error = ? WHERE id = ?",
            (time.time(), error, job.handle),
        )

    async def release(self, job: Job) -> None:
        self._landed(job)  # the row is still pending as it was
        await trio.lowlevel.checkpoint()

    async def failed(self, limit: int = 100) -> list[WebhookItem]:
        assert self._read is not None, "SqliteOutbox.failed() before open()"
        rows = self._read.execute(
            f"SELECT {_COLUMNS} FROM webhook_outbox WHERE state = 'failed' ORDER BY id LIMIT ?",
            (limit,),
        ).fetchall()
        await trio.lowlevel.checkpoint()
        return [_item(r) for r in rows]

    async def replay(self, endpoint: str | None = None, limit: int | None = None) -> int:
        now = time.time()
        where = "state = 'failed'" + (" AND endpoint = ?" if endpoint else "")
        args: list[Any] = [now, now] + ([endpoint] if endpoint else [])
        n = await self._execute(
            "UPDATE webhook_outbox SET state = 'pending', due_at = ?, created_at = ?,"
            f" attempts = 0, settled_at = NULL WHERE id IN (SELECT id FROM webhook_outbox"
            f" WHERE {where} ORDER BY id LIMIT ?)",
            (*args, -1 if limit is None else limit),
        )
        self._ready.clear()  # replayed rows may now come first in their emails
        for name in list(self._wake):
            self._poke(name)
        return n

    async def counts(self) -> dict[str, dict[str, int]]:
        """Rows by endpoint and state (the console)."""
        assert self._read is not None, "SqliteOutbox.counts() before open()"
        out: dict[str, dict[str, int]] = {}
        rows = self._read.execute(
            "SELECT endpoint, state, COUNT(*) FROM webhook_outbox GROUP BY endpoint, state"
        ).fetchall()
        for endpoint, state, n in rows:
            out.setdefault(endpoint, {})[state] = n
        await trio.lowlevel.checkpoint()
        return out

"""The email server's durable record of what it handed to a provider.

Before sending, a sender looks the eventId up; if it is recorded, the
recorded status is published again and nothing is sent. After the provider
answered (accepted, or refused for good), the outcome is recorded, and only
then is the status published and the delivery acked. So a redelivered or
republished EmailSendEvent never sends twice. The one window left: a crash
after the provider accepted the message and before the record is written
(a few milliseconds); the email is then sent again on redelivery.

One SQLite file (WAL) is shared by the workers on a machine. Lookups are
primary-key reads on the event loop's thread (microseconds: cheaper than a
thread hop); writes are batched and run in a worker thread.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import msgspec
import trio

from .batching import BatchingActor, Flush
from .schema import EmailStatusEvent
from .sqlite_file import SqliteFile

_decoder = msgspec.json.Decoder(EmailStatusEvent)
_encoder = msgspec.json.Encoder()


class SentLog(SqliteFile):
    schema = "CREATE TABLE IF NOT EXISTS sent (event_id TEXT PRIMARY KEY, status BLOB NOT NULL)"

    def lookup(self, event_id: str) -> EmailStatusEvent | None:
        """The recorded outcome for ``event_id``, if it was handed to a provider."""
        assert self._read is not None, "SentLog.lookup() before open()"
        row = self._read.execute("SELECT status FROM sent WHERE event_id = ?", (event_id,)).fetchone()
        return _decoder.decode(row[0]) if row else None

    async def record_many(self, statuses: Sequence[EmailStatusEvent]) -> None:
        """Record outcomes durably (one transaction); the first record of an eventId wins."""
        rows = [(s.event_id, _encoder.encode(s)) for s in statuses]

        def write() -> None:
            assert self._write is not None, "SentLog.record_many() before open()"
            with self._write:
                self._write.execute("BEGIN IMMEDIATE")
                self._write.executemany("INSERT OR IGNORE INTO sent VALUES (?, ?)", rows)

        async with self._lock:
            await trio.to_thread.run_sync(write)


class Record(msgspec.Struct, frozen=True):
    status: EmailStatusEvent


class SentRecorder(BatchingActor[EmailStatusEvent]):
    """Batches writes to the SentLog; each ``ask(Record)`` returns once durable."""

    accepts: ClassVar[tuple[type, ...]] = (Record, Flush)

    def __init__(self, log: SentLog, batch_size: int = 256, batch_ms: float = 2.0) -> None:
        super().__init__(batch_size, batch_ms)
        self.log = log

    async def receive(self, msg: Record | Flush) -> None:
        if type(msg) is Record:
            await self.add(msg.status, self.ctx.reply_later())
        else:
            await self.on_flush_message(msg)  # type: ignore[arg-type]

    async def flush(self, items: list[EmailStatusEvent]) -> list[None]:
        await self.log.record_many(items)
        return [None] * len(items)

"""What the feedback sink must remember across restarts and share between processes.

Two things: the reports already applied (so a repeated SNS MessageId, or a DSN
delivered twice, is applied once: counted once, suppressed once) and the soft
bounces of each address (counted in a sliding window, suppressed after N). In the
embedded profile they live in a SQLite file (``feedback.ledger_path``); in the
distributed profile in an Elasticsearch index (``feedback.ledger_index``,
``actors.feedback.ledger_elasticsearch``), so whichever integration process
takes a report sees the others'.

Soft bounces are keyed by the report that made them, so a repeat never counts twice.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

import trio

from actors.stores.sqlite_file import SqliteFile

__all__ = ["FeedbackLedger", "SqliteLedger"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS feedback_seen (key TEXT PRIMARY KEY, at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS soft_bounces (
  address TEXT NOT NULL, key TEXT NOT NULL, at TEXT NOT NULL, PRIMARY KEY (address, key));
CREATE INDEX IF NOT EXISTS soft_bounces_at ON soft_bounces (address, at);
"""


class FeedbackLedger(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def seen(self, key: str) -> bool:
        """Whether the report ``key`` was applied already."""
        ...

    async def mark_seen(self, key: str, at: datetime) -> None:
        """Record that ``key`` was applied (after it was, so a crash before repeats it)."""
        ...

    async def add_soft_bounce(self, address: str, key: str, at: datetime) -> int:
        """Record one soft bounce (once per ``key``); the address's soft bounces since
        ``at - window`` are counted by :meth:`soft_bounces`."""
        ...

    async def soft_bounces(self, address: str, since: datetime) -> int: ...


class SqliteLedger(SqliteFile):
    """:class:`FeedbackLedger` in a SQLite file (WAL; writes in a worker thread)."""

    schema = _SCHEMA

    async def seen(self, key: str) -> bool:
        assert self._read is not None, "SqliteLedger.seen() before open()"
        await trio.lowlevel.checkpoint()
        row = self._read.execute("SELECT 1 FROM feedback_seen WHERE key = ?", (key,)).fetchone()
        return row is not None

    async def mark_seen(self, key: str, at: datetime) -> None:
        await self._execute(
            "INSERT OR IGNORE INTO feedback_seen VALUES (?, ?)", (key, at.isoformat())
        )

    async def add_soft_bounce(self, address: str, key: str, at: datetime) -> int:
        return await self._execute(
            "INSERT OR IGNORE INTO soft_bounces VALUES (?, ?, ?)", (address, key, at.isoformat())
        )

    async def soft_bounces(self, address: str, since: datetime) -> int:
        assert self._read is not None, "SqliteLedger.soft_bounces() before open()"
        await trio.lowlevel.checkpoint()
        (n,) = self._read.execute(
            "SELECT COUNT(*) FROM soft_bounces WHERE address = ? AND at >= ?",
            (address, since.isoformat()),
        ).fetchone()
        return int(n)

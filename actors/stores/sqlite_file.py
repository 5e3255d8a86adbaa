"""A small SQLite file shared by the workers of one machine: WAL, a read and a write connection.

Reads are primary-key lookups on the event loop's thread (microseconds: cheaper
than a thread hop); writes run in a worker thread under a lock.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import ClassVar, Self

import trio


class SqliteFile:
    schema: ClassVar[str]  # run once at open (CREATE TABLE IF NOT EXISTS ...; may be a script)

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._read: sqlite3.Connection | None = None
        self._write: sqlite3.Connection | None = None
        self._lock = trio.Lock()

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=5.0)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        return db

    async def open(self) -> None:
        def setup() -> None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._write = self._connect()
            self._write.executescript(self.schema)
            self._read = self._connect()

        await trio.to_thread.run_sync(setup)

    async def close(self) -> None:
        async with self._lock:
            for db in (self._read, self._write):
                if db is not None:
                    await trio.to_thread.run_sync(db.close)
            self._read = self._write = None

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

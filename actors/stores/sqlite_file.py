"""A small SQLite file shared by the workers of one machine: WAL, a read and a write connection.

Reads are primary-key lookups on the event loop's thread (microseconds: cheaper
than a thread hop); writes run in a worker thread under a lock.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar, Self, TypeVar

import trio

_T = TypeVar("_T")


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

    async def _in_writer(self, write: Callable[[sqlite3.Connection], _T]) -> _T:
        """``write(connection)`` in a worker thread, one writer at a time (written once for
        every table on a shared file)."""

        def run() -> _T:
            assert self._write is not None, f"{type(self).__name__} written before open()"
            return write(self._write)

        async with self._lock:
            return await trio.to_thread.run_sync(run)

    async def _execute(self, sql: str, args: Sequence[Any] = (), *, many: bool = False) -> int:
        """One write statement (``many``: once per row of ``args``); the rows it changed."""

        def write(db: sqlite3.Connection) -> int:
            return int((db.executemany(sql, args) if many else db.execute(sql, args)).rowcount)

        return await self._in_writer(write)

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

"""The suppression list: addresses that refused email for good, never contacted again.

When a provider refuses an email permanently *for its recipient* (a 5xx reply
to RCPT TO, or to the DATA of a one-recipient transaction), the sender adds
the address here before it reports FAILED. Every later email to the address
ends SUPPRESSED without the provider being contacted: sending to it again
could only bounce again, and repeated bounces hurt the sender's reputation.

In the embedded profile it lives in the same SQLite file as the claims
(``email_server.idempotency_path``), in its own table, so every worker on the
machine shares it (WAL: many readers, one writer at a time). Lookups are
primary-key reads on the event loop's thread (microseconds); writes are rare (one per
bounce) and run in a worker thread. Addresses are compared case-insensitively. Operators
edit it with ``supervisor.py suppression list|add ADDR|remove ADDR``, also while the
services run. An address not in the list is answered from memory: the addresses are
read again when the file changed, which a lookup asks the file (``PRAGMA data_version``)
at most every ``recheck_s`` (50 ms), and at once after a write by any list of this
process; so an operator's edit from another process counts within 50 ms.

An entry is for every category (``category = ""``: a hard bounce, an operator's
entry) or for one category (an unsubscribe from a newsletter, a complaint about
it): a password reset still reaches an address that left the newsletter. A
lookup names the email's category and finds either kind.
"""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import ClassVar, Protocol

import msgspec
import trio

from actors.domain.edges import Failure, SendResult
from actors.stores.sqlite_file import SqliteFile

__all__ = [
    "ALL_CATEGORIES",
    "CATEGORY_PAUSE",
    "Suppressions",
    "SuppressionList",
    "Suppressed",
    "is_recipient_refusal",
    "normalize",
]

# ``suppressions`` replaced ``suppressed`` (one entry per address) when entries got a
# category; a file written before is carried over at open, its entries for every category.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS suppressions (
  address TEXT NOT NULL, category TEXT NOT NULL, reason TEXT NOT NULL, added_at TEXT NOT NULL,
  event_id TEXT, source TEXT NOT NULL, PRIMARY KEY (address, category));
CREATE TABLE IF NOT EXISTS suppressed (
  address TEXT PRIMARY KEY, reason TEXT NOT NULL, added_at TEXT NOT NULL,
  event_id TEXT, source TEXT NOT NULL);
INSERT OR IGNORE INTO suppressions
  SELECT address, '', reason, added_at, event_id, source FROM suppressed;
DROP TABLE suppressed;
"""
_COLUMNS = "address, category, reason, added_at, event_id, source"
ALL_CATEGORIES = ""
# The entry for this "address" in a category pauses the whole category (actors.feedback:
# a complaint rate over its threshold); no real address can be "*".
CATEGORY_PAUSE = "*"


class Suppressed(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    address: str
    reason: str
    added_at: datetime
    event_id: str | None = None  # the email whose refusal added it (None: an operator)
    source: str = "bounce"  # "bounce", "operator", "complaint", "unsubscribe", ...
    category: str = ALL_CATEGORIES  # "" = every category


def normalize(address: str) -> str:
    return address.strip().lower()


def is_recipient_refusal(result: SendResult) -> bool:
    """A permanent 5xx refusal of the recipient: RCPT TO, or DATA (one recipient per email).

    Failures before RCPT (the sender refused, an unbuildable message, no
    SMTPUTF8) say nothing about the address and do not count.
    """
    return (
        result.failure is Failure.PERMANENT
        and result.code is not None
        and 500 <= result.code < 600
        and getattr(result, "stage", None) in ("RCPT", "DATA")
    )


class Suppressions(Protocol):
    """What senders use: this SQLite list, or
    ``actors.email_server.suppression_elasticsearch`` (distributed)."""

    def lookup(self, address: str, category: str = ALL_CATEGORIES) -> Suppressed | None: ...

    def blocking(self, recipient: str, category: str) -> Suppressed | None:
        """What stops an email of ``category`` to ``recipient``: the recipient's entry
        (every category, or this one), else a pause of ``category``, else None."""
        ...

    async def add(
        self,
        address: str,
        reason: str,
        *,
        event_id: str | None = None,
        source: str = "bounce",
        category: str = ALL_CATEGORIES,
    ) -> bool: ...


class SuppressionList(SqliteFile):
    schema = _SCHEMA
    # Above this many entries the addresses are not kept in memory (a lookup reads the file).
    max_cached: int = 200_000
    # How often a lookup asks the file whether another process changed it: a query on
    # the event loop's thread lets worker threads take the GIL, which cost the embedded
    # pipeline ~4% of its main thread when asked on every lookup (bench embedded_e2e).
    recheck_s: float = 0.05
    # Writes by the lists of this process, per file: a write is seen by the next lookup.
    _writes: ClassVar[dict[Path, int]] = {}

    def __init__(self, path: str | Path) -> None:
        super().__init__(path)
        self._version = -1  # the file's data_version when _addresses was read
        self._addresses: frozenset[str] | None = None  # every address with an entry
        self._checked_at = -math.inf
        self._writes_seen = -1

    def _known_addresses(self) -> frozenset[str] | None:
        """The addresses with an entry, read again when the file changed since; None when
        there are too many to keep (the caller reads the file)."""
        assert self._read is not None, "SuppressionList used before open()"
        now = time.monotonic()
        writes = self._writes.get(self.path, 0)
        if now - self._checked_at < self.recheck_s and writes == self._writes_seen:
            return self._addresses
        self._checked_at, self._writes_seen = now, writes
        version = self._read.execute("PRAGMA data_version").fetchone()[0]
        if version != self._version:
            rows = self._read.execute(
                "SELECT DISTINCT address FROM suppressions LIMIT ?", (self.max_cached + 1,)
            ).fetchall()
            self._addresses = (
                frozenset(r[0] for r in rows) if len(rows) <= self.max_cached else None
            )
            self._version = version
        return self._addresses

    def lookup(self, address: str, category: str = ALL_CATEGORIES) -> Suppressed | None:
        """The entry that stops an email of ``category`` to ``address``, if any.

        An entry for every category wins over one for ``category`` (primary-key reads).
        """
        assert self._read is not None, "SuppressionList.lookup() before open()"
        row = self._read.execute(
            f"SELECT {_COLUMNS} FROM suppressions WHERE address = ? AND category IN ('', ?)"
            " ORDER BY category LIMIT 1",
            (normalize(address), category),
        ).fetchone()
        return _entry(row) if row else None

    def blocking(self, recipient: str, category: str) -> Suppressed | None:
        # One query for both lookups (each email asks, on the event loop): the recipient's
        # own entry first, then a pause of the category (address "*").
        assert self._read is not None, "SuppressionList.blocking() before open()"
        address = normalize(recipient)
        known = self._known_addresses()
        if known is not None and address not in known and CATEGORY_PAUSE not in known:
            return None
        row = self._read.execute(
            f"SELECT {_COLUMNS} FROM suppressions WHERE address IN (?, ?) AND category IN ('', ?)"
            " ORDER BY address = ?, category LIMIT 1",
            (address, CATEGORY_PAUSE, category, CATEGORY_PAUSE),
        ).fetchone()
        return _entry(row) if row else None

    async def add(
        self,
        address: str,
        reason: str,
        *,
        event_id: str | None = None,
        source: str = "bounce",
        category: str = ALL_CATEGORIES,
    ) -> bool:
        """Suppress ``address`` (for ``category``, or all) durably; False if it already was."""
        now = datetime.now(UTC).isoformat()
        row = (normalize(address), category, reason, now, event_id, source)
        sql = "INSERT OR IGNORE INTO suppressions VALUES (?, ?, ?, ?, ?, ?)"
        try:
            return await self._execute(sql, row) == 1
        finally:
            self._wrote()

    async def remove(self, address: str, category: str | None = None) -> bool:
        """Let ``address`` receive email again (of ``category``; None: every entry for it).

        False if there was no such entry.
        """
        where = "address = ?" if category is None else "address = ? AND category = ?"
        args = (normalize(address),) if category is None else (normalize(address), category)
        try:
            return await self._execute(f"DELETE FROM suppressions WHERE {where}", args) >= 1
        finally:
            self._wrote()

    def _wrote(self) -> None:
        self._writes[self.path] = self._writes.get(self.path, 0) + 1

    async def entries(self, limit: int = 1000) -> list[Suppressed]:
        """Suppression entries, newest first."""

        def read() -> list[Suppressed]:
            assert self._read is not None, "SuppressionList.entries() before open()"
            rows = self._read.execute(
                f"SELECT {_COLUMNS} FROM suppressions ORDER BY added_at DESC, address LIMIT ?",
                (limit,),
            ).fetchall()
            return [_entry(r) for r in rows]

        return await trio.to_thread.run_sync(read)


def _entry(row: tuple[str, str, str, str, str | None, str]) -> Suppressed:
    address, category, reason, added_at, event_id, source = row
    return Suppressed(
        address=address,
        category=category,
        reason=reason,
        added_at=datetime.fromisoformat(added_at),
        event_id=event_id,
        source=source,
    )

"""Claims in a SQLite file: the embedded profile's shared record (``actors.stores.claims``).

The file is ``email_server.idempotency_path``, shared by every process on the
machine that opens it (WAL). A batch of claims is one ``BEGIN IMMEDIATE``
transaction, so two processes claiming the same eventId are serialized by
SQLite's write lock: one inserts, the other finds the row. Each row carries a
version, bumped on every write; an outcome is written only where the version
is still the one its owner claimed.

The table of the earlier record (``sent``: eventId -> outcome) is read into
the claims table at open, so outcomes recorded before the upgrade still count.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import msgspec

from actors.domain.schema import EmailStatusEvent
from actors.stores.claims import (
    Claim,
    ClaimDecision,
    ClaimState,
    OneRoundTrip,
    Settle,
    new_owner,
    owner_dead,
)
from actors.stores.sqlite_file import SqliteFile

__all__ = ["SqliteClaims"]

_decoder = msgspec.json.Decoder(EmailStatusEvent)
_encoder = msgspec.json.Encoder()

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS claims ("
    " event_id TEXT PRIMARY KEY, owner TEXT NOT NULL, lease_until REAL NOT NULL,"
    " state TEXT NOT NULL, version INTEGER NOT NULL, outcome BLOB)"
)


class SqliteClaims(SqliteFile, OneRoundTrip):
    """:class:`actors.stores.claims.ClaimStore` in one SQLite file."""

    schema = _SCHEMA

    def __init__(
        self, path: str | Path, owner: str | None = None, *, clock: Callable[[], float] = time.time
    ) -> None:
        super().__init__(path)
        self.clock = clock  # wall clock of leases (a test passes a fake)
        self.owner = owner or new_owner()

    async def open(self) -> None:
        await super().open()

        def migrate(db: sqlite3.Connection) -> None:
            old = db.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'sent'"
            ).fetchone()
            if old:
                db.execute(
                    "INSERT OR IGNORE INTO claims"
                    " SELECT event_id, '', 0, 'done', 1, status FROM sent"
                )

        await self._in_writer(migrate)

    async def write(
        self, event_ids: Sequence[str], lease_s: float, settles: Sequence[Settle]
    ) -> tuple[list[Claim], list[bool]]:
        """Outcomes, then claims, in one transaction (one thread hop, one commit)."""
        owner = self.owner
        rows = [
            (
                ClaimState.DONE if s.outcome is not None else ClaimState.RELEASED,
                _encoder.encode(s.outcome) if s.outcome is not None else None,
                s.claim.event_id,
                int(s.claim.token),
                owner,
            )
            for s in settles
        ]

        def write(db: sqlite3.Connection) -> tuple[list[Claim], list[bool]]:
            now = self.clock()
            until = now + lease_s
            with db:
                db.execute("BEGIN IMMEDIATE")
                kept = [
                    db.execute(
                        "UPDATE claims SET state = ?, outcome = ?, version = version + 1"
                        " WHERE event_id = ? AND version = ? AND owner = ?",
                        row,
                    ).rowcount
                    == 1
                    for row in rows
                ]
                claims = [_claim_one(db, e, owner, now, until) for e in event_ids]
            return claims, kept

        return await self._in_writer(write)

    async def outcome(self, event_id: str) -> EmailStatusEvent | None:
        assert self._read is not None, "SqliteClaims.outcome() before open()"
        row = self._read.execute(
            "SELECT outcome FROM claims WHERE event_id = ? AND state = 'done'", (event_id,)
        ).fetchone()
        return _decoder.decode(row[0]) if row and row[0] is not None else None


def _claim_one(
    db: sqlite3.Connection, event_id: str, owner: str, now: float, until: float
) -> Claim:
    row = db.execute(
        "SELECT owner, lease_until, state, version, outcome FROM claims WHERE event_id = ?",
        (event_id,),
    ).fetchone()
    if row is None:
        db.execute(
            "INSERT INTO claims VALUES (?, ?, ?, ?, 1, NULL)",
            (event_id, owner, until, ClaimState.SENDING),
        )
        return Claim(event_id=event_id, decision=ClaimDecision.SEND, token="1")
    held_by, lease_until, state, version, outcome = row
    if state == ClaimState.DONE:
        return Claim(
            event_id=event_id, decision=ClaimDecision.OUTCOME, outcome=_decoder.decode(outcome)
        )
    if state == ClaimState.SENDING and lease_until > now and not owner_dead(held_by):
        return Claim(
            event_id=event_id,
            decision=ClaimDecision.HELD,
            owner=held_by,
            lease_left_s=lease_until - now,
        )
    db.execute(
        "UPDATE claims SET owner = ?, lease_until = ?, state = ?, version = ? WHERE event_id = ?",
        (owner, until, ClaimState.SENDING, version + 1, event_id),
    )
    # A released claim is free; a sending one whose owner died may have been sent.
    decision = ClaimDecision.TAKEOVER if state == ClaimState.SENDING else ClaimDecision.SEND
    return Claim(event_id=event_id, decision=decision, token=str(version + 1), owner=held_by)

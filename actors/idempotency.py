"""The email server's side of the claims record (``actors.claims``): two batching actors.

* ``claimer`` claims eventIds for the senders, just before each contacts the
  provider. Concurrent claims go as one batch (one ``BEGIN IMMEDIATE``, or one
  ``_bulk``); a batch is written as soon as the mailbox is empty, so a lone
  claim never waits for others.
* ``recorder`` writes outcomes into the claims (or releases them, after a
  transient failure), also as soon as its mailbox is empty: an accepted
  email's outcome is durable one write after the provider's reply, never
  after a batch fills. Each ``ask`` returns once its write is durable, and only
  then is the status published and the delivery acked.

The window that remains (provider acceptance to durable outcome) is measured
per email in :class:`WindowStats` and shown by the senders' report.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import ClassVar

import msgspec

from .batching import BatchingActor, Flush
from .claims import Claim, ClaimStore, Settle

__all__ = ["ClaimAsk", "Claimer", "OutcomeRecorder", "WindowStats"]

log = logging.getLogger("mailactors.claims")


class ClaimAsk(msgspec.Struct, frozen=True):
    event_id: str


class Claimer(BatchingActor[str]):
    """Batches claims; each ``ask(ClaimAsk)`` is answered with its :class:`Claim`."""

    accepts: ClassVar[tuple[type, ...]] = (ClaimAsk, Flush)

    def __init__(self, claims: ClaimStore, lease_s: float, batch_size: int = 256) -> None:
        super().__init__(batch_size, 2.0)
        self.claims = claims
        self.lease_s = lease_s

    async def started(self) -> None:
        self.ctx.report(lambda: {"batches": self.flushes, "claims": self.flushed})

    async def receive(self, msg: ClaimAsk | Flush) -> None:
        if type(msg) is ClaimAsk:
            await self.add(msg.event_id, self.ctx.reply_later())
        else:
            await self.on_flush_message(msg)  # type: ignore[arg-type]

    async def flush(self, items: list[str]) -> list[Claim]:
        return await self.claims.claim_many(items, self.lease_s)


class OutcomeRecorder(BatchingActor[Settle]):
    """Batches outcome writes; each ``ask(Settle)`` answers True, or False if the claim was lost."""

    accepts: ClassVar[tuple[type, ...]] = (Settle, Flush)

    def __init__(self, claims: ClaimStore, batch_size: int = 256) -> None:
        super().__init__(batch_size, 2.0)
        self.claims = claims
        self.lost = 0

    async def started(self) -> None:
        self.ctx.report(lambda: {"batches": self.flushes, "outcomes": self.flushed, "lost": self.lost})

    async def receive(self, msg: Settle | Flush) -> None:
        if type(msg) is Settle:
            await self.add(msg, self.ctx.reply_later())
        else:
            await self.on_flush_message(msg)  # type: ignore[arg-type]

    async def flush(self, items: list[Settle]) -> list[bool]:
        kept = await self.claims.settle_many(items)
        for settle, ok in zip(items, kept, strict=True):
            if not ok:
                self.lost += 1
                log.warning(
                    "claim lost before its outcome was recorded (taken over: lease expired)",
                    extra={"event_id": settle.claim.event_id},
                )
        return kept


class WindowStats:
    """Provider acceptance to durable outcome, per email: the window a crash can fall into."""

    def __init__(self, keep: int = 20_000) -> None:
        self.samples: deque[float] = deque(maxlen=keep)
        self.count = 0

    def note(self, seconds: float) -> None:
        self.samples.append(seconds)
        self.count += 1

    def report(self) -> dict[str, object]:
        if not self.samples:
            return {"count": 0}
        ordered = sorted(self.samples)

        def pct(p: float) -> float:
            return round(ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000, 3)

        return {"count": self.count, "p50_ms": pct(0.50), "p99_ms": pct(0.99), "max_ms": pct(1.0)}

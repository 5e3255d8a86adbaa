"""The email server's side of the claims record (``actors.stores.claims``): one batching actor.

``claims`` takes the senders' claims (each just before its sender contacts the
provider) and their outcomes (or releases, after a transient failure), and
writes whatever it holds in one round trip (one ``_bulk``, or one SQLite
transaction): measured on the Elasticsearch API, the cost is mostly per
request, and one request for both halves it. A batch is written as soon as the
mailbox is empty (group commit), so a lone claim or an accepted email's
outcome never waits for others, and never for a batch to fill. Each ``ask``
returns once its write is durable; only then does a sender contact the
provider, or publish the status and ack the delivery.

The window that remains (provider acceptance to durable outcome) is measured
per email in :class:`WindowStats` and shown by the senders' report.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import ClassVar

import msgspec

from actors.stores.batching import BatchingActor, Flush
from actors.stores.claims import Claim, ClaimStore, Settle

__all__ = ["ClaimAsk", "ClaimMany", "ClaimsWriter", "SettleMany", "WindowStats"]

log = logging.getLogger("mailactors.claims")


class ClaimAsk(msgspec.Struct, frozen=True):
    event_id: str


class ClaimMany(msgspec.Struct, frozen=True):
    """Several claims in one ask (a sender's batch): answered with their Claims, in order."""

    event_ids: list[str]


class SettleMany(msgspec.Struct, frozen=True):
    """Several outcomes in one ask: answered with one bool each, in order."""

    settles: list[Settle]


class ClaimsWriter(BatchingActor[ClaimAsk | Settle]):
    """Answers ``ask(ClaimAsk)`` with a :class:`Claim`, ``ask(Settle)`` with True (recorded)
    or False (the claim was lost: taken over after its lease); :class:`ClaimMany` and
    :class:`SettleMany` with a list of those."""

    accepts: ClassVar[tuple[type, ...]] = (ClaimAsk, Settle, ClaimMany, SettleMany, Flush)
    # Under load (the last write less than batch_ms ago) a batch waits up to batch_ms for
    # more: senders paced by the provider ask one at a time, and one request per claim cost
    # the Elasticsearch API 4x its CPU per email (measured, bench distributed_e2e). Under
    # light load nothing waits.
    linger = True

    def __init__(
        self, claims: ClaimStore, lease_s: float, batch_ms: float = 5.0, batch_size: int = 256
    ) -> None:
        super().__init__(batch_size, batch_ms)
        self.claims = claims
        self.lease_s = lease_s
        self.claimed = 0
        self.settled = 0
        self.lost = 0

    async def started(self) -> None:
        self.ctx.report(
            lambda: {
                "batches": self.flushes,
                "claims": self.claimed,
                "outcomes": self.settled,
                "lost": self.lost,
                "store_retries": self.store_retries,
            }
        )

    def collect(self, msg: ClaimAsk | Settle | ClaimMany | SettleMany, index: int) -> None:
        if isinstance(msg, ClaimMany):
            self.put_many([ClaimAsk(e) for e in msg.event_ids], self.ctx.reply_later(index))
        elif isinstance(msg, SettleMany):
            self.put_many(list(msg.settles), self.ctx.reply_later(index))
        else:
            self.put(msg, self.ctx.reply_later(index))

    async def flush(self, items: list[ClaimAsk | Settle]) -> list[Claim | bool]:
        asks = [i.event_id for i in items if type(i) is ClaimAsk]
        settles = [i for i in items if type(i) is Settle]
        # Nothing may be sent without its claim: while the store is down, senders wait (and
        # the consumer, its mailboxes full, stops taking from the bus) until it is back.
        claims, kept = await self.write_until_stored(
            lambda: self.claims.write(asks, self.lease_s, settles),
            log,
            "claims store",
            f"{len(items)} writes",
            max_delay=5.0,
        )
        self.claimed += len(asks)
        self.settled += len(settles)
        for settle, ok in zip(settles, kept, strict=True):
            if not ok:
                self.lost += 1
                log.warning(
                    "claim lost before its outcome was recorded (taken over: lease expired)",
                    extra={"event_id": settle.claim.event_id},
                )
        answers = iter(claims)
        outcomes = iter(kept)
        return [next(answers) if type(i) is ClaimAsk else next(outcomes) for i in items]


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

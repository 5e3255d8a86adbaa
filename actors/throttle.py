"""Token buckets, and the throttler actor that hands out permission to send.

The throttler never blocks its mailbox: each request reserves its tokens at
once (a bucket may go into debt) and is answered when the debt is paid, so
requests for an idle domain are not held up behind a busy one.
"""

from __future__ import annotations

from typing import ClassVar

import msgspec
import trio

from runtime import Actor, Reply


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up."""

    __slots__ = ("rate", "burst", "tokens", "stamp", "waiting")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = now
        self.waiting = 0

    def reserve(self, now: float) -> float:
        """Take one token; return how long to wait before using it (0 if now)."""
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        self.tokens -= 1.0
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate

    def set_rate(self, rate: float) -> None:
        self.rate = rate

    def info(self) -> dict[str, float]:
        return {"rate": self.rate, "burst": self.burst, "tokens": round(self.tokens, 3), "waiting": self.waiting}


class Acquire(msgspec.Struct, frozen=True):
    """Ask for permission to send one email to ``domain``."""

    domain: str


class Throttler(Actor[Acquire]):
    """Limits sends per provider and per recipient domain."""

    accepts: ClassVar[tuple[type, ...]] = (Acquire,)
    mailbox: ClassVar[int] = 1024

    def __init__(self, rate: float, burst: int, per_domain: dict[str, float]) -> None:
        self.rate = rate
        self.burst = burst
        self.per_domain = per_domain
        self.waits = 0

    async def started(self) -> None:
        now = trio.current_time()
        self.provider = TokenBucket(self.rate, self.burst, now) if self.rate > 0 else None
        # A domain limit is strict: a burst of 1 keeps every 1 s window at most the rate.
        self.domains = {d: TokenBucket(r, max(1.0, r / 10), now) for d, r in self.per_domain.items()}
        self.ctx.report(self._report)

    def _report(self) -> dict[str, object]:
        buckets: dict[str, object] = {d: b.info() for d, b in self.domains.items()}
        if self.provider is not None:
            buckets["provider"] = self.provider.info()
        return {"buckets": buckets, "waits": self.waits}

    async def receive(self, msg: Acquire) -> None:
        now = trio.current_time()
        wait = 0.0
        buckets = []
        if self.provider is not None:
            buckets.append(self.provider)
        domain = self.domains.get(msg.domain)
        if domain is not None:
            buckets.append(domain)
        for b in buckets:
            wait = max(wait, b.reserve(now))
        if wait <= 0:
            return  # answered at once
        self.waits += 1
        reply = self.ctx.reply_later()
        self.ctx.start_soon(self._release, reply, wait, buckets)

    async def _release(self, reply: Reply, wait: float, buckets: list[TokenBucket]) -> None:
        for b in buckets:
            b.waiting += 1
        try:
            await trio.sleep(wait)
        finally:
            for b in buckets:
                b.waiting -= 1
        reply.set(None)


def domain_of(address: str) -> str:
    return address.rpartition("@")[2].lower()


__all__ = ["Acquire", "Throttler", "TokenBucket", "domain_of"]

"""Rate limits: the provider's token bucket, strict per-domain windows, adaptive slow-down.

Three limits, each for a different promise:

* **Provider** (``throttle.rate`` / ``burst``): a token bucket. The provider's
  contract allows a burst, then the rate.
* **Recipient domain** (``throttle.per_domain``): strict. In *any* window of one
  second at most ``floor(rate)`` emails reach the domain's server (at most one
  per ``1/rate`` seconds when the rate is below 1/s). A token bucket cannot
  promise that (a full bucket plus a second of refill is ``burst + rate`` in one
  second), and neither can spacing the grants: an SMTP exchange that takes
  longer than the next one moves its message closer to the next. So a send
  holds its slot from its grant until the sender reports it done, and for one
  window after that (:class:`DomainLimit`): the server accepts each message
  between those two moments, so it can never see more than ``floor(rate)`` in
  one window, however long each exchange took.
* **Adaptive** (``throttle.adaptive``): a reply that asks us to slow down (421,
  454, 4.7.x: :attr:`Failure.THROTTLED`) halves the provider rate at once
  (at most once a second, so one burst of refusals counts once), down to
  ``min_rate``; every second without one gives back ``recover_per_s``
  (additive increase) until the configured rate is reached again. With no
  configured rate (unlimited), the rate observed when the first refusal came
  is halved, and the limit is lifted once it has grown back to that rate.

The throttler never blocks its mailbox: each request reserves its slot at once
(a bucket may go into debt, a window log may book a future time) and is
answered when that time comes, so requests for an idle domain are not held up
behind a busy one. Senders ask it only while a limit applies
(:attr:`ThrottleGate.active`): with no configured limit and no adaptive
slow-down in force a send costs no message to the throttler.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from typing import Any, ClassVar

import msgspec
import trio

from runtime import Actor, Reply

DOMAIN_GUARD_S = 0.0  # extra seconds on each domain window (the lease makes it strict without)
LEASE_S = 120.0  # a granted send not reported done frees its slot after this long


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up."""

    __slots__ = ("rate", "burst", "tokens", "stamp", "waiting")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = now
        self.waiting = 0

    def _refill(self, now: float) -> None:
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    def reserve(self, now: float) -> float:
        """Take one token; return how long to wait before using it (0 if now)."""
        self._refill(now)
        self.tokens -= 1.0
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate

    def set_rate(self, rate: float, now: float | None = None) -> None:
        """Change the rate from ``now`` on (what accrued so far accrued at the old rate)."""
        if now is not None:
            self._refill(now)
        self.rate = rate

    def info(self) -> dict[str, float]:
        return {
            "rate": round(self.rate, 3),
            "burst": self.burst,
            "tokens": round(self.tokens, 3),
            "waiting": self.waiting,
        }


class DomainLimit:
    """At most ``limit`` sends to a domain in any ``window`` seconds, counted strictly.

    ``rate >= 1``: ``limit = floor(rate)`` per ``1 + guard`` seconds; ``rate < 1``: one
    per ``1/rate + guard`` seconds. A send occupies its slot from the moment it is
    granted until the sender reports it done (a lease), and then for ``window``
    more seconds. A new send is granted only while fewer than ``limit`` slots are
    occupied. The receiving server accepts a message after it was granted and
    before the sender hears back, so any ``window`` seconds of the server's clock
    see at most ``limit`` of them, whatever each SMTP exchange took. A lease not
    reported done (a sender that crashed) ends ``lease_s`` after it was granted.
    """

    __slots__ = (
        "rate", "limit", "window", "lease_s", "leases", "done", "queue", "timer_at", "waiting"
    )  # fmt: skip

    def __init__(
        self, rate: float, guard: float = DOMAIN_GUARD_S, lease_s: float = LEASE_S
    ) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be positive, got {rate}")
        self.rate = rate
        self.limit = max(1, math.floor(rate + 1e-9))
        self.window = (1.0 if rate >= 1 else 1.0 / rate) + guard
        self.lease_s = lease_s
        self.leases: dict[int, float] = {}  # grant id -> when it was granted
        self.done: list[float] = []  # completion times still inside the window, sorted
        self.queue: deque[Any] = deque()  # requests waiting for a slot, in order
        self.timer_at: float | None = None
        self.waiting = 0

    def _tidy(self, now: float) -> None:
        for grant, at in list(self.leases.items()):
            if at + self.lease_s <= now:  # never reported: its sender is gone
                del self.leases[grant]
                bisect.insort(self.done, at + self.lease_s)
        cut = bisect.bisect_right(self.done, now - self.window)
        del self.done[:cut]

    def next_free(self, now: float) -> float | None:
        """When a send may be granted: ``now``, a later time, or None (after a completion)."""
        self._tidy(now)
        busy = len(self.leases) + len(self.done)
        if busy < self.limit:
            return now
        if len(self.leases) >= self.limit:
            return min(self.leases.values()) + self.lease_s if self.leases else None
        return self.done[busy - self.limit] + self.window

    def grant(self, grant: int, now: float) -> None:
        self.leases[grant] = now

    def release(self, grant: int, now: float) -> None:
        if self.leases.pop(grant, None) is not None:
            bisect.insort(self.done, now)

    def tokens(self, now: float) -> int:
        """Slots free now; negative: how many requests wait for one."""
        self._tidy(now)
        return self.limit - len(self.leases) - len(self.done) - len(self.queue)

    def info(self, now: float) -> dict[str, float]:
        return {
            "rate": self.rate,
            "per_window": self.limit,
            "window_s": round(self.window, 3),
            "in_flight": len(self.leases),
            "tokens": self.tokens(now),
            "waiting": len(self.queue) + self.waiting,
        }


class AdaptiveRate:
    """Multiplicative decrease on "slow down", additive increase after (AIMD).

    ``ceiling`` is the configured rate (0: unlimited). :meth:`rate` is the rate
    in force now, or None when no adaptive limit applies.
    """

    __slots__ = (
        "ceiling",
        "min_rate",
        "recover_per_s",
        "hold_s",
        "base",
        "stamp",
        "target",
        "hold_until",
        "decreases",
    )

    def __init__(
        self, ceiling: float, min_rate: float = 1.0, recover_per_s: float = 1.0, hold_s: float = 1.0
    ) -> None:
        self.ceiling = ceiling
        self.min_rate = min_rate
        self.recover_per_s = recover_per_s
        self.hold_s = hold_s
        self.base: float | None = None  # the rate set at the last decrease
        self.stamp = 0.0  # when it was set
        self.target = ceiling  # the rate to grow back to
        self.hold_until = -math.inf
        self.decreases = 0

    def rate(self, now: float) -> float | None:
        if self.base is None:
            return None
        grown = self.base + self.recover_per_s * max(0.0, now - self.stamp)
        if grown >= self.target:
            self.base = None  # recovered: the configured limit (or none) again
            return None
        return grown

    def slow_down(self, now: float, observed: float) -> bool:
        """A provider asked us to slow down; return True if the rate was lowered."""
        if now < self.hold_until:
            return False  # the same burst of refusals: it counts once
        current = self.rate(now)
        if current is None:
            if self.ceiling > 0:
                current = self.ceiling
                self.target = self.ceiling
            else:
                current = max(observed, 2 * self.min_rate)
                self.target = current
        self.base = max(self.min_rate, current / 2)
        self.stamp = now
        self.hold_until = now + self.hold_s
        self.decreases += 1
        return True


class ThrottleGate:
    """Shared by the senders and the throttler of one email server (one Trio thread).

    Says whether to ask the throttler at all, and counts what goes to the
    provider per second (the rate to halve when an unlimited provider asks us
    to slow down).
    """

    __slots__ = ("static", "adaptive", "second", "this_second", "last_second")

    def __init__(self, static: bool) -> None:
        self.static = static  # a configured provider rate or domain limit
        self.adaptive = False  # an adaptive slow-down is in force
        self.second = 0
        self.this_second = 0
        self.last_second = 0

    @property
    def active(self) -> bool:
        return self.static or self.adaptive

    def note_send(self, now: float) -> None:
        second = math.floor(now)
        if second != self.second:
            self.last_second = self.this_second if second == self.second + 1 else 0
            self.this_second = 0
            self.second = second
        self.this_second += 1

    def observed(self, now: float) -> float:
        """Emails per second handed to the provider lately (the last full second)."""
        second = math.floor(now)
        if second == self.second:
            return float(max(self.last_second, self.this_second))
        return float(self.this_second if second == self.second + 1 else 0)


class Acquire(msgspec.Struct, frozen=True):
    """Ask for permission to send one email to ``domain``.

    The answer is a grant id (an int) when the domain is limited, else None. A
    grant must be given back with :class:`Done` once the provider answered.
    """

    domain: str


class Done(msgspec.Struct, frozen=True):
    """The send granted as ``grant`` is over (send, not ask)."""

    domain: str
    grant: int


class SlowDown(msgspec.Struct, frozen=True):
    """A provider answered "slow down" to an email for ``domain`` (send, not ask)."""

    domain: str


class _Tick(msgspec.Struct, frozen=True):
    domain: str


class Throttler(Actor[Acquire | Done | SlowDown | _Tick]):
    """Limits sends per provider and per recipient domain; slows down when told to."""

    accepts: ClassVar[tuple[type, ...]] = (Acquire, Done, SlowDown, _Tick)
    mailbox: ClassVar[int] = 1024

    def __init__(
        self,
        rate: float,
        burst: int,
        per_domain: dict[str, float],
        *,
        adaptive: bool = True,
        min_rate: float = 1.0,
        recover_per_s: float = 1.0,
        gate: ThrottleGate | None = None,
        guard: float = DOMAIN_GUARD_S,
        lease_s: float = LEASE_S,
    ) -> None:
        self.rate = rate
        self.burst = burst
        self.per_domain = per_domain
        self.adaptive_on = adaptive
        self.min_rate = min_rate
        self.recover_per_s = recover_per_s
        self.gate = gate if gate is not None else ThrottleGate(rate > 0 or bool(per_domain))
        self.guard = guard
        self.lease_s = lease_s
        self.waits = 0
        self.slow_downs = 0
        self.grants = 0

    async def started(self) -> None:
        now = trio.current_time()
        self.provider = TokenBucket(self.rate, self.burst, now) if self.rate > 0 else None
        self.domains = {
            d: DomainLimit(r, self.guard, self.lease_s) for d, r in self.per_domain.items()
        }
        self.adaptive = AdaptiveRate(self.rate, self.min_rate, self.recover_per_s)
        self.gate.adaptive = False
        self.ctx.report(self._report)

    def _report(self) -> dict[str, object]:
        now = trio.current_time()
        buckets: dict[str, object] = {d: b.info(now) for d, b in self.domains.items()}
        if self.provider is not None:
            buckets["provider"] = self.provider.info()
        return {
            "buckets": buckets,
            "waits": self.waits,
            "slow_downs": self.slow_downs,
            "adaptive_rate": self.adaptive.rate(now),
        }

    def _provider_bucket(self, now: float) -> TokenBucket | None:
        """The provider bucket at the rate in force now (configured, or adapted)."""
        if not self.adaptive_on:
            return self.provider
        adapted = self.adaptive.rate(now)
        if adapted is None:
            self.gate.adaptive = False
            if self.provider is not None and self.provider.rate != self.rate:
                if self.rate > 0:
                    self.provider.set_rate(self.rate, now)
                else:
                    self.provider = None  # unlimited again
            return self.provider
        if self.provider is None:
            self.provider = TokenBucket(adapted, 1, now)
        else:
            self.provider.set_rate(adapted, now)
        return self.provider

    async def receive(self, msg: Acquire | Done | SlowDown | _Tick) -> int | None:
        now = trio.current_time()
        kind = type(msg)
        if kind is Acquire:
            domain = self.domains.get(msg.domain)
            if domain is None:
                self._answer(self.ctx.reply_later(), None, now)
                return None
            if domain.queue:
                self.waits += 1  # behind others for this domain
            domain.queue.append(self.ctx.reply_later())
            self._pump(msg.domain, now)
        elif kind is Done:
            domain = self.domains.get(msg.domain)
            if domain is not None:
                domain.release(msg.grant, now)  # type: ignore[union-attr]
                self._pump(msg.domain, now)
        elif kind is _Tick:
            domain = self.domains.get(msg.domain)
            if domain is not None:
                domain.timer_at = None
                self._pump(msg.domain, now)
        elif self.adaptive_on and self.adaptive.slow_down(now, self.gate.observed(now)):
            self.slow_downs += 1
            self.gate.adaptive = True
            self._provider_bucket(now)
        return None

    def _pump(self, name: str, now: float) -> None:
        """Grant the waiting requests of domain ``name`` that may go now, in order."""
        domain = self.domains[name]
        while domain.queue:
            at = domain.next_free(now)
            if at is None:
                return  # a Done wakes us
            if at > now:
                if domain.timer_at is None or at < domain.timer_at:
                    domain.timer_at = at
                    self.ctx.start_soon(self._tick, name, at)
                if len(domain.queue) == 1:
                    self.waits += 1
                return
            reply = domain.queue.popleft()
            self.grants += 1
            domain.grant(self.grants, now)
            self._answer(reply, self.grants, now)

    def _answer(self, reply: Reply, grant: int | None, now: float) -> None:
        """Answer ``reply`` with ``grant`` once the provider's bucket allows a send."""
        provider = self._provider_bucket(now)
        wait = provider.reserve(now) if provider is not None else 0.0
        if wait <= 0:
            reply.set(grant)
            return
        self.waits += 1
        self.ctx.start_soon(self._release, reply, wait, grant, provider)

    async def _tick(self, name: str, at: float) -> None:
        await trio.sleep_until(at)
        await self.ctx.self_ref.send(_Tick(name))

    async def _release(
        self, reply: Reply, wait: float, grant: int | None, bucket: TokenBucket | None
    ) -> None:
        if bucket is not None:
            bucket.waiting += 1
        try:
            await trio.sleep(wait)
        finally:
            if bucket is not None:
                bucket.waiting -= 1
        reply.set(grant)


def domain_of(address: str) -> str:
    return address.rpartition("@")[2].lower()


__all__ = [
    "Acquire",
    "AdaptiveRate",
    "Done",
    "DomainLimit",
    "SlowDown",
    "ThrottleGate",
    "Throttler",
    "TokenBucket",
    "domain_of",
]

"""What the senders of one email server share to keep the delivery promises.

* the throttle gate: whether a send must ask the throttler first, and what
  the provider was sent lately (``actors.throttle``);
* connection slots: at most ``throttle.max_connections`` sends talk to the
  provider at once, whatever the number of senders;
* the suppression list (``actors.suppression``);
* the eventIds in flight in this process: a second copy of an email that is
  being sent right now (a sweeper republish, a redelivery racing its first
  delivery) is acked and dropped instead of being sent alongside the first.
  The durable record (``actors.idempotency``) covers copies that come later.

One object per email-server tree, used from its one Trio thread: no locks.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import trio

from .suppression import SuppressionList
from .throttle import ThrottleGate

__all__ = ["SendGuards", "open_send_guards", "throttle_options"]


class SendGuards:
    def __init__(
        self,
        *,
        gate: ThrottleGate | None = None,
        max_connections: int = 0,
        suppression: SuppressionList | None = None,
    ) -> None:
        self.gate = gate if gate is not None else ThrottleGate(False)
        self.connections = trio.Semaphore(max_connections) if max_connections > 0 else None
        self.max_connections = max_connections
        self.suppression = suppression
        self.in_flight: set[str] = set()
        self.concurrent_repeats = 0
        self.suppressed = 0

    @contextlib.contextmanager
    def claim(self, event_id: str) -> Iterator[bool]:
        """True (and held for the block) unless another sender has ``event_id`` in hand."""
        if event_id in self.in_flight:
            self.concurrent_repeats += 1
            yield False
            return
        self.in_flight.add(event_id)
        try:
            yield True
        finally:
            self.in_flight.discard(event_id)

    def slot(self) -> trio.Semaphore | contextlib.nullcontext[None]:
        """``async with guards.slot():`` around each call to the provider."""
        return self.connections if self.connections is not None else contextlib.nullcontext()

    def report(self) -> dict[str, object]:
        out: dict[str, object] = {
            "in_flight": len(self.in_flight),
            "concurrent_repeats": self.concurrent_repeats,
            "suppressed": self.suppressed,
        }
        if self.connections is not None:
            out["connections_busy"] = self.max_connections - self.connections.value
        return out


@contextlib.asynccontextmanager
async def open_send_guards(config: Any) -> AsyncIterator[SendGuards]:
    """The guards of one email server, from a Config (the suppression list opened)."""
    async with SuppressionList(config.email_server.idempotency_path) as suppression:
        yield SendGuards(max_connections=config.throttle.max_connections, suppression=suppression)


def throttle_options(config: Any) -> dict[str, Any]:
    """``email_server_tree`` keyword arguments for the adaptive throttle, from a Config."""
    t = config.throttle
    return {"adaptive": t.adaptive, "min_rate": t.min_rate, "recover_per_s": t.recover_per_s}

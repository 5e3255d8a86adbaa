"""What the senders of one email server share to keep the delivery promises.

* the throttle gate: whether a send must ask the throttler first, and what
  the provider was sent lately (``actors.email_server.throttle``);
* connection slots: at most ``throttle.max_connections`` sends talk to the
  provider at once, whatever the number of senders;
* the suppression list (``actors.email_server.suppression``);
* the eventIds in flight in this process: a second copy of an email that is
  being sent right now (a sweeper republish, a redelivery racing its first
  delivery) waits for the first to finish instead of being sent alongside it;
  then the shared claims (``actors.stores.claims``) answer it, or, when the
  first ended RETRYING (its retry already scheduled), it is acked and dropped;
* what the claims did: copies held off, takeovers of dead owners' claims and
  what became of them, and the window from provider acceptance to a durable
  outcome (``actors.email_server.idempotency.WindowStats``).

One object per email-server tree, used from its one Trio thread: no locks.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import trio

from actors.email_server.idempotency import WindowStats
from actors.email_server.suppression import SuppressionList, Suppressions
from actors.email_server.throttle import ThrottleGate

__all__ = ["SendGuards", "open_send_guards", "throttle_options"]


class _Flight:
    __slots__ = ("done", "retrying")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.retrying = False  # ended RETRYING: its retry is scheduled


class SendGuards:
    def __init__(
        self,
        *,
        gate: ThrottleGate | None = None,
        max_connections: int = 0,
        suppression: Suppressions | None = None,
    ) -> None:
        self.gate = gate if gate is not None else ThrottleGate(False)
        self.connections = trio.Semaphore(max_connections) if max_connections > 0 else None
        self.max_connections = max_connections
        self.suppression = suppression
        self.in_flight: dict[str, _Flight] = {}
        self.concurrent_repeats = 0
        self.suppressed = 0
        self.suppressed_copies = 0  # cc/bcc addresses left out of an email: suppressed
        self.window = WindowStats()
        self.held = 0  # copies that found a live claim elsewhere and look again later
        self.claims_lost = 0  # outcomes not recorded: the claim was taken over meanwhile
        self.takeovers = 0  # claims of dead owners taken over (outcome unknown)
        self.found_sent = 0  # ... which the provider said it had: not sent again
        self.unknown_resent = 0  # ... sent again (policy resend): at most this many duplicates
        self.unknown_failed = 0  # ... ended FAILED (policy fail)

    async def wait_turn(self, event_id: str) -> bool:
        """Wait while another sender of this process has ``event_id`` in hand.

        False when that one ended with a retry scheduled: this copy is redundant
        (drop it). True otherwise: go on, and :meth:`hold` it; the durable record
        answers a copy of an email that was sent meanwhile.
        """
        while (other := self.in_flight.get(event_id)) is not None:
            self.concurrent_repeats += 1
            await other.done.wait()
            if other.retrying:
                return False
        return True

    @contextlib.contextmanager
    def hold(self, event_id: str) -> Iterator[_Flight]:
        """Mark ``event_id`` in hand for the block (call right after :meth:`wait_turn`)."""
        flight = self.in_flight[event_id] = _Flight()
        try:
            yield flight
        finally:
            del self.in_flight[event_id]
            flight.done.set()

    def slot(self) -> trio.Semaphore | contextlib.nullcontext[None]:
        """``async with guards.slot():`` around each call to the provider."""
        return self.connections if self.connections is not None else contextlib.nullcontext()

    def report(self) -> dict[str, object]:
        out: dict[str, object] = {
            "in_flight": len(self.in_flight),
            "concurrent_repeats": self.concurrent_repeats,
            "suppressed": self.suppressed,
            "suppressed_copies": self.suppressed_copies,
            "claims": {
                "held": self.held,
                "lost": self.claims_lost,
                "takeovers": self.takeovers,
                "found_sent": self.found_sent,
                "unknown_resent": self.unknown_resent,
                "unknown_failed": self.unknown_failed,
            },
            "window": self.window.report(),
        }
        if self.connections is not None:
            out["connections_busy"] = self.max_connections - self.connections.value
        return out


def open_suppression(config: Any) -> Any:
    """The suppression list every worker that may send an email shares: the SQLite file of
    the embedded profile, or an Elasticsearch index beside the claims
    (``actors.email_server.suppression_elasticsearch``)."""
    if config.store.kind == "sqlite":
        return SuppressionList(config.email_server.idempotency_path)
    from actors.email_server.suppression_elasticsearch import (
        ElasticsearchSuppression,
        suppression_index,
    )

    return ElasticsearchSuppression(
        config.store.resolved_url(),
        suppression_index(config.email_server.claims_index),
        refresh_s=config.email_server.suppression_refresh_s,
        request_timeout=config.store.request_timeout_s,
    )


@contextlib.asynccontextmanager
async def open_send_guards(config: Any) -> AsyncIterator[SendGuards]:
    """The guards of one email server, from a Config (the suppression list opened)."""
    async with open_suppression(config) as suppression, trio.open_nursery() as nursery:
        if hasattr(suppression, "keep_fresh"):
            await nursery.start(suppression.keep_fresh)
        yield SendGuards(max_connections=config.throttle.max_connections, suppression=suppression)
        nursery.cancel_scope.cancel()


def throttle_options(config: Any) -> dict[str, Any]:
    """``email_server_tree`` keyword arguments for the adaptive throttle, from a Config."""
    t = config.throttle
    return {"adaptive": t.adaptive, "min_rate": t.min_rate, "recover_per_s": t.recover_per_s}

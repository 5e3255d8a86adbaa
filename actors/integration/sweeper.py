"""The outbox sweeper: re-publishes emails that something dropped on the way.

Auth saves a document (PENDING) and only then publishes its EmailSendEvent. A
crash between the two, or a publish that failed after the save, leaves a
document that no send event will ever move: the sweeper finds documents still
PENDING ``pending_age_s`` after they were created and publishes their send
event again. In the embedded profile the bus and the retry waits live in
memory, so a crash of the process also drops every email in flight: there the
sweeper also re-publishes

* documents created before this process started and still PENDING, or
  SENDING with no news since before it started (nothing in memory is
  carrying them any more), at once;
* documents SENDING with no news for ``stuck_grace_s``;
* documents RETRYING whose next attempt (``nextAttemptAt``, recorded with the
  RETRYING status) is ``stuck_grace_s`` overdue, or was due before the
  process started.

In the distributed profile the broker holds sends, redeliveries and retry
waits durably, so only PENDING documents are swept.

Re-publishing is always safe: the email server's claims (``actors.stores.claims``),
shared by every worker, answer a copy of an email that was sent with the
recorded outcome, without sending it again, and hold off a copy that arrives
while the first is being sent.

It runs every ``interval_s`` (first at start-up), publishes at most ``rate``
events per second (evenly spaced), and at most ``rate * interval_s`` per sweep
so that a sweep never outlasts its interval. The embedded profile's first
sweep is the exception: what a killed process left unfinished is published
at once, at the bus's pace (measured: 500 emails back in flight well within
two seconds, where 50/s took ten). A store or bus outage skips the
rest of a sweep; the next one tries again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import msgspec
import trio

from actors.domain.edges import Bus, BusError, SearchQuery, Store, StoreUnavailable
from actors.domain.schema import EmailDocument, EmailSendEvent, Status
from runtime import Actor

log = logging.getLogger("mailactors.sweeper")

STARTUP_BUDGET = 100_000  # emails the embedded start-up sweep may republish

__all__ = ["OutboxSweeper", "SweepNow", "SweepReport", "SweeperSettings", "sweeper_settings"]


class SweeperSettings(msgspec.Struct, frozen=True, kw_only=True):
    pending_age_s: float = 300.0
    rate: float = 50.0
    interval_s: float = 30.0
    stuck_grace_s: float = 60.0
    # A RETRYING document with no recorded due time is due at the latest this long
    # after its last update (retry.max_delay_s).
    max_delay_s: float = 300.0


def sweeper_settings(config: Any) -> SweeperSettings | None:
    """The sweeper's settings from a Config (None when ``sweeper.enabled`` is false)."""
    s = config.sweeper
    if not s.enabled:
        return None
    return SweeperSettings(
        pending_age_s=s.pending_age_s,
        rate=s.rate,
        interval_s=s.interval_s,
        stuck_grace_s=s.stuck_grace_s,
        max_delay_s=config.retry.max_delay_s,
    )


class SweepNow(msgspec.Struct, frozen=True):
    """Ask for a sweep now (tests, tools); answered with its :class:`SweepReport`."""


class SweepReport(msgspec.Struct, frozen=True):
    pending: int = 0
    sending: int = 0
    retrying: int = 0
    error: str | None = None

    @property
    def total(self) -> int:
        return self.pending + self.sending + self.retrying


def _utcnow() -> datetime:
    return datetime.now(UTC)


class OutboxSweeper(Actor[SweepNow]):
    accepts: ClassVar[tuple[type, ...]] = (SweepNow,)
    mailbox: ClassVar[int] = 16

    def __init__(
        self,
        store: Store,
        bus: Bus,
        settings: SweeperSettings,
        *,
        wall: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.store = store
        self.bus = bus
        self.settings = settings
        self.wall = wall  # the clock documents are stamped with (a test passes a fake)
        self.sweeps = 0
        self.republished = {"pending": 0, "sending": 0, "retrying": 0}
        self.last_error: str | None = None

    async def started(self) -> None:
        # Nothing in memory carries an email stamped before this moment (embedded).
        self.started_at = self.wall()
        self.durable = bool(getattr(self.bus, "durable_delay", False))
        self.next_at = trio.current_time()
        self.lock = trio.Lock()  # one sweep at a time (the timer's, or a SweepNow)
        self.paced = True
        self.ctx.report(
            lambda: {
                "sweeps": self.sweeps,
                "republished": dict(self.republished),
                "last_error": self.last_error,
            }
        )
        self.ctx.start_soon(self._loop)

    async def receive(self, msg: SweepNow) -> SweepReport:
        return await self.sweep()

    async def _loop(self) -> None:
        while True:
            await self.sweep()
            await trio.sleep(self.settings.interval_s)

    async def sweep(self) -> SweepReport:
        async with self.lock:
            counts = {"pending": 0, "sending": 0, "retrying": 0}
            error: str | None = None
            try:
                await self._sweep(counts)
            except (StoreUnavailable, BusError) as exc:
                error = f"{type(exc).__name__}: {exc}"
                log.warning("outbox sweep stopped early: %s", error)
            self.sweeps += 1
            self.last_error = error
            for k, v in counts.items():
                self.republished[k] += v
            if any(counts.values()):
                log.info("outbox sweep re-published %s", counts)
            return SweepReport(counts["pending"], counts["sending"], counts["retrying"], error)

    async def _sweep(self, counts: dict[str, int]) -> None:
        s = self.settings
        budget = max(1, int(s.rate * s.interval_s))
        # Embedded start-up: nothing else carries what the previous process had in hand.
        self.paced = self.durable or self.sweeps > 0
        if not self.paced:
            budget = max(budget, STARTUP_BUDGET)
        now = self.wall()
        before = now - timedelta(seconds=s.pending_age_s)
        if not self.durable:
            before = max(before, self.started_at)
        for doc in await self.store.pending_older_than(before, budget):
            await self._republish(doc.to_send_event())
            counts["pending"] += 1
            budget -= 1
        if self.durable or budget <= 0:
            return
        grace = timedelta(seconds=s.stuck_grace_s)
        silent_since = max(now - grace, self.started_at)
        async for doc in self._documents(Status.SENDING):
            if budget <= 0:
                return
            if doc.updated_at < silent_since:
                await self._republish(_resend(doc, max(1, doc.attempts)))
                counts["sending"] += 1
                budget -= 1
        latest = timedelta(seconds=s.max_delay_s)
        async for doc in self._documents(Status.RETRYING):
            if budget <= 0:
                return
            due = doc.next_attempt_at or doc.updated_at + latest
            orphan = doc.updated_at < self.started_at and due <= now
            if orphan or due < now - grace:
                await self._republish(_resend(doc, doc.attempts + 1))
                counts["retrying"] += 1
                budget -= 1

    async def _documents(self, status: Status) -> Any:
        token = ""
        while True:
            page = await self.store.search(
                SearchQuery(status=status, page_size=500, page_token=token)
            )
            for doc in page.documents:
                yield doc
            token = page.next_page_token
            if not token:
                return

    async def _republish(self, event: EmailSendEvent) -> None:
        """Publish at most ``rate`` per second, evenly spaced (unpaced at start-up, embedded)."""
        if self.paced:
            at = max(trio.current_time(), self.next_at)
            await trio.sleep_until(at)
            self.next_at = at + 1.0 / self.settings.rate
        await self.bus.publish_send(event)
        log.debug("re-published (attempt %d)", event.attempt, extra={"event_id": event.event_id})


def _resend(doc: EmailDocument, attempt: int) -> EmailSendEvent:
    return msgspec.structs.replace(doc.to_send_event(), attempt=attempt)

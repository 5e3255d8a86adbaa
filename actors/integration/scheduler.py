"""The due-scanner: publishes scheduled emails (``send_at``) once they are due.

A scheduled email is saved SCHEDULED, with its ``send_at``, and nothing is
published for it. This actor asks the store for SCHEDULED documents due before
now, moves each to PENDING and only then publishes its send event, so from there
on it is an ordinary email (the outbox sweeper covers a crash between the two).
It then sleeps until the soonest email not yet due, or ``interval_s``, whichever
comes first; a newly saved email due sooner wakes it (:class:`Wake`, sent by the
document writer).

Why the store and not the broker or memory: the store already holds every
document durably in both profiles, so a scheduled email survives any restart
with no second copy to keep in step, and cancelling is one conditional status
change in the store (SCHEDULED -> CANCELLED), which the move to PENDING races
safely: :func:`actors.domain.edges.apply_status` allows only one of the two, and
both stores apply it atomically (a transaction; optimistic concurrency). A
broker delay tier would need a message per email that cannot be taken back, and
RabbitMQ's delays are per queue (TTL) or a plugin that is not durable across a
node loss.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import ClassVar

import msgspec
import trio

from actors.domain.edges import ApplyOutcome, Bus, BusError, Store, StoreUnavailable
from actors.domain.schema import EmailDocument, EmailStatusEvent, Status
from runtime import Actor

log = logging.getLogger("mailactors.scheduler")

__all__ = ["ScanNow", "ScheduleReport", "ScheduledSender", "Wake"]

APPLIED = ApplyOutcome.APPLIED
BATCH = 500  # documents moved to PENDING per store call
# A store whose search is near-real-time (Elasticsearch: a refresh a second) may not show an
# email saved just before it fell due: the scan after a Wake is repeated once this much later.
RECHECK_S = 1.5


class Wake(msgspec.Struct, frozen=True):
    """A scheduled email was saved, due at ``send_at``: look then, if that is sooner."""

    send_at: datetime


class ScanNow(msgspec.Struct, frozen=True):
    """Scan now (tests, tools); answered with a :class:`ScheduleReport`."""


class ScheduleReport(msgspec.Struct, frozen=True):
    published: int = 0
    cancelled_meanwhile: int = 0  # due, but cancelled (or moved) before this scan got to it
    error: str | None = None


def _utcnow() -> datetime:
    return datetime.now(UTC)


class ScheduledSender(Actor[Wake | ScanNow]):
    accepts: ClassVar[tuple[type, ...]] = (Wake, ScanNow)
    mailbox: ClassVar[int] = 1024

    def __init__(
        self,
        store: Store,
        bus: Bus,
        interval_s: float = 30.0,
        *,
        wall: Callable[[], datetime] = _utcnow,
        retry_s: float = 1.0,
    ) -> None:
        self.store = store
        self.bus = bus
        self.interval_s = interval_s
        self.wall = wall
        self.retry_s = retry_s
        self.published = 0
        self.scans = 0
        self.last_error: str | None = None
        # Moved to PENDING but not published (the bus refused): published first at the next
        # scan. Only a crash loses this list; then the outbox sweeper finds them PENDING.
        self.unpublished: dict[str, EmailDocument] = {}

    async def started(self) -> None:
        self.lock = trio.Lock()  # one scan at a time
        self.next_due: datetime | None = None  # the soonest the store holds, not yet due
        self.wake_at: datetime | None = None  # the soonest a Wake told of
        self.recheck_at: datetime | None = None  # one more look after a Wake's time
        self.woken = trio.Event()
        self.ctx.report(
            lambda: {
                "published": self.published,
                "scans": self.scans,
                "next_due": self.next_due.isoformat() if self.next_due else None,
                "last_error": self.last_error,
                "unpublished": len(self.unpublished),
            }
        )
        self.ctx.start_soon(self._loop)

    async def receive(self, msg: Wake | ScanNow) -> ScheduleReport | None:
        if isinstance(msg, ScanNow):
            return await self.scan()
        if self.wake_at is None or msg.send_at < self.wake_at:
            self.wake_at = msg.send_at
            self.woken.set()
        return None

    def _due_in(self) -> float | None:
        """Seconds until the soonest known email is due (None: none known)."""
        known = [t for t in (self.next_due, self.wake_at, self.recheck_at) if t is not None]
        if not known:
            return None
        return (min(known) - self.wall()).total_seconds()

    async def _loop(self) -> None:
        while True:
            report = await self.scan()
            pause = self.interval_s if report.error is None else min(self.retry_s, self.interval_s)
            deadline = trio.current_time() + pause
            while True:
                self.woken = trio.Event()
                wait = deadline - trio.current_time()
                due_in = self._due_in()
                if due_in is not None:
                    wait = min(wait, due_in)
                if wait <= 0:
                    break
                with trio.move_on_after(wait):
                    await self.woken.wait()  # a Wake: work the wait out again

    async def scan(self) -> ScheduleReport:
        async with self.lock:
            published = cancelled = 0
            error: str | None = None
            try:
                published, cancelled = await self._scan()
            except (StoreUnavailable, BusError) as exc:
                error = f"{type(exc).__name__}: {exc}"
                log.warning("scheduled-send scan stopped early: %s", error)
            self.scans += 1
            self.last_error = error
            return ScheduleReport(published, cancelled, error)

    async def _publish(self, doc: EmailDocument) -> None:
        await self.bus.publish_send(doc.to_send_event())
        self.unpublished.pop(doc.event_id, None)
        self.published += 1
        log.debug("scheduled email due: published", extra={"event_id": doc.event_id})

    async def _scan(self) -> tuple[int, int]:
        published = cancelled = 0
        for doc in list(self.unpublished.values()):
            await self._publish(doc)
            published += 1
        while True:
            now = self.wall()
            horizon = now + timedelta(seconds=self.interval_s)
            docs = await self.store.scheduled_before(horizon, BATCH)
            due = [d for d in docs if d.send_at is not None and d.send_at <= now]
            later = [d.send_at for d in docs if d.send_at is not None and d.send_at > now]
            self.next_due = min(later) if later else None
            if self.recheck_at is not None and self.recheck_at <= now:
                self.recheck_at = None
            if self.wake_at is not None and self.wake_at <= now:
                self.recheck_at = self.wake_at + timedelta(seconds=RECHECK_S)
                self.wake_at = None
            if not due:
                return published, cancelled
            # PENDING first, then publish: a cancel that won the race keeps it unsent.
            results = await self.store.apply_status_many(
                [
                    EmailStatusEvent(
                        event_id=d.event_id, status=Status.PENDING, attempt=0, occurred_at=now
                    )
                    for d in due
                ]
            )
            moved = [doc for doc, r in zip(due, results, strict=True) if r.outcome is APPLIED]
            cancelled += len(due) - len(moved)
            self.unpublished.update((doc.event_id, doc) for doc in moved)  # before any publish
            for doc in moved:
                await self._publish(doc)
                published += 1
            if len(due) < BATCH or not moved:  # not moved: a store still showing old ones
                return published, cancelled


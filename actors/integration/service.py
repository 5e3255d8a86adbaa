"""The integration service: owner and only writer of email documents.

Tree (one_for_one)::

    integration/
      writer      batches SaveEmail into store.save_many
      updater     batches status events into store.apply_status_many, then acks them
      status-consumer  takes EmailStatusEvents off the bus, refuses undecodable ones
      sweeper     re-publishes emails left PENDING (and, embedded, stuck in flight)
      scheduler   publishes SCHEDULED emails once their send_at is due
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Sequence
from functools import partial
from typing import Any, ClassVar, Protocol

import msgspec
import trio

from actors.domain.edges import (
    ApplyOutcome,
    ApplyResult,
    Bus,
    Delivery,
    SaveResult,
    SearchPage,
    SearchQuery,
    Store,
    StoreUnavailable,
)
from actors.domain.event_checks import screen_status_delivery
from actors.domain.schema import EmailDocument, EmailStatusEvent, Status
from actors.integration.scheduler import ScheduledSender, Wake
from actors.integration.sweeper import OutboxSweeper, SweeperSettings
from actors.stores.batching import BatchingActor, Flush
from actors.telemetry.logs import Sampled
from runtime import (
    Actor,
    ActorNotFound,
    ActorRef,
    ActorStopped,
    ChildSpec,
    MailboxFull,
    SupervisorSpec,
)

log = logging.getLogger("mailactors.integration")


class SaveEmail(msgspec.Struct, frozen=True):
    document: EmailDocument


class SaveEmails(msgspec.Struct, frozen=True):
    """Several documents, answered with their SaveResults in order (one reply)."""

    documents: list[EmailDocument]


class StatusUpdate(msgspec.Struct, frozen=True):
    event: EmailStatusEvent
    delivery: Any  # edges.Delivery, acked once the store has the update


class StatusListener(Protocol):
    """Told of each batch just before it is stored (webhooks: an outbox written first);
    raises StoreUnavailable while it cannot take them, and the batch waits."""

    async def statuses_to_apply(self, events: Sequence[EmailStatusEvent]) -> None: ...

    async def status_applied(self, event: EmailStatusEvent) -> None:
        """A status stored outside the batches (CancelEmail's CANCELLED)."""
        ...


class TerminalWatch:
    """Wakes whoever waits for an email to reach a terminal status (CLI, tests)."""

    def __init__(self) -> None:
        self._events: dict[str, trio.Event] = {}
        self.terminal = 0  # terminal statuses recorded by this process
        self._counted = trio.Event()

    def event(self, event_id: str) -> trio.Event:
        return self._events.setdefault(event_id, trio.Event())

    def notify(self, event_id: str) -> None:
        self.terminal += 1
        self._counted.set()
        event = self._events.pop(event_id, None)
        if event is not None:
            event.set()

    async def wait_count(self, n: int) -> None:
        """Wait until this process has recorded ``n`` terminal statuses (benchmarks)."""
        while self.terminal < n:
            self._counted = trio.Event()
            await self._counted.wait()

    def discard(self, event_id: str) -> None:
        self._events.pop(event_id, None)


class DocumentWriter(BatchingActor[EmailDocument]):
    """Saves documents in batches; answers each SaveEmail with its SaveResult."""

    accepts: ClassVar[tuple[type, ...]] = (SaveEmail, SaveEmails, Flush)

    def __init__(self, store: Store, batch_size: int = 500, batch_ms: float = 10.0) -> None:
        super().__init__(batch_size, batch_ms)
        self.store = store

    async def started(self) -> None:
        self.ctx.report(lambda: {"batches": self.flushes, "documents": self.flushed})

    def collect(self, msg: SaveEmail | SaveEmails, index: int) -> None:
        if type(msg) is SaveEmail:
            self.put(msg.document, self.ctx.reply_later(index))
        else:
            self.put_many(msg.documents, self.ctx.reply_later(index))  # type: ignore[union-attr]

    async def flush(self, items: list[EmailDocument]) -> list[SaveResult]:
        results = await self.store.save_many(items)
        for r in results:
            if r.created:
                log.debug("saved PENDING", extra={"event_id": r.document.event_id})
        self._wake_scheduler(results)
        return results

    def _wake_scheduler(self, results: list[SaveResult]) -> None:
        """Tell the due-scanner of the soonest scheduled email saved (it may sleep past it)."""
        due = [
            r.document.send_at
            for r in results
            if r.created and r.document.status is Status.SCHEDULED and r.document.send_at
        ]
        if due:
            try:
                self.ctx.lookup("scheduler").send_nowait(Wake(min(due)))
            except (ActorNotFound, ActorStopped, MailboxFull):  # no scheduler (a bare tree),
                pass  # or it is busy: its next scan finds the email anyway


class StatusUpdater(BatchingActor[StatusUpdate]):
    """Applies status events in batches and acks them only once they are stored.

    While the store is unavailable the batch is kept and retried with backoff;
    the mailbox fills and the consumer stops taking from the bus, so the
    broker keeps what is not yet stored. Nothing is acked before it is durable.
    """

    accepts: ClassVar[tuple[type, ...]] = (StatusUpdate, Flush)
    linger = True  # nobody waits on a status update but the broker: fewer, larger writes

    def __init__(
        self,
        store: Store,
        bus: Bus,
        watch: TerminalWatch,
        batch_size: int = 500,
        batch_ms: float = 20.0,
        retry_max_s: float = 5.0,
        listener: StatusListener | None = None,
    ) -> None:
        super().__init__(batch_size, batch_ms)
        self.store = store
        self.bus = bus  # the deliveries' bus: acks the batch at once
        self.watch = watch
        self.retry_max_s = retry_max_s
        self.listener = listener
        self.outcomes: dict[str, int] = {o.value: 0 for o in ApplyOutcome}
        self.orphans: deque[str] = deque(maxlen=20)  # the latest eventIds without a document
        self._orphan_lines = Sampled(10.0)

    async def started(self) -> None:
        self.ctx.report(
            lambda: {
                "outcomes": dict(self.outcomes),
                "unknown_emails": list(self.orphans),
                "store_retries": self.store_retries,
                "batches": self.flushes,
                "updates": self.flushed,
            }
        )

    def collect(self, msg: StatusUpdate, index: int) -> None:
        self.put(msg, None)

    async def flush(self, items: list[StatusUpdate]) -> list[None]:
        events = [u.event for u in items]
        if self.listener is not None:  # webhooks: queued durably before the store has them
            listener = self.listener
            await self.write_until_stored(
                lambda: listener.statuses_to_apply(events), log, "webhook queue",
                f"{len(events)} status events", max_delay=self.retry_max_s,
            )  # fmt: skip
        results: list[ApplyResult] = await self.write_until_stored(
            lambda: self.store.apply_status_many(events),
            log,
            "store",
            f"{len(events)} status updates",
            max_delay=self.retry_max_s,
        )
        for update, result in zip(items, results, strict=True):
            self.outcomes[result.outcome.value] += 1
            event = update.event
            ids = {"event_id": event.event_id}
            if result.outcome is ApplyOutcome.NOT_FOUND:
                # Nothing silent: a send event published around auth (no document), or a
                # document deleted. Acked (retrying cannot create the document), but seen.
                self.orphans.append(event.event_id)
                unsaid = self._orphan_lines.take()  # a flood says one line per 10 s
                log.log(
                    logging.DEBUG if unsaid is None else logging.WARNING,
                    "status %s not applied: no email with this eventId%s",
                    event.status.value,
                    f" ({unsaid} more since the last such line: "
                    "mailactors_status_not_applied_total{reason=unknown_email})"
                    if unsaid
                    else "",
                    extra=ids,
                )
            elif result.outcome is ApplyOutcome.IGNORED:
                # Usually harmless (a repeat republished by a claim, a late event); counted.
                log.debug(
                    "status %s not applied: not allowed after %s (duplicate or out of order)",
                    event.status.value,
                    result.status.value if result.status is not None else "?",
                    extra=ids,
                )
            else:
                log.debug("status %s: applied", event.status.value, extra=ids)
            # Feedback after SENT is not the end of a send: waiters were woken at SENT.
            if result.status is not None and result.status.terminal and event.feedback is None:
                self.watch.notify(result.event_id)
        # Stored: now ack them, all at once (RabbitMQ: one crossing, one multiple ack).
        await self.bus.ack_many([u.delivery for u in items])
        return [None] * len(items)


class StatusConsumer(Actor[Any]):
    """Takes status events off the bus; an undecodable one is refused with the reason."""

    accepts: ClassVar[tuple[type, ...]] = ()

    batch: ClassVar[int] = 256  # deliveries taken at once, at most

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.refused = 0

    async def started(self) -> None:
        self.updater: ActorRef[StatusUpdate] = self.ctx.lookup("updater")
        intake = self.ctx.system.intake  # paused by an operator: take nothing new
        self.ctx.report(lambda: {"refused": self.refused, "paused": intake.paused})
        self.ctx.start_soon(self._consume)

    async def _consume(self) -> None:
        # Everything already received in one take (one gate pass, no wait per delivery).
        take = partial(self.bus.next_status_many, self.batch)
        while True:
            deliveries: Sequence[Delivery] = await self.ctx.system.intake.take(take)
            for delivery in deliveries:
                # Undecodable or unsound (eventId, attempt, timestamps): dead-lettered with
                # the reason.
                event = await screen_status_delivery(delivery)
                if event is None:
                    self.refused += 1
                    continue
                await self.updater.send(StatusUpdate(event, delivery))


class IntegrationApi:
    """What callers of integration can do: the gRPC handlers and, embedded, auth."""

    def __init__(
        self,
        writer: ActorRef[SaveEmail | SaveEmails],
        store: Store,
        watch: TerminalWatch,
        timeout: float = 30.0,
        listener: StatusListener | None = None,
    ) -> None:
        self.writer = writer
        self.store = store
        self.watch = watch
        self.timeout = timeout
        self.listener = listener  # webhooks: told of a CANCELLED once it is stored

    async def save(self, document: EmailDocument) -> SaveResult:
        result: SaveResult = await self.writer.ask(SaveEmail(document), timeout=self.timeout)
        return result

    async def save_many(self, documents: list[EmailDocument]) -> list[SaveResult]:
        """Save several documents (one message to the writer); results in order."""
        results: list[SaveResult] = await self.writer.ask(
            SaveEmails(documents), timeout=self.timeout
        )
        return results

    async def get(self, event_id: str) -> EmailDocument | None:
        return await self.store.get(event_id)

    async def cancel(self, event_id: str) -> ApplyResult:
        """Cancel a SCHEDULED email: APPLIED (now CANCELLED, never sent), IGNORED (no longer
        SCHEDULED: ``status`` says what it is) or NOT_FOUND. One conditional change in the
        store, so it cannot cross the due-scanner's move to PENDING."""
        event = EmailStatusEvent(event_id=event_id, status=Status.CANCELLED, attempt=0)
        (result,) = await self.store.apply_status_many([event])
        if result.outcome is ApplyOutcome.APPLIED:
            self.watch.notify(event_id)
            log.info("cancelled before it was due", extra={"event_id": event_id})
            if self.listener is not None:
                try:
                    await self.listener.status_applied(event)
                except StoreUnavailable as exc:  # the cancel stands; its webhook is lost, loudly
                    log.warning("CANCELLED stored, its webhook not queued: %s", exc,
                                extra={"event_id": event_id})  # fmt: skip
        return result

    async def search(self, query: SearchQuery) -> SearchPage:
        return await self.store.search(query)

    async def wait_terminal(self, event_id: str) -> EmailDocument:
        """Wait until the email is SENT, FAILED or SUPPRESSED; return its document."""
        event = self.watch.event(event_id)  # before the read, so no update slips between
        try:
            doc = await self.store.get(event_id)
            if doc is None:
                raise LookupError(f"event_id: no email {event_id!r}")
            if not doc.status.terminal:
                await event.wait()
                doc = await self.store.get(event_id)
                assert doc is not None
            return doc
        finally:
            self.watch.discard(event_id)


def integration_tree(
    store: Store,
    bus: Bus,
    watch: TerminalWatch,
    *,
    batch_size: int = 500,
    batch_ms: float = 20.0,
    name: str = "integration",
    sweeper: SweeperSettings | None = None,
    listener: StatusListener | None = None,
    schedule_interval_s: float = 30.0,
) -> SupervisorSpec:
    """``sweeper``: run the outbox sweeper with these settings (None: no sweeper);
    ``listener``: told of every batch of statuses before it is stored (webhooks)."""
    sweeping = [ChildSpec("sweeper", OutboxSweeper, args=(store, bus, sweeper))] if sweeper else []
    sweeping.append(ChildSpec("scheduler", ScheduledSender, args=(store, bus, schedule_interval_s)))
    return SupervisorSpec(
        name,
        [
            ChildSpec("writer", DocumentWriter, args=(store, batch_size, min(batch_ms, 10.0))),
            ChildSpec(
                "updater",
                StatusUpdater,
                args=(store, bus, watch, batch_size, batch_ms, 5.0, listener),
                shutdown=15.0,
            ),
            ChildSpec("status-consumer", StatusConsumer, args=(bus,)),
            *sweeping,
        ],
        intensity=5,
        period=10.0,
    )


__all__ = [
    "DocumentWriter",
    "IntegrationApi",
    "SaveEmail",
    "SaveEmails",
    "StatusConsumer",
    "StatusListener",
    "StatusUpdate",
    "StatusUpdater",
    "TerminalWatch",
    "integration_tree",
]

"""The integration service: owner and only writer of email documents.

Tree (one_for_one)::

    integration/
      writer      batches SaveEmail into store.save_many
      updater     batches status events into store.apply_status_many, then acks them
      status-consumer  takes EmailStatusEvents off the bus, rejects undecodable ones
      sweeper     re-publishes emails left PENDING (and, embedded, stuck in flight)
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Any, ClassVar

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
)
from actors.domain.event_checks import screen_status_delivery
from actors.domain.schema import EmailDocument, EmailStatusEvent
from actors.integration.sweeper import OutboxSweeper, SweeperSettings
from actors.stores.batching import BatchingActor, Flush
from runtime import Actor, ActorRef, ChildSpec, SupervisorSpec

log = logging.getLogger("mailactors.integration")


class SaveEmail(msgspec.Struct, frozen=True):
    document: EmailDocument


class SaveEmails(msgspec.Struct, frozen=True):
    """Several documents, answered with their SaveResults in order (one reply)."""

    documents: list[EmailDocument]


class StatusUpdate(msgspec.Struct, frozen=True):
    event: EmailStatusEvent
    delivery: Any  # edges.Delivery, acked once the store has the update


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
        return results


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
        watch: TerminalWatch,
        batch_size: int = 500,
        batch_ms: float = 20.0,
        retry_max_s: float = 5.0,
    ) -> None:
        super().__init__(batch_size, batch_ms)
        self.store = store
        self.watch = watch
        self.retry_max_s = retry_max_s
        self.outcomes: dict[str, int] = {o.value: 0 for o in ApplyOutcome}
        self.orphans: deque[str] = deque(maxlen=20)  # the latest eventIds without a document

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
                log.warning(
                    "status %s not applied: no email with this eventId",
                    event.status.value,
                    extra=ids,
                )
            elif result.outcome is ApplyOutcome.IGNORED:
                # Usually harmless (a repeat republished by a claim, a late event); said once each.
                log.info(
                    "status %s not applied: not allowed after %s (duplicate or out of order)",
                    event.status.value,
                    result.status.value if result.status is not None else "?",
                    extra=ids,
                )
            else:
                log.debug("status %s: applied", event.status.value, extra=ids)
            if result.status is not None and result.status.terminal:
                self.watch.notify(result.event_id)
        # Stored: now ack them, all at once (the bus groups concurrent acks).
        async with trio.open_nursery() as nursery:
            for update in items:
                nursery.start_soon(update.delivery.ack)
        return [None] * len(items)


class StatusConsumer(Actor[Any]):
    """Takes status events off the bus; an undecodable one is rejected with the reason."""

    accepts: ClassVar[tuple[type, ...]] = ()

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.rejected = 0

    async def started(self) -> None:
        self.updater: ActorRef[StatusUpdate] = self.ctx.lookup("updater")
        intake = self.ctx.system.intake  # paused by an operator: take nothing new
        self.ctx.report(lambda: {"rejected": self.rejected, "paused": intake.paused})
        self.ctx.start_soon(self._consume)

    async def _consume(self) -> None:
        while True:
            delivery: Delivery = await self.ctx.system.intake.take(self.bus.next_status)
            # Undecodable or unsound (eventId, attempt, timestamps): dead-lettered with the reason.
            event = await screen_status_delivery(delivery)
            if event is None:
                self.rejected += 1
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
    ) -> None:
        self.writer = writer
        self.store = store
        self.watch = watch
        self.timeout = timeout

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
) -> SupervisorSpec:
    """``sweeper``: run the outbox sweeper with these settings (None: no sweeper)."""
    sweeping = [ChildSpec("sweeper", OutboxSweeper, args=(store, bus, sweeper))] if sweeper else []
    return SupervisorSpec(
        name,
        [
            ChildSpec("writer", DocumentWriter, args=(store, batch_size, min(batch_ms, 10.0))),
            ChildSpec(
                "updater", StatusUpdater, args=(store, watch, batch_size, batch_ms), shutdown=15.0
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
    "StatusUpdate",
    "StatusUpdater",
    "TerminalWatch",
    "integration_tree",
]

"""What a webhook delivery holds: the queued item, its JSON body, and who gets which event.

Integration (the single source of truth) calls :meth:`WebhookEvents.statuses_to_apply`
with each batch of status events just before it stores them: the deliveries are
durable in the queue first (a transactional outbox), so no crash can leave a status
stored and its webhook unqueued. Which events apply is decided here exactly as the
store will decide it: :func:`actors.domain.edges.apply_status` on the current document,
the batch's events of one email in order (integration is the only writer). A crash
before the store write repeats the batch: its deliveries are queued again under the
same webhook-ids, and the outbox (SQLite) or the receiver (RabbitMQ) drops the copies.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Sequence
from typing import Any, Protocol

import msgspec
import trio

from actors.domain.edges import BusUnavailable, Store, StoreUnavailable, apply_status
from actors.domain.schema import EmailDocument, EmailStatusEvent, Status
from config import ConfigError, WebhookEndpointConfig

__all__ = ["Routes", "WebhookEvents", "WebhookItem", "event_body", "webhook_id"]

log = logging.getLogger("mailactors.webhooks")

# The document's fields that other parts add (issue 17: tags and metadata), passed
# through to the receiver when the document has them.
PASSED_THROUGH = ("tags", "metadata")


class WebhookItem(msgspec.Struct, frozen=True, kw_only=True):
    """One delivery to one endpoint, as queued (its body is fixed when it is queued)."""

    webhook_id: str
    endpoint: str
    event_id: str
    sequence: int
    body: bytes
    created_at: float  # epoch seconds when first queued: webhooks.max_age_s counts from here
    attempts: int = 0  # tries so far
    last_error: str | None = None


class Routes:
    """Which endpoints want an event of a status and category; status names checked once."""

    def __init__(self, endpoints: Sequence[WebhookEndpointConfig]) -> None:
        known = set(Status.__members__)
        for e in endpoints:
            unknown = [s for s in e.statuses if s not in known]
            if unknown:
                raise ConfigError(
                    f"webhooks.endpoints[{e.name}].statuses",
                    f"unknown status {', '.join(map(repr, unknown))}; known: {', '.join(known)}",
                )
        self.endpoints = tuple(endpoints)

    def wants(self, status: str) -> bool:
        return any(not e.statuses or status in e.statuses for e in self.endpoints)

    def endpoints_for(self, status: str, category: str) -> list[str]:
        return [
            e.name
            for e in self.endpoints
            if (not e.statuses or status in e.statuses)
            and (not e.categories or category in e.categories)
        ]


def webhook_id(endpoint: str, event: EmailStatusEvent) -> str:
    """The same for every copy of one status event to one endpoint (the receiver's dedupe).

    An email reaches a terminal status once, so every event of it is the same news
    (a repeat published by a claim, a second copy ending SUPPRESSED): the status names
    it. A non-terminal one (RETRYING...) can happen again: its attempt and
    time tell the happenings apart, and a redelivered copy keeps both. A feedback status
    is one report about one address (``feedback.source``, ``sourceId``).
    """
    parts = [endpoint, event.event_id, event.status.value]
    if event.feedback is not None:
        # One per report: an email can have several (a cc's bounce, then the recipient's;
        # two delays), each news; a repeat of one report is the same report.
        parts += [event.feedback.source, event.feedback.source_id]
    elif not event.status.terminal:
        parts += [str(event.attempt), event.occurred_at.isoformat()]
    key = "\0".join(parts)
    return "msg_" + hashlib.sha256(key.encode()).hexdigest()[:32]


def event_body(doc: EmailDocument, event: EmailStatusEvent, sequence: int) -> bytes:
    """The JSON a receiver gets (camelCase, like the bus messages), ``doc`` being the email
    after the event: ``status`` is what happened, ``emailStatus`` where the email stands
    now (they differ for feedback that arrives out of order: a report that overtook SENT,
    a DELAYED after DELIVERED is recorded without moving the email back)."""
    body: dict[str, Any] = {
        "eventId": event.event_id,
        "status": event.status.value,
        "emailStatus": doc.status.value,
        "time": event.occurred_at.isoformat(),
        "sequence": sequence,
        "recipient": doc.recipient,
        "category": doc.category,
        "attempt": event.attempt,
        "provider": event.provider or doc.provider,
        "providerMessageId": event.provider_message_id or doc.provider_message_id,
        "smtpCode": event.smtp_code,
        "reply": event.smtp_reply or doc.smtp_reply,
        "error": event.error,
    }
    if event.feedback is not None:
        # Which address the report is about (the recipient, or a cc or bcc), and what it says.
        body["feedback"] = msgspec.to_builtins(event.feedback)
    for name in PASSED_THROUGH:
        value = getattr(doc, name, None)
        if value:
            body[name] = value
    return json.dumps(body, separators=(",", ":"), default=str).encode()


class Outbox(Protocol):
    async def add_many(self, items: Sequence[WebhookItem]) -> None: ...


class WebhookEvents:
    """Integration's one call: statuses it applied become queued deliveries.

    ``sequence`` is integration's clock in microseconds when it queued the status,
    made strictly increasing in the process: integration stores one email's statuses
    in order, so a later status of an email always has a larger number.
    """

    def __init__(self, routes: Routes, store: Store, outbox: Outbox) -> None:
        self.routes = routes
        self.store = store
        self.outbox = outbox
        self._last = 0
        self.queued = 0

    def _sequence(self) -> int:
        self._last = max(self._last + 1, time.time_ns() // 1000)
        return self._last

    async def status_applied(self, event: EmailStatusEvent) -> None:
        """Queue the deliveries of a status already stored outside integration's batches
        (CancelEmail's CANCELLED: a conditional change that only the store can decide)."""
        if not self.routes.wants(event.status.value):
            return
        doc = await self.store.get(event.event_id)
        if doc is None:
            return
        await self._queue([self._items(doc, event, time.time())])

    def _items(self, doc: EmailDocument, event: EmailStatusEvent, now: float) -> list[WebhookItem]:
        endpoints = self.routes.endpoints_for(event.status.value, doc.category)
        if not endpoints:
            return []
        body = event_body(doc, event, self._sequence())
        return [
            WebhookItem(
                webhook_id=webhook_id(name, event), endpoint=name, event_id=event.event_id,
                sequence=self._last, body=body, created_at=now,
            )  # fmt: skip
            for name in endpoints
        ]

    async def _queue(self, batches: list[list[WebhookItem]]) -> None:
        items = [item for batch in batches for item in batch]
        if not items:
            return
        try:
            await self.outbox.add_many(items)
        except BusUnavailable as exc:
            raise StoreUnavailable(f"webhook queue: {exc}") from exc
        self.queued += len(items)

    async def statuses_to_apply(self, events: Sequence[EmailStatusEvent]) -> None:
        """Queue the deliveries for the events of this batch that the store will apply;
        raises StoreUnavailable while the store or the queue cannot be reached
        (integration retries, nothing stored or acked meanwhile)."""
        ids = {e.event_id for e in events if self.routes.wants(e.status.value)}
        if not ids:
            return
        docs: dict[str, EmailDocument | None] = {}
        limit = trio.CapacityLimiter(16)

        async def fetch(event_id: str) -> None:
            async with limit:
                docs[event_id] = await self.store.get(event_id)

        async with trio.open_nursery() as nursery:
            for event_id in ids:
                nursery.start_soon(fetch, event_id)
        batches: list[list[WebhookItem]] = []
        now = time.time()
        for event in events:  # in order: an email's earlier events change what its later do
            doc = docs.get(event.event_id)
            if doc is None:
                continue
            new = apply_status(doc, event)
            if new is None:  # a duplicate or late event: the store will not apply it either
                continue
            docs[event.event_id] = new
            batches.append(self._items(new, event, now))
        await self._queue(batches)

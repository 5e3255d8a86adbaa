"""The edge interfaces: store, provider, bus. Actors depend on these, never on a client.

Each has two or more implementations chosen by config (``actors.profiles.embedded``).
Every method that does I/O is async and a Trio checkpoint; implementations
that wrap an asyncio library go through ``runtime``'s asyncio edge.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from datetime import datetime
from typing import Protocol, runtime_checkable

import msgspec

from actors.domain.schema import (
    AFTER_SENT,
    AttemptRecord,
    EmailDocument,
    EmailSendEvent,
    EmailStatusEvent,
    Status,
    transition_allowed,
)

# -- store ---------------------------------------------------------------------


class SaveResult(msgspec.Struct, frozen=True):
    document: EmailDocument  # the stored document (the first one, on a repeat)
    created: bool  # False: this eventId existed already, nothing was written


class ApplyOutcome(enum.StrEnum):
    APPLIED = "applied"
    IGNORED = "ignored"  # duplicate or out of order: the transition is not allowed
    NOT_FOUND = "not_found"


class ApplyResult(msgspec.Struct, frozen=True):
    event_id: str
    outcome: ApplyOutcome
    status: Status | None = None  # the document's status after this event


class SearchQuery(msgspec.Struct, frozen=True, kw_only=True):
    recipient: str | None = None
    status: Status | None = None
    category: str | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None
    tags: tuple[str, ...] = ()  # documents carrying every one of these tags
    metadata: dict[str, str] = {}  # documents whose metadata holds each of these pairs
    page_size: int = 50
    page_token: str = ""  # opaque; empty for the first page
    template: str | None = None  # exact template name
    subject_text: str | None = None  # words in the stored subject (case-insensitive)
    oldest_first: bool = False  # sort ascending; a page token carries on in its own order


class SearchPage(msgspec.Struct, frozen=True):
    documents: list[EmailDocument]
    next_page_token: str  # empty when there is no next page
    total: int


class StoreUnavailable(Exception):
    """The store cannot be reached now; the caller keeps the work and retries."""


@runtime_checkable
class Store(Protocol):
    """Where email documents live. Integration is its only writer."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def save_many(self, docs: Sequence[EmailDocument]) -> list[SaveResult]:
        """Insert each document unless its eventId exists (then return the stored one).

        One result per input, in order. Written in one batch.
        """
        ...

    async def get(self, event_id: str) -> EmailDocument | None: ...

    async def search(self, query: SearchQuery) -> SearchPage:
        """Newest first (created_at, then eventId)."""
        ...

    async def count_by_status(self, query: SearchQuery) -> dict[Status, int]:
        """How many documents match *query* (its status, page and order left out), per status;
        one round trip, for the web view's email log."""
        ...

    async def apply_status_many(self, events: Sequence[EmailStatusEvent]) -> list[ApplyResult]:
        """Apply status events with :func:`apply_status`, one result per event, in order.

        Several events for one eventId in a batch are applied in order. A
        failure of one item does not fail the others.
        """
        ...

    async def pending_older_than(self, before: datetime, limit: int) -> list[EmailDocument]:
        """Documents still PENDING that were created before ``before`` (outbox sweeper)."""
        ...

    async def scheduled_before(self, before: datetime, limit: int) -> list[EmailDocument]:
        """SCHEDULED documents whose ``send_at`` is before ``before``, soonest first
        (the due-scanner: it publishes those due, and sleeps until the next)."""
        ...


def apply_status(doc: EmailDocument, event: EmailStatusEvent) -> EmailDocument | None:
    """The document after ``event``, or None when the transition is not allowed.

    This is the one place that decides the lifecycle; every store calls it, so
    a terminal state never regresses and duplicates or late events are harmless.
    Feedback (an event with ``feedback``) goes to :func:`apply_feedback`.
    """
    if event.feedback is not None:
        return apply_feedback(doc, event)
    if not event.status.terminal and event.attempt < doc.attempts:
        return None  # a late event from an earlier attempt
    if event.status is Status.SENDING and doc.history and doc.history[-1].attempt >= event.attempt:
        return None  # this attempt already has its outcome: SENDING overtaken on the bus
    if event.status == doc.status and not event.status.terminal:
        # A repeated non-terminal status with a newer attempt still records the attempt.
        if event.attempt <= doc.attempts:
            return None
    elif not transition_allowed(doc.status, event.status):
        return None
    new = msgspec.structs.replace(
        doc,
        status=event.status,
        updated_at=event.occurred_at,
        attempts=max(doc.attempts, event.attempt),
        next_attempt_at=event.next_attempt_at if event.status is Status.RETRYING else None,
    )
    if event.status in (Status.SENT, Status.FAILED, Status.RETRYING, Status.SUPPRESSED):
        new.history = _in_time_order(
            doc.history,
            AttemptRecord(
                attempt=event.attempt,
                at=event.occurred_at,
                status=event.status,
                provider=event.provider,
                smtp_code=event.smtp_code,
                reply=event.smtp_reply or event.error,
            ),
        )
    for field in ("error", "provider", "provider_message_id", "smtp_reply"):
        value = getattr(event, field)
        if value is not None:  # an event without it keeps what the document knew
            setattr(new, field, value)
    if event.status is Status.SENT:
        new.sent_at = event.occurred_at
        new.error = None
        new.latency_ms = event.latency_ms
        _replay_feedback(new)  # feedback that overtook SENT on the bus now counts
    return new


def apply_feedback(doc: EmailDocument, event: EmailStatusEvent) -> EmailDocument | None:
    """The document after a feedback event (BOUNCED, COMPLAINED, DELIVERED, DELAYED, or
    FAILED for a provider's reject), or None for a report it already has.

    Every report is kept in the history, at its place in event time; the status is
    the replay of the recipient's reports (not a cc's or bcc's) in event time along
    ``schema.AFTER_SENT``, starting from SENT, so a late or out-of-order report never
    moves the status back and the result does not depend on the order reports arrive in.
    Before the email's SENT is recorded (feedback overtook it on the bus) the report
    waits in the history and counts once SENT arrives.
    """
    fb = event.feedback
    assert fb is not None
    for r in doc.history:
        if (
            r.feedback is not None
            and r.status is event.status
            and r.feedback.source == fb.source
            and r.feedback.source_id == fb.source_id
        ):
            return None  # this report, again
    record = AttemptRecord(
        attempt=max(doc.attempts, 1),
        at=event.occurred_at,
        status=event.status,
        provider=event.provider or doc.provider,
        reply=fb.diagnostic,
        feedback=fb,
    )
    new = msgspec.structs.replace(
        doc,
        history=_in_time_order(doc.history, record),
        updated_at=max(doc.updated_at, event.occurred_at),
    )
    _replay_feedback(new)
    return new


def _in_time_order(history: list[AttemptRecord], record: AttemptRecord) -> list[AttemptRecord]:
    """``history`` with ``record`` after the last record not later than it (event-time
    order, without reordering what is there): a report that overtook SENT goes after it."""
    at = len(history)
    while at > 0 and history[at - 1].at > record.at and history[at - 1].feedback is not None:
        at -= 1
    return [*history[:at], record, *history[at:]]


def _replay_feedback(doc: EmailDocument) -> None:
    """Set the status of a SENT (or later) document from its feedback records, in event time."""
    if doc.status is not Status.SENT and doc.status not in AFTER_SENT:
        return  # not sent yet (or SUPPRESSED): the reports wait in the history
    if doc.status is Status.FAILED and doc.sent_at is None:
        return  # FAILED by the email server: feedback never changes it
    status = Status.SENT
    last: AttemptRecord | None = None
    # Only the recipient's reports move the status: a copy's (cc, bcc) bounce is kept in
    # the history, but the email reached its recipient.
    own = doc.recipient.strip().lower()
    reports = (r for r in doc.history if r.feedback is not None and r.feedback.recipient == own)
    for r in sorted(reports, key=lambda r: r.at):
        if r.status in AFTER_SENT.get(status, frozenset()):
            status, last = r.status, r
    doc.status = status
    if (
        last is not None
        and last.feedback is not None
        and status
        in (
            Status.BOUNCED,
            Status.FAILED,
        )
    ):
        fb = last.feedback
        what = f"bounced ({fb.bounce_type})" if status is Status.BOUNCED else "rejected"
        detail = " ".join(x for x in (fb.status_code, fb.diagnostic) if x)
        doc.error = f"{what} by {fb.source}: {detail}".rstrip(": ")


# -- provider ------------------------------------------------------------------


class Failure(enum.StrEnum):
    TRANSIENT = "transient"  # try again later (4xx, connection errors, timeouts)
    PERMANENT = "permanent"  # never succeeds (5xx)
    THROTTLED = "throttled"  # the provider asks us to slow down


class OutgoingEmail(msgspec.Struct, frozen=True, kw_only=True):
    """A rendered email, ready for a provider."""

    event_id: str
    sender: str
    recipient: str
    subject: str
    text: str
    html: str | None = None
    message_id: str  # "<...>", derived from the eventId
    attachments: list[tuple[str, str, bytes]] = []  # (filename, content type, bytes)
    headers: dict[str, str] = {}
    # RFC 8058 one-click unsubscribe (issue 19): (https URL, mailto URL) -> List-Unsubscribe
    # and List-Unsubscribe-Post. Set by the sender for unsubscribable categories only.
    list_unsubscribe: tuple[str, str] | None = None
    # SMTP MAIL FROM (the return path bounces go to); None = the address of ``sender``.
    envelope_from: str | None = None
    # Issue 17: copies and Reply-To. ``bcc`` is for the envelope only, never a header.
    cc: list[str] = []
    bcc: list[str] = []
    reply_to: str | None = None

    @property
    def envelope_recipients(self) -> list[str]:
        """Every address the message goes to (SMTP RCPT TO, SES Destinations)."""
        return [self.recipient, *self.cc, *self.bcc]


class SendResult(msgspec.Struct, frozen=True, kw_only=True):
    provider: str
    ok: bool
    message_id: str | None = None  # the provider's id for the message
    code: int | None = None  # SMTP reply code, when there is one
    reply: str | None = None  # the provider's reply text
    failure: Failure | None = None
    retry_after: float | None = None  # seconds, when the provider said
    # Where an SMTP exchange was refused ("connect", "MAIL", "RCPT", "DATA"): a 5xx at
    # RCPT or DATA refuses the recipient, and suppresses the address
    # (actors.email_server.suppression).
    stage: str | None = None


@runtime_checkable
class Provider(Protocol):
    name: str

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def send(self, email: OutgoingEmail) -> SendResult:
        """Hand one email to the provider. Never raises for a delivery failure:
        the failure is classified in the result. Raises only for programming errors."""
        ...


# -- bus -----------------------------------------------------------------------


@runtime_checkable
class Delivery(Protocol):
    """One message taken from the bus; settle it exactly once."""

    body: bytes
    redelivered: bool

    async def ack(self) -> None: ...

    async def reject(self, reason: str) -> None:
        """Give up on it: to the dead-letter queue with the reason (never requeued)."""
        ...

    async def requeue(self) -> None:
        """Put it back for another try (the work was not done)."""
        ...


class BusError(Exception):
    """The bus refused a message (unroutable, nacked): it was not taken."""


class BusUnavailable(BusError):
    """The broker cannot be reached now; the caller keeps the work and retries."""


@runtime_checkable
class Bus(Protocol):
    """Carries EmailSendEvents and EmailStatusEvents between the services."""

    # True when publish_send_delayed keeps the event durably (broker delay
    # queues); False when a delay can only be waited out in memory.
    durable_delay: bool

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def publish_send(self, event: EmailSendEvent) -> None:
        """Returns once the bus holds the event (publisher confirm, where there is one)."""
        ...

    async def publish_status(self, event: EmailStatusEvent) -> None: ...

    async def publish_status_many(
        self, events: Sequence[EmailStatusEvent]
    ) -> list[BusError | None]:
        """Publish several status events together (one batch across the bus's edge) and
        wait until the bus holds each. One outcome per event, in order: None when it is
        held, else the BusError (BusUnavailable: retry later) publish_status would have
        raised; it does not raise for one event's failure. Ack a delivery only once its
        status' outcome is None. Within one call events are in flight together: publish
        an email's next status in a later call."""
        ...

    async def publish_send_delayed(self, event: EmailSendEvent, delay_s: float) -> None:
        """Deliver ``event`` again after about ``delay_s`` seconds (retries)."""
        ...

    async def next_send(self) -> Delivery:
        """Wait for the next EmailSendEvent delivery (email-server side)."""
        ...

    async def next_status(self) -> Delivery:
        """Wait for the next EmailStatusEvent delivery (integration side)."""
        ...

    async def next_send_many(self, limit: int) -> Sequence[Delivery]:
        """Wait for the next EmailSendEvent delivery; return it with those already
        received behind it, at most ``limit`` in all, in delivery order (one batch
        consumer turn: it never waits for more than the first). Cancel-safe: a
        cancelled call takes nothing."""
        ...

    async def next_status_many(self, limit: int) -> Sequence[Delivery]:
        """As :meth:`next_send_many`, for EmailStatusEvents (integration side)."""
        ...

    async def ack_many(self, deliveries: Sequence[Delivery]) -> None:
        """Ack several deliveries taken from this bus, as ``d.ack()`` each but in one
        batch (RabbitMQ: one edge crossing, one ``multiple`` ack frame for a run in
        delivery order). Each must be unsettled and given once."""
        ...

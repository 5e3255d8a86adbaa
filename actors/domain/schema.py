"""Message schemas of the email domain: one module, so the wire form lives in one place.

The JSON wire form (what crosses RabbitMQ, and what services written in other
languages read) uses camelCase field names, RFC 3339 timestamps in UTC and
base64 for attachment bytes; msgspec produces and checks it. Field names on the
Python side are snake_case.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

import msgspec


def utcnow() -> datetime:
    return datetime.now(UTC)


class Status(enum.StrEnum):
    PENDING = "PENDING"
    SENDING = "SENDING"
    RETRYING = "RETRYING"
    SENT = "SENT"
    FAILED = "FAILED"
    SUPPRESSED = "SUPPRESSED"
    # After SENT: what the provider or the recipient's side reported back (actors.feedback).
    BOUNCED = "BOUNCED"
    COMPLAINED = "COMPLAINED"
    DELIVERED = "DELIVERED"
    DELAYED = "DELAYED"
    # Scheduled send (send_at): held in the store until due, then PENDING; or CANCELLED
    # (terminal, never sent) by CancelEmail before it is due.
    SCHEDULED = "SCHEDULED"
    CANCELLED = "CANCELLED"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


# The feedback statuses are terminal for sending (nothing more is sent); they change
# only by feedback, along AFTER_SENT.
FEEDBACK_STATUSES = frozenset({Status.BOUNCED, Status.COMPLAINED, Status.DELIVERED, Status.DELAYED})
TERMINAL = frozenset(
    {Status.SENT, Status.FAILED, Status.SUPPRESSED, Status.CANCELLED, *FEEDBACK_STATUSES}
)

# Which status may follow which. A terminal state never regresses; a status
# event that is not allowed here is a duplicate or arrived out of order and is
# ignored (recorded as such), never applied.
ALLOWED: dict[Status, frozenset[Status]] = {
    Status.PENDING: frozenset(
        {Status.SENDING, Status.RETRYING, Status.SENT, Status.FAILED, Status.SUPPRESSED}
    ),
    Status.SENDING: frozenset({Status.RETRYING, Status.SENT, Status.FAILED, Status.SUPPRESSED}),
    Status.RETRYING: frozenset(
        {Status.SENDING, Status.RETRYING, Status.SENT, Status.FAILED, Status.SUPPRESSED}
    ),
    Status.SENT: frozenset(),
    Status.FAILED: frozenset(),
    Status.SUPPRESSED: frozenset(),
    **{status: frozenset() for status in FEEDBACK_STATUSES},
    # Due: PENDING, then the usual lifecycle. Only a SCHEDULED email can be cancelled.
    Status.SCHEDULED: frozenset({Status.PENDING, Status.CANCELLED}),
    Status.CANCELLED: frozenset(),
}

# What feedback may do to a document's status once it is SENT, replayed in event-time
# order (``edges.apply_status``), so the result does not depend on arrival order. A
# delivery can still bounce later (the receiving MTA accepted it, the mailbox did not);
# a complaint ends it; a late or repeated report is kept in the history without moving
# the status back. FAILED here is SES's Reject: the provider took it but never sent it.
AFTER_SENT: dict[Status, frozenset[Status]] = {
    Status.SENT: frozenset(
        {Status.DELIVERED, Status.DELAYED, Status.BOUNCED, Status.COMPLAINED, Status.FAILED}
    ),
    Status.DELAYED: frozenset({Status.DELIVERED, Status.BOUNCED, Status.COMPLAINED}),
    Status.DELIVERED: frozenset({Status.BOUNCED, Status.COMPLAINED}),
    Status.BOUNCED: frozenset({Status.COMPLAINED}),
    Status.COMPLAINED: frozenset(),
    Status.FAILED: frozenset(),
}


def transition_allowed(old: Status, new: Status) -> bool:
    return new in ALLOWED[old]


class Attachment(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    filename: str
    content_type: str
    content: bytes  # base64 in JSON


class EmailSendEvent(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """Everything the email server needs to send one email (email.send.exchange)."""

    event_id: str
    recipient: str
    template: str
    variables: dict[str, Any] = {}
    category: str = "transactional"
    subject: str | None = None  # overrides the template's subject when set
    attachments: list[Attachment] = []
    requested_at: datetime = msgspec.field(default_factory=utcnow)
    attempt: int = 1
    # Addressing, headers, tags (issue 17); see EmailDocument.
    from_address: str | None = None
    from_name: str | None = None
    reply_to: str | None = None
    cc: list[str] = []
    bcc: list[str] = []
    headers: dict[str, str] = {}
    tags: list[str] = []
    metadata: dict[str, str] = {}


class FeedbackDetail(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """What a feedback status event carries about the report (schemaVersion 2).

    The wire form of ``actors.feedback.Feedback`` minus what the event itself says
    (eventId, status, occurredAt); kept in the document's history as it came.
    """

    kind: str  # bounce, complaint, delivery, delay, reject
    recipient: str
    source: str  # "ses", "dsn", "arf", ...
    source_id: str  # the report's own id: one report is recorded once
    bounce_type: str | None = None  # hard, soft, undetermined
    status_code: str | None = None  # enhanced status code, e.g. "5.1.1"
    diagnostic: str | None = None
    feedback_type: str | None = None  # complaints: abuse, fraud, ...
    reporter: str | None = None


class AttemptRecord(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """One try at handing an email to a provider."""

    attempt: int
    at: datetime
    status: Status
    provider: str | None = None
    smtp_code: int | None = None
    reply: str | None = None
    feedback: FeedbackDetail | None = None  # a report after SENT, not an attempt


# The version of the status event schema a consumer must understand to read an event:
# 1 = the send lifecycle (PENDING..SUPPRESSED); 2 = also the feedback statuses and their
# ``feedback`` detail. A missing schemaVersion is 1, so events of older producers decode.
STATUS_EVENT_VERSION = 2


class EmailStatusEvent(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """What happened to one email (email.status.exchange)."""

    event_id: str
    status: Status
    attempt: int = 1
    error: str | None = None
    provider: str | None = None
    provider_message_id: str | None = None
    smtp_code: int | None = None
    smtp_reply: str | None = None
    requested_at: datetime | None = None
    occurred_at: datetime = msgspec.field(default_factory=utcnow)
    latency_ms: float | None = None  # request to send, when SENT
    # RETRYING: when the next attempt is due. The embedded outbox sweeper re-publishes
    # an email still RETRYING well past it (its in-memory wait died with the process).
    next_attempt_at: datetime | None = None
    schema_version: int = 1  # see STATUS_EVENT_VERSION
    feedback: FeedbackDetail | None = None  # BOUNCED, COMPLAINED, DELIVERED, DELAYED (v2)
    # The email's tags and metadata, so that whoever reads status events (webhooks)
    # can correlate them with the caller's own records without reading the document.
    tags: list[str] = []
    metadata: dict[str, str] = {}


class EmailDocument(msgspec.Struct, kw_only=True, rename="camel"):
    """The integration service's record of one email: the single source of truth."""

    event_id: str
    recipient: str
    template: str
    variables: dict[str, Any] = {}
    category: str = "transactional"
    subject: str | None = None
    attachments: list[Attachment] = []
    status: Status = Status.PENDING
    idempotency_key: str | None = None
    created_at: datetime = msgspec.field(default_factory=utcnow)
    updated_at: datetime = msgspec.field(default_factory=utcnow)
    attempts: int = 0
    error: str | None = None
    provider: str | None = None
    provider_message_id: str | None = None
    smtp_reply: str | None = None
    latency_ms: float | None = None
    sent_at: datetime | None = None
    history: list[AttemptRecord] = []
    next_attempt_at: datetime | None = None  # while RETRYING: when the next attempt is due
    # Issue 17. from_*: the sender (None: the category's default, else provider.sender);
    # bcc recipients get the message but are never in its headers; headers are the
    # caller's allow-listed extra headers; send_at: SCHEDULED until then.
    from_address: str | None = None
    from_name: str | None = None
    reply_to: str | None = None
    cc: list[str] = []
    bcc: list[str] = []
    headers: dict[str, str] = {}
    tags: list[str] = []
    metadata: dict[str, str] = {}
    send_at: datetime | None = None

    def to_send_event(self) -> EmailSendEvent:
        return EmailSendEvent(
            event_id=self.event_id,
            recipient=self.recipient,
            template=self.template,
            variables=self.variables,
            category=self.category,
            subject=self.subject,
            attachments=self.attachments,
            # A scheduled email's age (retry.max_age_s, latency) counts from when it was due.
            requested_at=self.send_at or self.created_at,
            from_address=self.from_address,
            from_name=self.from_name,
            reply_to=self.reply_to,
            cc=self.cc,
            bcc=self.bcc,
            headers=self.headers,
            tags=self.tags,
            metadata=self.metadata,
        )


json_encoder = msgspec.json.Encoder()
send_event_decoder = msgspec.json.Decoder(EmailSendEvent)
status_event_decoder = msgspec.json.Decoder(EmailStatusEvent)
document_decoder = msgspec.json.Decoder(EmailDocument)


def encode(msg: msgspec.Struct) -> bytes:
    return json_encoder.encode(msg)

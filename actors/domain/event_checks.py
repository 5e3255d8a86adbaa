"""Checks on what arrives from the bus and through SaveEmail: the same rules as a request.

auth validates every request (``validation.validate_request``), but auth is not
the only way in: anyone who can publish on the broker can put an
``EmailSendEvent`` or an ``EmailStatusEvent`` on a queue, and any gRPC caller
can call ``IntegrationService.SaveEmail``. So the email server checks each send
event again before it renders or sends anything, integration checks each status
event before it touches the store, and SaveEmail checks each document, with the
same limits and templates as auth. Besides the request's own fields, these check
what only events and documents carry: the eventId (it becomes a store key, a
Message-ID and a header), the attempt number and the timestamps (a naive
datetime cannot be compared with an aware one, and would crash whoever tries).

Everything here raises ``InvalidField`` (``"<field>: <reason>"``) or, for bus
bodies, ``BadMessage`` with the reason for the dead-letter queue, and nothing
else, whatever it is given.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec

from actors.domain.addressing import check_event_addressing
from actors.domain.schema import (
    FEEDBACK_STATUSES,
    STATUS_EVENT_VERSION,
    EmailDocument,
    EmailSendEvent,
    EmailStatusEvent,
    Status,
    send_event_decoder,
    status_event_decoder,
)
from actors.domain.validation import InvalidField, validate_event_rendered, validate_request

if TYPE_CHECKING:
    from actors.domain.edges import Bus, Delivery
    from actors.domain.templates import RenderedEmail, TemplateRenderer
    from config import LimitsConfig

log = logging.getLogger("mailactors.checks")
_Event = TypeVar("_Event")

__all__ = [
    "EVENT_ID_PATTERN",
    "BadMessage",
    "CheckedEvents",
    "check_document",
    "check_event_id",
    "check_idempotency_key",
    "check_send_envelope",
    "check_status_event",
    "decode_send_event",
    "decode_status_event",
    "max_send_event_bytes",
    "screen_send_delivery",
    "screen_status_delivery",
]

# UUIDs (what auth makes), ULIDs, "order-42", "tenant:42": letters, digits and
# ". _ : -", starting with a letter or digit (so never "." or ".."), at most
# 128 characters. No byte of it can break a header, a Message-ID or a URL path.
EVENT_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
MAX_ATTEMPT = 2**31 - 1  # stores keep attempts in a 32-bit integer
MAX_IDEMPOTENCY_KEY_CHARS = 256
MAX_STATUS_EVENT_BYTES = 1024 * 1024
# Room for the event's own fields around the variables and the attachments.
SEND_EVENT_ALLOWANCE_BYTES = 64 * 1024
# Longest free-text fields of a status event (an SMTP reply line is at most 512).
_STATUS_TEXT_LIMITS = {
    "error": 16384,
    "smtpReply": 16384,
    "provider": 256,
    "providerMessageId": 1024,
}
_FEEDBACK_TEXT_LIMITS = {
    "kind": 32,
    "recipient": 320,
    "source": 64,
    "sourceId": 1024,
    "bounceType": 32,
    "statusCode": 32,
    "diagnostic": 16384,
    "feedbackType": 256,
    "reporter": 1024,
}
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class BadMessage(ValueError):
    """A bus message to dead-letter, never to retry; ``str()`` is the reason."""


def _show(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_event_id(value: Any, field: str = "eventId") -> str:
    if not isinstance(value, str):
        raise InvalidField(field, f"must be a string, got {type(value).__name__}")
    if not EVENT_ID_PATTERN.fullmatch(value):
        raise InvalidField(
            field,
            f"must match ^{EVENT_ID_PATTERN.pattern}$ (letters, digits, '.', '_', ':', '-'; "
            f"at most 128), got {_show(value)}",
        )
    return value


def check_idempotency_key(value: Any, field: str = "idempotency_key") -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidField(field, f"must be a string, got {type(value).__name__}")
    if not value.strip():
        raise InvalidField(field, "must not be blank (omit it for none)")
    if len(value) > MAX_IDEMPOTENCY_KEY_CHARS:
        raise InvalidField(
            field, f"is {len(value)} characters, more than the limit of {MAX_IDEMPOTENCY_KEY_CHARS}"
        )
    if _CONTROL.search(value):
        raise InvalidField(field, "must not contain control characters")
    return value


def _check_attempt(value: int, field: str = "attempt") -> None:
    if not 1 <= value <= MAX_ATTEMPT:
        raise InvalidField(field, f"must be 1..{MAX_ATTEMPT}, got {value}")


def _check_aware(value: datetime | None, field: str) -> None:
    if value is not None and value.utcoffset() is None:
        raise InvalidField(field, "must carry a time zone (RFC 3339, e.g. ...Z)")


# -- send events (email-server) ------------------------------------------------------


def max_send_event_bytes(limits: LimitsConfig) -> int:
    """The largest send event body worth decoding: a valid one is never bigger."""
    return limits.max_message_bytes + limits.max_variables_bytes + SEND_EVENT_ALLOWANCE_BYTES


def check_send_envelope(event: EmailSendEvent) -> None:
    """What a send event carries besides the request: eventId, attempt, requestedAt."""
    check_event_id(event.event_id)
    _check_attempt(event.attempt)
    _check_aware(event.requested_at, "requestedAt")


def _decode_checked(
    body: bytes,
    decoder: msgspec.json.Decoder[_Event],
    check: Callable[[_Event], None],
    limit: int,
    kind: str,
) -> _Event:
    """Bytes from the bus to a checked event of *kind*, or BadMessage with the reason:
    too large (never decoded), undecodable, or failing *check*."""
    if len(body) > limit:
        raise BadMessage(f"invalid {kind}: {len(body)} bytes, more than the limit of {limit}")
    try:
        event = decoder.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError) as exc:
        raise BadMessage(f"undecodable {kind}: {_reason(exc)}") from None
    try:
        check(event)
    except InvalidField as exc:
        raise BadMessage(f"invalid {kind}: {exc}") from None
    return event


def decode_send_event(body: bytes, limits: LimitsConfig) -> EmailSendEvent:
    """Bytes from the bus to an event whose envelope is sound, or BadMessage with the reason."""
    return _decode_checked(
        body, send_event_decoder, check_send_envelope, max_send_event_bytes(limits),
        "EmailSendEvent",
    )


# -- status events (integration) ------------------------------------------------------


def check_status_event(event: EmailStatusEvent) -> None:
    check_event_id(event.event_id)
    _check_attempt(event.attempt)
    _check_aware(event.occurred_at, "occurredAt")
    _check_aware(event.requested_at, "requestedAt")
    if event.smtp_code is not None and not 0 <= event.smtp_code <= 999:
        raise InvalidField("smtpCode", f"must be 0..999, got {event.smtp_code}")
    if event.latency_ms is not None and not math.isfinite(event.latency_ms):
        raise InvalidField("latencyMs", "must be a finite number")
    for field, limit in _STATUS_TEXT_LIMITS.items():
        value = getattr(event, _snake(field))
        if value is not None and len(value) > limit:
            raise InvalidField(field, f"is {len(value)} characters, more than the limit of {limit}")
    _check_feedback(event)


def _check_feedback(event: EmailStatusEvent) -> None:
    """schemaVersion 2: the feedback statuses come with their report, and only they do
    (besides FAILED for a provider's reject); a newer version is not guessed at."""
    if not 1 <= event.schema_version <= STATUS_EVENT_VERSION:
        raise InvalidField(
            "schemaVersion",
            f"must be 1..{STATUS_EVENT_VERSION} (the newest this consumer reads), "
            f"got {event.schema_version}",
        )
    fb = event.feedback
    if event.status in FEEDBACK_STATUSES and fb is None:
        raise InvalidField("feedback", f"{event.status.value} comes with the report (feedback)")
    if fb is None:
        return
    if event.status not in FEEDBACK_STATUSES and event.status is not Status.FAILED:
        raise InvalidField("feedback", f"not allowed with status {event.status.value}")
    if event.schema_version < 2:
        raise InvalidField("schemaVersion", "feedback needs schemaVersion 2")
    for field, limit in _FEEDBACK_TEXT_LIMITS.items():
        value = getattr(fb, _snake(field))
        if value is not None and len(value) > limit:
            raise InvalidField(
                f"feedback.{field}", f"is {len(value)} characters, more than the limit of {limit}"
            )
    if not fb.source_id:
        raise InvalidField("feedback.sourceId", "must not be empty")


def decode_status_event(body: bytes) -> EmailStatusEvent:
    """Bytes from the bus to a sound status event, or BadMessage with the reason."""
    return _decode_checked(
        body, status_event_decoder, check_status_event, MAX_STATUS_EVENT_BYTES,
        "EmailStatusEvent",
    )


# -- checked in this process: what the email server need not check again --------------


class CheckedEvents:
    """Send events this process has checked and rendered just before publishing them.

    Auth checks every request and renders it; in the embedded profile the email server
    of the same process then decoded, checked and rendered each event again (~8% of the
    pipeline's CPU, bench embedded_e2e). The consumer takes the render from here instead
    when the event it decoded *equals* the one remembered under its eventId (so another
    event under the same id, e.g. a retry's next attempt, is checked as usual). One is
    shared by auth and the email server of the embedded profile only: in the distributed
    one they are different processes and every event is checked. Bounded: under a
    backlog the oldest fall out and are checked again.
    """

    def __init__(self, keep: int = 8192) -> None:
        self.keep = keep
        self._events: dict[str, tuple[EmailSendEvent, RenderedEmail]] = {}
        self.taken = 0  # events sent on auth's checks and render

    def remember(self, event: EmailSendEvent, rendered: RenderedEmail) -> None:
        events = self._events
        events[event.event_id] = (event, rendered)
        if len(events) > self.keep:
            del events[next(iter(events))]  # the oldest: dicts keep insertion order

    def take(self, event: EmailSendEvent) -> RenderedEmail | None:
        known = self._events.pop(event.event_id, None)
        if known is None or known[0] != event:
            return None
        self.taken += 1
        return known[1]



# -- the consumers' side: decide, settle what is refused, go on -----------------------


async def screen_send_delivery(
    delivery: Delivery,
    bus: Bus,
    limits: LimitsConfig,
    renderer: TemplateRenderer,
    checked: CheckedEvents | None = None,
) -> tuple[EmailSendEvent, RenderedEmail] | None:
    """The event to send and its rendering, or None when refused (and settled here).

    The rendering is the one done to check the event, ``renderer.render(event.template,
    event.variables, event.subject)``: the sender uses it rather than render again.

    Undecodable, or a bad eventId / attempt / requestedAt: dead-lettered with the
    reason (there is no trustworthy eventId to report on). Decodable but refused
    by the request rules (a bad address, a CR in the subject, an unknown
    template, too big...): a FAILED status with the reason is published first,
    so the email's document ends FAILED instead of waiting PENDING for the
    sweeper, then the delivery is dead-lettered. Either way nothing reaches a
    provider and the caller's loop goes on.
    """
    try:
        event = decode_send_event(delivery.body, limits)
    except BadMessage as exc:
        log.warning("refused a send event: %s", exc)
        await delivery.reject(str(exc))
        return None
    rendered = checked.take(event) if checked is not None else None
    if rendered is not None:  # checked and rendered by this process's auth
        return event, rendered
    try:
        recipient, rendered = validate_event_rendered(event, limits, renderer)
        check_event_addressing(event, recipient=recipient)
    except Exception as exc:  # validate_request raises InvalidField only; be sure of it
        if isinstance(exc, InvalidField):
            why = str(exc)
            log.warning("refused a send event: %s", why, extra={"event_id": event.event_id})
        else:
            why = f"cannot be checked ({type(exc).__name__})"
            log.exception("could not check a send event", extra={"event_id": event.event_id})
        await bus.publish_status(
            EmailStatusEvent(
                event_id=event.event_id,
                status=Status.FAILED,
                attempt=event.attempt,
                error=f"refused by the email server: {why}",
                requested_at=event.requested_at,
                tags=event.tags,
                metadata=event.metadata,
            )
        )
        await delivery.reject(f"invalid EmailSendEvent: {why}")
        return None
    return event, rendered


async def screen_status_delivery(delivery: Delivery) -> EmailStatusEvent | None:
    """The status event to apply, or None when it was dead-lettered with the reason."""
    try:
        return decode_status_event(delivery.body)
    except BadMessage as exc:
        log.warning("refused a status event: %s", exc)
        await delivery.reject(str(exc))
        return None


# -- documents (IntegrationService.SaveEmail) ----------------------------------------

# Set by integration alone, from status events: a new document carries none of them.
_LIFECYCLE_FIELDS = (
    "attempts", "error", "provider", "provider_message_id", "smtp_reply", "latency_ms", "sent_at",
    "history",
)


def check_document(
    doc: EmailDocument, limits: LimitsConfig, renderer: TemplateRenderer, prefix: str = "document."
) -> EmailDocument:
    """A new PENDING document as SaveEmail may store it (recipient normalized).

    The request fields get ``validate_request``, the addressing fields (from, reply-to,
    cc, bcc, headers, tags, metadata) auth's checks bar the sender policy (and are stored
    normalized, as auth stores them); the eventId and idempotency key their own rules; and
    the lifecycle (status, attempts, history...) must be the initial one, since only status
    events from the email server change it.
    """
    check_event_id(doc.event_id, f"{prefix}event_id")
    try:
        recipient = validate_request(
            doc.recipient,
            doc.template,
            doc.variables,
            doc.category,
            doc.subject,
            doc.attachments,
            limits,
            renderer,
            doc,
        )
    except InvalidField as exc:
        raise InvalidField(f"{prefix}{exc.field}", exc.reason) from None
    extra = check_event_addressing(doc, recipient=recipient, prefix=prefix)
    check_idempotency_key(doc.idempotency_key, f"{prefix}idempotency_key")
    scheduled = doc.status is Status.SCHEDULED and doc.send_at is not None
    if doc.status is not Status.PENDING and not scheduled:
        raise InvalidField(
            f"{prefix}status",
            f"a new document is PENDING (or SCHEDULED with a send_at), got {doc.status.value};"
            " statuses come from the email server",
        )
    default = EmailDocument(event_id="", recipient="", template="")
    for name in _LIFECYCLE_FIELDS:
        if getattr(doc, name) != getattr(default, name):
            raise InvalidField(
                f"{prefix}{name}", "is set by integration from status events; leave it unset"
            )
    _check_aware(doc.created_at, f"{prefix}created_at")
    _check_aware(doc.updated_at, f"{prefix}updated_at")
    _check_aware(doc.send_at, f"{prefix}send_at")
    return msgspec.structs.replace(
        doc,
        recipient=recipient,
        from_address=extra.from_address,
        from_name=extra.from_name,
        reply_to=extra.reply_to,
        cc=extra.cc,
        bcc=extra.bcc,
        headers=extra.headers,
        tags=extra.tags,
        metadata=extra.metadata,
    )


def _snake(camel: str) -> str:
    return re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), camel)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    return str(exc)

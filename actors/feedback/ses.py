"""Amazon SES event notifications (the JSON inside an SNS Notification) to Feedback records.

Both forms SES writes are read: identity notifications (``notificationType``) and
configuration-set event publishing (``eventType``), for Bounce, Complaint, Delivery,
Reject and DeliveryDelay; other event types (Send, Open, Click...) are ignored.

The email is found by its Message-ID: the email server sets ``<eventId@domain>``
(``actors.domain.mime.message_id_for``) and SES echoes it in
``mail.commonHeaders.messageId`` (and in ``mail.headers`` when the identity is set to
include the original headers). SES's own ``mail.messageId`` is the document's
``providerMessageId``; it is not used to find the email (that would need a search).

A bounce or complaint is known by SES's own ``feedbackId`` with the recipient, not by the
SNS MessageId: SES can publish one event to several topics, or again, under new
MessageIds, and it must still be applied once (one BOUNCED, one webhook). The SNS MessageId
stays its ``alias``: a repeat under either name is a repeat. Events without a feedbackId
(Delivery, Reject, DeliveryDelay) are known the same way by what SES says of them: its
``mail.messageId``, the event type, the event's timestamp (a message is delayed more than
once) and the recipient; only an event without ``mail.messageId`` (not SES's) is known
by the SNS MessageId alone.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, TypeVar

import msgspec

from actors.domain.event_checks import EVENT_ID_PATTERN
from actors.feedback.events import BounceType, Feedback, FeedbackKind

__all__ = ["SesEventError", "feedback_from_ses"]

T = TypeVar("T")


class SesEventError(ValueError):
    """The Notification's message is not an SES event we can apply; ``str()`` says why."""


class _Camel(msgspec.Struct, rename="camel"):
    pass


class _Header(_Camel):
    name: str
    value: str


class _CommonHeaders(_Camel):
    message_id: str | None = None


class _Mail(_Camel):
    timestamp: datetime | None = None
    message_id: str | None = None  # SES's id
    destination: list[str] = []
    headers: list[_Header] = []
    common_headers: _CommonHeaders | None = None


class _Recipient(_Camel):
    email_address: str
    status: str | None = None
    diagnostic_code: str | None = None


class _Bounce(_Camel):
    bounce_type: str
    bounced_recipients: list[_Recipient]
    timestamp: datetime
    feedback_id: str | None = None
    bounce_sub_type: str | None = None
    reporting_mta: str | None = msgspec.field(default=None, name="reportingMTA")


class _Complaint(_Camel):
    complained_recipients: list[_Recipient]
    timestamp: datetime
    feedback_id: str | None = None
    complaint_feedback_type: str | None = None
    user_agent: str | None = None


class _Delivery(_Camel):
    recipients: list[str]
    timestamp: datetime
    smtp_response: str | None = None
    reporting_mta: str | None = msgspec.field(default=None, name="reportingMTA")


class _Reject(_Camel):
    reason: str | None = None


class _Delay(_Camel):
    delayed_recipients: list[_Recipient]
    timestamp: datetime
    delay_type: str | None = None
    reporting_mta: str | None = msgspec.field(default=None, name="reportingMTA")


class _SesEvent(_Camel):
    mail: _Mail
    notification_type: str | None = None
    event_type: str | None = None
    bounce: _Bounce | None = None
    complaint: _Complaint | None = None
    delivery: _Delivery | None = None
    reject: _Reject | None = None
    delivery_delay: _Delay | None = None


_decoder = msgspec.json.Decoder(_SesEvent)
_BOUNCE_TYPES = {
    "Permanent": BounceType.HARD,
    "Transient": BounceType.SOFT,
    "Undetermined": BounceType.UNDETERMINED,
}
MAX_RECIPIENTS = 50  # SES sends at most 50 per message; more is not SES


def _event_id(mail: _Mail) -> str:
    candidates = [h.value for h in mail.headers if h.name.lower() == "message-id"]
    if mail.common_headers is not None and mail.common_headers.message_id:
        candidates.insert(0, mail.common_headers.message_id)
    for value in candidates:
        local, at, _domain = value.strip().strip("<>").partition("@")
        if at and EVENT_ID_PATTERN.fullmatch(local):
            return local
    raise SesEventError("mail: no Message-ID of ours (<eventId@domain>) in commonHeaders/headers")


def _code(status: str | None) -> str | None:
    return status[:32] if status else None


def feedback_from_ses(message: str | bytes, source_id: str) -> list[Feedback]:
    """The records of one SES event (``source_id``: the SNS MessageId, the records'
    alias, or their id when SES gives no id of its own). Raises
    :class:`SesEventError` for what is not an SES event; an event type that is not
    feedback (Send, Open, ...) gives no record."""
    try:
        event = _decoder.decode(message)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise SesEventError(f"not an SES event: {exc}") from None
    kind = event.event_type or event.notification_type
    if kind not in ("Bounce", "Complaint", "Delivery", "Reject", "DeliveryDelay"):
        if kind is None:
            raise SesEventError("neither eventType nor notificationType")
        return []
    event_id = _event_id(event.mail)
    out: list[Feedback] = []

    ses_id = event.mail.message_id

    def record(feedback_id: str | None = None, **fields: Any) -> Feedback:
        # The recipient too: one feedbackId covers every recipient of the event, and the
        # document's history keeps one record per source id.
        if not feedback_id and ses_id:
            at = fields["occurred_at"]
            at = at.astimezone(UTC) if at.tzinfo else at.replace(tzinfo=UTC)
            feedback_id = f"{ses_id[:200]}#{kind}#{at.isoformat()}"
        if not feedback_id:
            return Feedback(event_id=event_id, source="ses", source_id=source_id, **fields)
        own = f"{feedback_id}#{fields['recipient'].lower()}"
        return Feedback(event_id=event_id, source="ses", source_id=own, alias=source_id, **fields)

    if kind == "Bounce":
        b = _need(event.bounce, "bounce")
        bounce_type = _BOUNCE_TYPES.get(b.bounce_type)
        if bounce_type is None:
            raise SesEventError(f"bounce.bounceType: unknown {b.bounce_type[:40]!r}")
        for r in _limited(b.bounced_recipients):
            out.append(record(
                feedback_id=b.feedback_id, kind=FeedbackKind.BOUNCE, recipient=r.email_address,
                occurred_at=b.timestamp,
                bounce_type=bounce_type, status_code=_code(r.status),
                diagnostic=r.diagnostic_code or b.bounce_sub_type, reporter=b.reporting_mta,
            ))  # fmt: skip
    elif kind == "Complaint":
        c = _need(event.complaint, "complaint")
        for r in _limited(c.complained_recipients):
            out.append(record(
                feedback_id=c.feedback_id, kind=FeedbackKind.COMPLAINT,
                recipient=r.email_address, occurred_at=c.timestamp,
                feedback_type=c.complaint_feedback_type or "abuse", reporter=c.user_agent,
            ))  # fmt: skip
    elif kind == "Delivery":
        d = _need(event.delivery, "delivery")
        for address in _limited(d.recipients):
            out.append(record(
                kind=FeedbackKind.DELIVERY, recipient=address, occurred_at=d.timestamp,
                diagnostic=d.smtp_response, reporter=d.reporting_mta,
            ))  # fmt: skip
    elif kind == "DeliveryDelay":
        dd = _need(event.delivery_delay, "deliveryDelay")
        for r in _limited(dd.delayed_recipients):
            out.append(record(
                kind=FeedbackKind.DELAY, recipient=r.email_address, occurred_at=dd.timestamp,
                status_code=_code(r.status), diagnostic=r.diagnostic_code or dd.delay_type,
                reporter=dd.reporting_mta,
            ))  # fmt: skip
    else:  # Reject: SES refused to send it at all (a virus); about the content, not an address
        rj = _need(event.reject, "reject")
        when = event.mail.timestamp
        if when is None:
            raise SesEventError("mail.timestamp: missing")
        for address in _limited(event.mail.destination):
            out.append(record(
                kind=FeedbackKind.REJECT, recipient=address, occurred_at=when,
                diagnostic=rj.reason,
            ))  # fmt: skip
    return out


def _need(value: T | None, field: str) -> T:
    if value is None:
        raise SesEventError(f"{field}: missing for this event type")
    return value


def _limited(items: list[T]) -> list[T]:
    if len(items) > MAX_RECIPIENTS:
        raise SesEventError(f"{len(items)} recipients, more than SES sends ({MAX_RECIPIENTS})")
    return items

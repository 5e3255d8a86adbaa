"""Feedback test kit: yesterday's status event (a consumer written before schemaVersion 2),
documents and feedback events to apply, the ``[feedback.ses]`` of a test. The SNS and SES
stand-ins are in ``actors.testing.sns`` (the soak uses them too)."""

from __future__ import annotations

import enum
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from actors.domain.schema import (
    STATUS_EVENT_VERSION,
    EmailDocument,
    EmailStatusEvent,
    FeedbackDetail,
    Status,
)
from actors.testing.sns import TOPIC, SnsHost

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


class StatusV1(enum.StrEnum):
    """``schema.Status`` as it was before the feedback statuses."""

    PENDING = "PENDING"
    SENDING = "SENDING"
    RETRYING = "RETRYING"
    SENT = "SENT"
    FAILED = "FAILED"
    SUPPRESSED = "SUPPRESSED"


class EmailStatusEventV1(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """``schema.EmailStatusEvent`` exactly as a consumer written before schemaVersion 2 has it."""

    event_id: str
    status: StatusV1
    attempt: int = 1
    error: str | None = None
    provider: str | None = None
    provider_message_id: str | None = None
    smtp_code: int | None = None
    smtp_reply: str | None = None
    requested_at: datetime | None = None
    occurred_at: datetime = msgspec.field(default_factory=lambda: datetime.now(UTC))
    latency_ms: float | None = None
    next_attempt_at: datetime | None = None


def sent_document(event_id: str = "ev-1", recipient: str = "ana@example.org") -> EmailDocument:
    """A document as integration has it once the email server reported SENT at T0."""
    from actors.domain.edges import apply_status

    doc = EmailDocument(
        event_id=event_id, recipient=recipient, template="welcome", created_at=T0, updated_at=T0
    )
    sent_event = EmailStatusEvent(event_id=event_id, status=Status.SENT, occurred_at=T0)
    sent = apply_status(doc, sent_event)
    assert sent is not None
    return sent


def feedback_event(
    status: Status,
    minutes: float,
    source_id: str,
    *,
    event_id: str = "ev-1",
    recipient: str = "ana@example.org",
    bounce_type: str | None = None,
) -> EmailStatusEvent:
    """A feedback status event ``minutes`` after T0, as the sink publishes it."""
    kind = {
        Status.BOUNCED: "bounce",
        Status.COMPLAINED: "complaint",
        Status.DELIVERED: "delivery",
        Status.DELAYED: "delay",
        Status.FAILED: "reject",
    }[status]
    return EmailStatusEvent(
        event_id=event_id,
        status=status,
        occurred_at=T0 + timedelta(minutes=minutes),
        schema_version=STATUS_EVENT_VERSION,
        feedback=FeedbackDetail(
            kind=kind,
            recipient=recipient,
            source="ses",
            source_id=source_id,
            bounce_type=bounce_type or ("hard" if status is Status.BOUNCED else None),
            status_code="5.1.1" if status is Status.BOUNCED else None,
            diagnostic="smtp; 550 5.1.1 user unknown" if status is Status.BOUNCED else None,
        ),
    )


def sns_settings(host: SnsHost, **changes: Any) -> dict[str, Any]:
    """``[feedback.ses]`` that trusts only this host (and our topic), for tests."""
    return {
        "enabled": True,
        "host_pattern": r"localhost:\d+",
        "ca_file": host.ca,
        "topic_arns": [TOPIC],
        **changes,
    }

"""What every feedback source produces, and the one interface it hands it to.

Sources differ (SES over SNS, DSNs and ARF reports by SMTP, an unsubscribe
click) but say the same few things: this email, to this recipient, bounced
(hard or soft), drew a complaint, was delivered or delayed. A source parses and
authenticates; the sink decides (status, suppression, rates). ``source_id`` is
what the source itself calls the report (SNS MessageId, the DSN's Message-ID):
the sink applies a repeated one once.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Protocol

import msgspec

__all__ = ["BounceType", "Feedback", "FeedbackKind", "FeedbackSink", "Outcome"]


class FeedbackKind(enum.StrEnum):
    BOUNCE = "bounce"
    COMPLAINT = "complaint"
    DELIVERY = "delivery"
    DELAY = "delay"
    REJECT = "reject"  # the provider refused to send it at all (SES Reject)


class BounceType(enum.StrEnum):
    HARD = "hard"  # permanent: the address does not exist or never accepts mail
    SOFT = "soft"  # transient: mailbox full, greylisting, a server down
    UNDETERMINED = "undetermined"


class Feedback(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """One report about one recipient of one email."""

    event_id: str
    kind: FeedbackKind
    recipient: str
    occurred_at: datetime  # when the report says it happened (not when it arrived)
    source: str  # "ses", "dsn", "arf", "unsubscribe", ...
    source_id: str  # the report's own id: a repeat of it is applied once
    bounce_type: BounceType | None = None  # BOUNCE only
    status_code: str | None = None  # the enhanced status code, e.g. "5.1.1"
    diagnostic: str | None = None  # the remote server's words, e.g. "550 5.1.1 no such user"
    feedback_type: str | None = None  # COMPLAINT: the ARF Feedback-Type (abuse, fraud, ...)
    reporter: str | None = None  # who reported it: the MTA, the mailbox provider
    alias: str | None = None  # another id of the same report (SES: the SNS MessageId)


class Outcome(msgspec.Struct, frozen=True):
    """What the sink did with one report."""

    applied: bool
    reason: str  # "applied", or why not: unknown_email, wrong_recipient, repeat
    suppressed: str | None = None  # the suppression it made, if any


class FeedbackSink(Protocol):
    """Where every source hands what it parsed; the one place that acts on feedback."""

    async def report(self, feedback: Feedback) -> Outcome:
        """Apply ``feedback`` durably (or raise: the source must not acknowledge it); says
        whether it was applied or knowingly ignored (a repeat, another recipient...)."""
        ...

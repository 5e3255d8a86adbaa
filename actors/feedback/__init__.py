"""Feedback after SENT: bounces, complaints, deliveries and delays, from wherever they come.

Layer: above the services (it reads the suppression list of ``email_server`` and
publishes status events as ``email_server`` does), below ``profiles``. Sources
turn what a provider or a mailbox sends back into :class:`Feedback` records;
one sink applies them.

Modules:

- ``events``: the :class:`Feedback` record and the :class:`FeedbackSink` interface
  that every source hands its records to.
- ``verp``: the VERP return path: each email's envelope sender names its eventId, signed.
- ``dsn``: reading what comes back to a return path: DSNs, ARF complaints, other bounce
  formats (flufl.bounce), auto-replies.
- ``inbound``: the inbound SMTP endpoint (aiosmtpd on the asyncio edge) and its registry of
  recipient handlers by local-part prefix (``bounces+``, ``unsubscribe+``).
- ``actions``: the sink's decisions (suppress, count, pause, publish the status event).
- ``ledger``, ``ledger_elasticsearch``: reports already applied, soft bounces (durable).
- ``sns``: SNS messages parsed and their signatures checked (AWS's string to sign).
- ``ses``: SES event notifications (Bounce, Complaint, Delivery, Reject, DeliveryDelay).
- ``service``: the sink actor and its tree, ``SinkRef``, the SES route of the HTTP edge.
"""

from actors.feedback.actions import FeedbackActions, Outcome
from actors.feedback.dsn import (
    FoundRecipient,
    Mismatch,
    Report,
    ReportKind,
    ReportRefused,
    feedback_records,
    parse_report,
)
from actors.feedback.events import BounceType, Feedback, FeedbackKind, FeedbackSink
from actors.feedback.inbound import (
    BounceHandler,
    InboundMessage,
    InboundSmtpServer,
    InboundStatistics,
    RecipientHandler,
    inbound_smtp_server,
)
from actors.feedback.service import (
    FeedbackResources,
    SinkRef,
    feedback_enabled,
    feedback_tree,
    open_feedback,
    ses_routes,
)
from actors.feedback.verp import VerpAddress, VerpCodec, verp_codec

__all__ = [
    "BounceHandler",
    "BounceType",
    "Feedback",
    "FeedbackActions",
    "FeedbackKind",
    "FeedbackResources",
    "FeedbackSink",
    "FoundRecipient",
    "InboundMessage",
    "InboundSmtpServer",
    "InboundStatistics",
    "Mismatch",
    "Outcome",
    "RecipientHandler",
    "Report",
    "ReportKind",
    "ReportRefused",
    "SinkRef",
    "VerpAddress",
    "VerpCodec",
    "feedback_enabled",
    "feedback_records",
    "feedback_tree",
    "inbound_smtp_server",
    "open_feedback",
    "parse_report",
    "ses_routes",
    "verp_codec",
]

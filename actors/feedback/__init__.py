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
  recipient handlers by local-part prefix (``bounces+``, later ``unsubscribe+``).
"""

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
from actors.feedback.verp import VerpAddress, VerpCodec, verp_codec

__all__ = ["BounceType", "Feedback", "FeedbackKind", "FeedbackSink"]
__all__ += ["VerpAddress", "VerpCodec", "verp_codec"]
__all__ += ["FoundRecipient", "Mismatch", "Report", "ReportKind", "ReportRefused"]
__all__ += ["feedback_records", "parse_report"]
__all__ += ["BounceHandler", "InboundMessage", "InboundSmtpServer", "InboundStatistics"]
__all__ += ["RecipientHandler", "inbound_smtp_server"]

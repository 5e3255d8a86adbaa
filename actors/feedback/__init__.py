"""Feedback after SENT: bounces, complaints, deliveries and delays, from wherever they come.

Layer: above the services (it reads the suppression list of ``email_server`` and
publishes status events as ``email_server`` does), below ``profiles``. Sources
turn what a provider or a mailbox sends back into :class:`Feedback` records;
one sink applies them.

Modules:

- ``events``: the :class:`Feedback` record and the :class:`FeedbackSink` interface
  that every source hands its records to.
- ``verp``: the VERP return path: each email's envelope sender names its eventId, signed.
"""

from actors.feedback.events import BounceType, Feedback, FeedbackKind, FeedbackSink
from actors.feedback.verp import VerpAddress, VerpCodec, verp_codec

__all__ = ["BounceType", "Feedback", "FeedbackKind", "FeedbackSink"]
__all__ += ["VerpAddress", "VerpCodec", "verp_codec"]

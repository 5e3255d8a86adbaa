"""Feedback after SENT: bounces, complaints, deliveries and delays, from wherever they come.

Layer: above the services (it reads the suppression list of ``email_server`` and
publishes status events as ``email_server`` does), below ``profiles``. Sources
turn what a provider or a mailbox sends back into :class:`Feedback` records;
one sink applies them.

Modules:

- ``events``: the :class:`Feedback` record and the :class:`FeedbackSink` interface
  that every source hands its records to.
"""

from actors.feedback.events import BounceType, Feedback, FeedbackKind, FeedbackSink

__all__ = ["BounceType", "Feedback", "FeedbackKind", "FeedbackSink"]

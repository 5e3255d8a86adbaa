"""Feedback after SENT: bounces, complaints, deliveries and delays, from wherever they come.

Layer: above the services (it reads the suppression list of ``email_server`` and
publishes status events as ``email_server`` does), below ``profiles``. Sources
turn what a provider or a mailbox sends back into :class:`Feedback` records;
one sink applies them.

Modules:

- ``events``: the :class:`Feedback` record and the :class:`FeedbackSink` interface
  that every source hands its records to.
- ``actions``: the sink's decisions (suppress, count, pause, publish the status event).
- ``ledger``, ``ledger_elasticsearch``: reports already applied, soft bounces (durable).
- ``sns``: SNS messages parsed and their signatures checked (AWS's string to sign).
- ``ses``: SES event notifications (Bounce, Complaint, Delivery, Reject, DeliveryDelay).
- ``service``: the sink actor and its tree, ``SinkRef``, the SES route of the HTTP edge.
"""

from actors.feedback.actions import FeedbackActions, Outcome
from actors.feedback.events import BounceType, Feedback, FeedbackKind, FeedbackSink
from actors.feedback.service import (
    FeedbackResources,
    SinkRef,
    feedback_enabled,
    feedback_tree,
    open_feedback,
    ses_routes,
)

__all__ = [
    "BounceType",
    "Feedback",
    "FeedbackActions",
    "FeedbackKind",
    "FeedbackResources",
    "FeedbackSink",
    "Outcome",
    "SinkRef",
    "feedback_enabled",
    "feedback_tree",
    "open_feedback",
    "ses_routes",
]

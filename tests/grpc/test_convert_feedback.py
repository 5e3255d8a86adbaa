"""The feedback statuses and history records through the gRPC API's conversions: what
``supervisor.py status`` and ``search`` print is the document as GetEmail returns it."""

from __future__ import annotations

import msgspec

from actors.domain.edges import apply_status
from actors.domain.schema import FEEDBACK_STATUSES, Status
from actors.grpc.convert import (
    document_from_proto,
    document_to_proto,
    status_from_proto,
    status_to_proto,
)
from protos import email_pb2
from tests.support.feedback import feedback_event, sent_document


def test_every_status_has_a_proto_value_and_back() -> None:
    for status in Status:
        assert status_from_proto(status_to_proto(status)) is status
    assert {email_pb2.EmailStatus.Name(status_to_proto(s)) for s in FEEDBACK_STATUSES} == {
        "BOUNCED", "COMPLAINED", "DELIVERED", "DELAYED"
    }  # fmt: skip


def test_a_history_with_feedback_survives_the_round_trip() -> None:
    doc = sent_document()
    for event in (
        feedback_event(Status.DELIVERED, 1, "m1"),
        feedback_event(Status.BOUNCED, 2, "m2"),
    ):
        new = apply_status(doc, event)
        assert new is not None
        doc = new
    back = document_from_proto(document_to_proto(doc))
    assert back.status is Status.BOUNCED
    assert back.history == doc.history
    record = back.history[-1]
    assert record.feedback is not None and record.feedback.status_code == "5.1.1"
    assert record.feedback.feedback_type is None  # unset stays unset
    printed = msgspec.json.decode(msgspec.json.encode(back))
    assert printed["history"][0]["feedback"] is None  # the SENT attempt
    assert printed["history"][2]["feedback"]["bounceType"] == "hard"

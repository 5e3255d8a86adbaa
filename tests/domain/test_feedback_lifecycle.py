"""The lifecycle after SENT: feedback statuses in event-time order, late and repeated reports,
and the status event schema's versions (old consumers, old producers)."""

from __future__ import annotations

import itertools

import msgspec
import pytest

from actors.domain.edges import apply_status
from actors.domain.event_checks import BadMessage, decode_status_event
from actors.domain.schema import EmailDocument, EmailStatusEvent, Status, encode
from tests.support.feedback import (
    T0,
    EmailStatusEventV1,
    StatusV1,
    feedback_event,
    sent_document,
)


def _apply(doc: EmailDocument, *events: EmailStatusEvent) -> EmailDocument:
    for event in events:
        new = apply_status(doc, event)
        if new is not None:
            doc = new
    return doc


def _feedback_statuses(doc: EmailDocument) -> list[Status]:
    return [r.status for r in doc.history if r.feedback is not None]


def test_delivered_then_complained() -> None:
    doc = _apply(
        sent_document(),
        feedback_event(Status.DELIVERED, 1, "m1"),
        feedback_event(Status.COMPLAINED, 60, "m2"),
    )
    assert doc.status is Status.COMPLAINED
    assert [r.status for r in doc.history] == [Status.SENT, Status.DELIVERED, Status.COMPLAINED]
    assert doc.history[2].feedback is not None and doc.history[2].feedback.source_id == "m2"


def test_a_late_delivery_is_kept_but_does_not_move_the_status_back() -> None:
    doc = _apply(
        sent_document(),
        feedback_event(Status.COMPLAINED, 60, "m2"),
        feedback_event(Status.DELIVERED, 1, "m1"),  # arrives late, happened first
    )
    assert doc.status is Status.COMPLAINED
    assert _feedback_statuses(doc) == [Status.DELIVERED, Status.COMPLAINED]  # event-time order


def test_a_delivery_after_a_complaint_in_event_time_does_not_undo_it() -> None:
    doc = _apply(
        sent_document(),
        feedback_event(Status.COMPLAINED, 5, "m2"),
        feedback_event(Status.DELIVERED, 10, "m1"),
    )
    assert doc.status is Status.COMPLAINED
    assert _feedback_statuses(doc) == [Status.COMPLAINED, Status.DELIVERED]


def test_a_repeated_report_is_recorded_once() -> None:
    once = _apply(sent_document(), feedback_event(Status.BOUNCED, 1, "m1"))
    assert apply_status(once, feedback_event(Status.BOUNCED, 1, "m1")) is None
    assert once.status is Status.BOUNCED
    assert once.error is not None and "5.1.1" in once.error and "hard" in once.error


def test_delayed_then_delivered_then_an_async_bounce() -> None:
    doc = _apply(
        sent_document(),
        feedback_event(Status.DELAYED, 1, "m1"),
        feedback_event(Status.DELIVERED, 30, "m2"),
        feedback_event(Status.BOUNCED, 90, "m3"),
    )
    assert doc.status is Status.BOUNCED


def test_feedback_that_overtook_sent_counts_once_sent_is_recorded() -> None:
    pending = EmailDocument(
        event_id="ev-1", recipient="ana@example.org", template="welcome", created_at=T0
    )
    sending = apply_status(pending, EmailStatusEvent(event_id="ev-1", status=Status.SENDING))
    assert sending is not None
    early = apply_status(sending, feedback_event(Status.DELIVERED, 1, "m1"))
    assert early is not None and early.status is Status.SENDING  # waits for SENT
    sent = apply_status(
        early, EmailStatusEvent(event_id="ev-1", status=Status.SENT, occurred_at=T0)
    )
    assert sent is not None and sent.status is Status.DELIVERED
    assert [r.status for r in sent.history] == [Status.SENT, Status.DELIVERED]


def test_a_reject_after_sent_ends_failed_and_later_reports_do_not_revive_it() -> None:
    doc = _apply(
        sent_document(),
        feedback_event(Status.FAILED, 1, "m1"),
        feedback_event(Status.DELIVERED, 2, "m2"),
    )
    assert doc.status is Status.FAILED
    assert doc.error is not None and doc.error.startswith("rejected by ses")


def test_a_document_failed_by_the_email_server_stays_failed() -> None:
    doc = EmailDocument(event_id="ev-1", recipient="ana@example.org", template="welcome")
    failed = apply_status(doc, EmailStatusEvent(event_id="ev-1", status=Status.FAILED, error="x"))
    assert failed is not None
    after = apply_status(failed, feedback_event(Status.BOUNCED, 1, "m1"))
    assert after is not None and after.status is Status.FAILED and after.error == "x"


def test_send_lifecycle_events_after_feedback_are_ignored() -> None:
    doc = _apply(sent_document(), feedback_event(Status.DELIVERED, 1, "m1"))
    repeat = EmailStatusEvent(event_id="ev-1", status=Status.SENT, occurred_at=T0)
    assert apply_status(doc, repeat) is None


_REPORTS = [
    feedback_event(Status.DELAYED, 1, "a"),
    feedback_event(Status.DELIVERED, 2, "b"),
    feedback_event(Status.BOUNCED, 3, "c"),
    feedback_event(Status.COMPLAINED, 4, "d"),
    feedback_event(Status.DELIVERED, 2, "b"),  # a repeat
]


def test_the_outcome_does_not_depend_on_arrival_order() -> None:
    reference = _apply(sent_document(), *_REPORTS)
    assert reference.status is Status.COMPLAINED
    expected = [(r.status, r.at) for r in reference.history]
    for order in itertools.permutations(_REPORTS):  # all 120 arrival orders
        doc = _apply(sent_document(), *order)
        assert doc.status is Status.COMPLAINED
        assert [(r.status, r.at) for r in doc.history] == expected


def test_every_pair_of_reports_in_either_order_ends_the_same() -> None:
    for a, b in itertools.combinations(_REPORTS[:4], 2):
        assert _apply(sent_document(), a, b).status is _apply(sent_document(), b, a).status


# -- the schema's versions ------------------------------------------------------------


def test_an_old_consumer_reads_todays_send_lifecycle_events() -> None:
    event = EmailStatusEvent(event_id="ev-1", status=Status.SENT, provider="smtp", smtp_code=250)
    old = msgspec.json.decode(encode(event), type=EmailStatusEventV1)
    assert old.status is StatusV1.SENT and old.smtp_code == 250 and old.provider == "smtp"


def test_an_old_consumer_refuses_a_feedback_status_with_a_clear_error() -> None:
    # What the old integration does with it: dead-letter it with the reason, not crash.
    with pytest.raises(msgspec.ValidationError, match="status"):
        body = encode(feedback_event(Status.BOUNCED, 1, "m1"))
        msgspec.json.decode(body, type=EmailStatusEventV1)


def test_an_old_producers_event_decodes_as_version_1() -> None:
    body = encode(EmailStatusEventV1(event_id="ev-1", status=StatusV1.FAILED, error="boom"))
    assert b"schemaVersion" not in body
    event = decode_status_event(body)
    assert event.schema_version == 1 and event.feedback is None and event.error == "boom"


def test_feedback_events_round_trip_on_the_wire() -> None:
    event = feedback_event(Status.BOUNCED, 1, "m1")
    assert decode_status_event(encode(event)) == event
    assert b'"schemaVersion":2' in encode(event)


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"schema_version": 3}, "schemaVersion: must be 1..2"),
        ({"feedback": None}, "feedback: BOUNCED comes with the report"),
        ({"schema_version": 1}, "schemaVersion: feedback needs schemaVersion 2"),
        ({"status": Status.SENDING}, "feedback: not allowed with status SENDING"),
    ],
)
def test_unsound_feedback_events_are_refused(change: dict[str, object], why: str) -> None:
    event = msgspec.structs.replace(feedback_event(Status.BOUNCED, 1, "m1"), **change)
    with pytest.raises(BadMessage, match=why):
        decode_status_event(encode(event))


def test_an_enormous_diagnostic_is_refused() -> None:
    event = feedback_event(Status.BOUNCED, 1, "m1")
    assert event.feedback is not None
    big = msgspec.structs.replace(event.feedback, diagnostic="x" * 20000)
    with pytest.raises(BadMessage, match="feedback.diagnostic: is 20000 characters"):
        decode_status_event(encode(msgspec.structs.replace(event, feedback=big)))

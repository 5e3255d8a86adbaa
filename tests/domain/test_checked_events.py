"""``CheckedEvents``: the email server of auth's own process takes auth's render instead of
checking and rendering the event again, only for the very event auth checked."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec

from actors.domain.event_checks import CheckedEvents
from actors.domain.schema import EmailSendEvent, send_event_decoder
from actors.domain.templates import RenderedEmail

RENDERED = RenderedEmail(subject="Your code", text="123456", html=None)


def event(event_id: str = "e-1", **fields: object) -> EmailSendEvent:
    base: dict[str, object] = {
        "event_id": event_id,
        "recipient": "ada@example.com",
        "template": "verification",
        "variables": {"code": "123456", "n": 1.5},
        "requested_at": datetime(2026, 12, 1, 12, 0, 0, 123456, tzinfo=UTC),
    }
    return EmailSendEvent(**{**base, **fields})  # type: ignore[arg-type]


def test_the_event_decoded_from_the_bus_finds_its_render_once() -> None:
    checked = CheckedEvents()
    sent = event(tags=["a"], metadata={"k": "v"})
    checked.remember(sent, RENDERED)
    decoded = send_event_decoder.decode(msgspec.json.encode(sent))  # as the consumer gets it
    assert checked.take(decoded) is RENDERED
    assert checked.take(decoded) is None  # taken: a second copy is checked as usual


def test_another_event_under_the_same_id_is_checked() -> None:
    checked = CheckedEvents()
    checked.remember(event(), RENDERED)
    assert checked.take(event(attempt=2)) is None  # a retry's next attempt
    checked.remember(event(), RENDERED)
    assert checked.take(event(recipient="eve@example.com")) is None  # forged under its id
    assert checked.take(event()) is None  # a mismatch drops the entry: nothing is kept


def test_it_keeps_only_the_newest() -> None:
    checked = CheckedEvents(keep=2)
    for i in range(3):
        checked.remember(event(f"e-{i}"), RENDERED)
    assert checked.take(event("e-0")) is None  # fell out: checked as usual
    assert checked.take(event("e-1")) is RENDERED
    assert checked.take(event("e-2")) is RENDERED

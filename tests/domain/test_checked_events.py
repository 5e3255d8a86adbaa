"""``CheckedEvents``: the email server of auth's own process takes auth's render instead of
checking and rendering the event again, only for the very event auth checked."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

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


async def test_the_embedded_email_server_sends_on_auth_s_checks(tmp_path: Path) -> None:
    """In one process the email server takes auth's render of a request; an event published
    on the bus by anyone else (here: the same email again, by hand) is checked as usual."""
    from actors.profiles.embedded import open_embedded
    from tests.support.embedded import embedded_config, request

    async with open_embedded(embedded_config(tmp_path), grpc=False, shutdown=10.0) as app:
        accepted = await app.request(request())
        doc = await app.wait_terminal(accepted.event_id)
        await app.bus.publish_send(doc.to_send_event())  # a repeat: checked, then not sent
        later = await app.request(request(to="later@example.com"))
        await app.wait_terminal(later.event_id)
        [consumer] = [a for a in app.system.snapshot().actors if a.path == "email-server/consumer"]
    assert consumer.extra is not None
    assert (consumer.extra["taken"], consumer.extra["checked_by_auth"]) == (3, 2)

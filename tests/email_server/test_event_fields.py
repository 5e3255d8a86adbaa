"""Issue 17 at the email server: a send event's sender, copies and headers reach the provider,
and its tags and metadata ride on every status event (for webhooks to correlate)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from actors.bus.memory import MemoryBus
from actors.domain.edges import Failure, OutgoingEmail, SendResult
from actors.domain.schema import EmailSendEvent, EmailStatusEvent, Status, status_event_decoder
from actors.domain.templates import TemplateRenderer
from actors.email_server.service import RetryPolicy, SenderSettings, email_server_tree
from runtime import ActorSystem

ROOT = Path(__file__).resolve().parent.parent.parent
pytestmark = pytest.mark.trio


async def test_tags_and_metadata_ride_on_every_status_event(actor_system: ActorSystem) -> None:
    sent: list[OutgoingEmail] = []
    answers = [
        SendResult(provider="p", ok=False, code=451, reply="later", failure=Failure.TRANSIENT),
        SendResult(provider="p", ok=True, code=250, reply="ok"),
    ]

    class Provider:
        name = "p"

        async def send(self, email: OutgoingEmail) -> SendResult:
            sent.append(email)
            return answers.pop(0)

    bus = MemoryBus(100)
    settings = SenderSettings(
        root="es", sender="me@x.org", message_id_domain="x.org", report_sending=True,
        retry=RetryPolicy(max_attempts=3, base_delay_s=0.01, jitter=0.0),
    )
    renderer = TemplateRenderer(ROOT / "templates")
    provider: Any = Provider()
    await actor_system.spawn(email_server_tree(bus, provider, renderer, settings, name="es"))
    await bus.publish_send(
        EmailSendEvent(
            event_id="e1", recipient="ada@example.com", template="welcome",
            variables={"name": "Ada", "product": "Acme"},
            from_address="news@example.com", from_name="News", reply_to="help@example.com",
            cc=["carol@example.org"], bcc=["bob@example.net"], headers={"X-Campaign": "dec"},
            tags=["receipt"], metadata={"order": "42"},
        )
    )
    seen: list[EmailStatusEvent] = []
    with trio.fail_after(30):
        while not seen or seen[-1].status is not Status.SENT:
            seen.append(status_event_decoder.decode((await bus.next_status()).body))
    assert [s.status for s in seen] == [
        Status.SENDING, Status.RETRYING, Status.SENDING, Status.SENT
    ]
    assert all(s.tags == ["receipt"] and s.metadata == {"order": "42"} for s in seen)
    email = sent[-1]
    assert email.sender == "News <news@example.com>" and email.reply_to == "help@example.com"
    assert email.envelope_recipients == ["ada@example.com", "carol@example.org", "bob@example.net"]
    assert email.headers == {"X-Campaign": "dec"}


async def test_an_event_from_another_publisher_is_held_to_the_same_rules(
    actor_system: ActorSystem,
) -> None:
    sent: list[OutgoingEmail] = []

    class Provider:
        name = "p"

        async def send(self, email: OutgoingEmail) -> SendResult:
            sent.append(email)
            return SendResult(provider="p", ok=True, code=250, reply="ok")

    bus = MemoryBus(100)
    settings = SenderSettings(root="es", sender="me@x.org", message_id_domain="x.org")
    provider: Any = Provider()
    renderer = TemplateRenderer(ROOT / "templates")
    await actor_system.spawn(email_server_tree(bus, provider, renderer, settings, name="es"))
    await bus.publish_send(
        EmailSendEvent(
            event_id="e2", recipient="ada@example.com", template="welcome",
            variables={"name": "Ada", "product": "Acme"}, tags=["t"],
            headers={"Bcc": "victim@example.com"},
        )
    )
    with trio.fail_after(30):
        status = status_event_decoder.decode((await bus.next_status()).body)
    assert status.status is Status.FAILED and status.tags == ["t"]
    assert status.error is not None
    assert status.error.startswith("refused by the email server: headers['Bcc']: ")
    await trio.testing.wait_all_tasks_blocked()  # the reject follows the FAILED status
    assert sent == []
    assert [reason for _, _, reason in bus.dead_letters][-1].startswith(
        "invalid EmailSendEvent: headers['Bcc']"
    )


async def test_a_suppressed_copy_is_left_out_and_the_email_still_goes(
    actor_system: ActorSystem, tmp_path: Path
) -> None:
    from actors.email_server.safeguards import SendGuards
    from actors.email_server.suppression import SuppressionList

    sent: list[OutgoingEmail] = []

    class Provider:
        name = "p"

        async def send(self, email: OutgoingEmail) -> SendResult:
            sent.append(email)
            return SendResult(provider="p", ok=True, code=250, reply="ok")

    async with SuppressionList(tmp_path / "sent.sqlite3") as suppression:
        await suppression.add("carol@example.org", "hard bounce")
        await suppression.add("bob@example.net", "unsubscribed", category="newsletter")
        guards = SendGuards(suppression=suppression)
        bus = MemoryBus(100)
        settings = SenderSettings(root="es", sender="me@x.org", message_id_domain="x.org")
        renderer = TemplateRenderer(ROOT / "templates")
        provider: Any = Provider()
        await actor_system.spawn(
            email_server_tree(bus, provider, renderer, settings, name="es", guards=guards)
        )
        for event_id, category in (("e1", "transactional"), ("e2", "newsletter")):
            await bus.publish_send(
                EmailSendEvent(
                    event_id=event_id, recipient="ada@example.com", template="welcome",
                    variables={"name": "Ada", "product": "Acme"}, category=category,
                    cc=["carol@example.org", "dan@example.org"], bcc=["bob@example.net"],
                )
            )  # fmt: skip
        statuses = []
        with trio.fail_after(30):
            while len(statuses) < 2:
                statuses.append(status_event_decoder.decode((await bus.next_status()).body))
    assert {s.status for s in statuses} == {Status.SENT}
    by_id = {e.event_id: e for e in sent}
    # carol bounced for good: out of both; bob left the newsletter only
    assert by_id["e1"].envelope_recipients == [
        "ada@example.com", "dan@example.org", "bob@example.net"
    ]
    assert by_id["e2"].envelope_recipients == ["ada@example.com", "dan@example.org"]
    assert guards.suppressed_copies == 3 and guards.suppressed == 0

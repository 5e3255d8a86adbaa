"""The email server renders each attempt once: the consumer's render, done to check
the event, is the one the sender sends; the sender renders only a job without one."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec
import trio
import trio.testing

from actors.bus.memory import MemoryBus
from actors.domain.edges import Failure, OutgoingEmail, SendResult
from actors.domain.event_checks import screen_send_delivery
from actors.domain.schema import EmailSendEvent, EmailStatusEvent, Status, status_event_decoder
from actors.domain.templates import RenderedEmail, TemplateRenderer
from actors.email_server.service import RetryPolicy, SenderSettings, SendJob, email_server_tree
from config import LimitsConfig
from runtime import ActorSystem

ROOT = Path(__file__).resolve().parent.parent.parent
SETTINGS = SenderSettings(root="es", sender="me@x.org", message_id_domain="x.org")


class CountingRenderer(TemplateRenderer):
    """The real renderer, counting its renders."""

    def __init__(self) -> None:
        super().__init__(ROOT / "templates")
        self.renders = 0

    def render(
        self, template: str, variables: Mapping[str, Any], subject_override: str | None = None
    ) -> RenderedEmail:
        self.renders += 1
        return super().render(template, variables, subject_override)


class CapturingProvider:
    name = "capturing"

    def __init__(self, results: list[SendResult] | None = None) -> None:
        self.results = results or [SendResult(provider="capturing", ok=True, code=250)]
        self.emails: list[OutgoingEmail] = []

    async def send(self, email: OutgoingEmail) -> SendResult:
        self.emails.append(email)
        await trio.lowlevel.checkpoint()
        return self.results.pop(0) if len(self.results) > 1 else self.results[0]


def welcome(event_id: str = "e1", subject: str | None = None) -> EmailSendEvent:
    return EmailSendEvent(
        event_id=event_id,
        recipient="ada@example.com",
        template="welcome",
        variables={"name": "Ada", "product": "Acme"},
        subject=subject,
    )


async def statuses(bus: MemoryBus, until: Status) -> list[EmailStatusEvent]:
    seen: list[EmailStatusEvent] = []
    with trio.fail_after(600):
        while not seen or seen[-1].status is not until:
            seen.append(status_event_decoder.decode((await bus.next_status()).body))
    return seen


async def spawn(
    system: ActorSystem, provider: CapturingProvider, renderer: TemplateRenderer, **settings: Any
) -> MemoryBus:
    bus = MemoryBus(100)
    await system.spawn(
        email_server_tree(
            bus,
            provider,  # type: ignore[arg-type]
            renderer,
            msgspec.structs.replace(SETTINGS, **settings),
            concurrency=2,
            name="es",
        )
    )
    return bus


def as_sent(rendered: RenderedEmail, email: OutgoingEmail) -> bool:
    return (email.subject, email.text, email.html) == (
        rendered.subject,
        rendered.text,
        rendered.html,
    )


async def test_the_sender_sends_the_consumers_render_without_rendering_again(
    actor_system: ActorSystem,
) -> None:
    renderer = CountingRenderer()
    provider = CapturingProvider()
    bus = await spawn(actor_system, provider, renderer)
    for event in (welcome("e1"), welcome("e2", subject="Hi Ada")):
        before = renderer.renders
        await bus.publish_send(event)
        assert (await statuses(bus, Status.SENT))[-1].event_id == event.event_id
        assert renderer.renders == before + 1  # the consumer's check; the sender reused it
        expected = TemplateRenderer(ROOT / "templates").render(
            event.template, dict(event.variables), event.subject
        )
        assert as_sent(expected, provider.emails[-1])
    assert provider.emails[-1].subject == "Hi Ada"


async def test_the_sender_renders_a_job_that_carries_no_rendering(
    actor_system: ActorSystem,
) -> None:
    renderer = CountingRenderer()
    provider = CapturingProvider()
    bus = await spawn(actor_system, provider, renderer)
    event = welcome()
    await actor_system.lookup("es/senders/sender-0").send(SendJob(event, None))
    await statuses(bus, Status.SENT)
    assert renderer.renders == 1  # no consumer in the way: the sender rendered
    assert as_sent(renderer.render(event.template, dict(event.variables)), provider.emails[0])

    # A job that does carry one is sent as it is, with no render at all.
    given = RenderedEmail(subject="Given", text="given text\n", html=None)
    renders = renderer.renders
    await actor_system.lookup("es/senders/sender-1").send(SendJob(welcome("e2"), None, given))
    await statuses(bus, Status.SENT)
    assert renderer.renders == renders
    assert as_sent(given, provider.emails[-1])


async def test_a_retry_is_screened_and_rendered_afresh_once_per_attempt(
    autojump_clock: trio.testing.MockClock, actor_system: ActorSystem
) -> None:
    renderer = CountingRenderer()
    later = SendResult(provider="capturing", ok=False, code=451, failure=Failure.TRANSIENT)
    provider = CapturingProvider([later, SendResult(provider="capturing", ok=True, code=250)])
    retry = RetryPolicy(max_attempts=3, base_delay_s=1.0, jitter=0.0)
    bus = await spawn(actor_system, provider, renderer, retry=retry)
    await bus.publish_send(welcome())
    seen = await statuses(bus, Status.SENT)
    assert [s.status for s in seen] == [Status.RETRYING, Status.SENT]
    assert len(provider.emails) == 2
    assert renderer.renders == 2  # each attempt came through the bus and was checked again
    assert provider.emails[0].text == provider.emails[1].text


async def test_screening_hands_back_the_render_it_checked() -> None:
    renderer = CountingRenderer()
    limits = LimitsConfig()
    bus = MemoryBus(10)
    event = welcome(subject="Hi")
    await bus.publish_send(event)
    screened = await screen_send_delivery(await bus.next_send(), bus, limits, renderer)
    assert screened is not None
    got, rendered = screened
    assert got == event and renderer.renders == 1
    assert rendered == renderer.render(event.template, dict(event.variables), event.subject)

    # Refused as before: FAILED published, dead-lettered, nothing handed back.
    await bus.publish_send(
        EmailSendEvent(event_id="e2", recipient="ada@example.com", template="welcome")
    )
    assert await screen_send_delivery(await bus.next_send(), bus, limits, renderer) is None
    failed = status_event_decoder.decode((await bus.next_status()).body)
    assert failed.status is Status.FAILED and "variables" in (failed.error or "")
    assert bus.dead_letters and bus.dead_letters[-1][0] == "send"

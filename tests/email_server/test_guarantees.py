"""The delivery promises, each against real servers where it can be:

* retries honour the provider's retry-after and back off exponentially (MockClock);
* a copy of an email that is being sent right now is not sent alongside it;
* a per-domain limit holds at the SMTP server: no one-second window above the rate;
* a permanent refusal of a recipient suppresses the address, durably, and later
  emails to it end SUPPRESSED without the provider being contacted; the CLI edits
  the list;
* a message that keeps crashing its consumer is dead-lettered by RabbitMQ after
  ``bus.max_deliveries`` deliveries, and ``supervisor.py dlq list / replay`` show
  and replay it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from actors.bus.memory import MemoryBus
from actors.domain.edges import Failure, SendResult
from actors.domain.schema import EmailSendEvent, EmailStatusEvent, Status, status_event_decoder
from actors.domain.templates import TemplateRenderer
from actors.email_server.safeguards import SendGuards
from actors.email_server.service import RetryPolicy, SenderSettings, email_server_tree
from actors.email_server.suppression import SuppressionList, is_recipient_refusal
from actors.stores.claims_sqlite import SqliteClaims
from config import BusConfig
from runtime import ActorSystem, AsyncioEdge, open_actor_system
from tests.support.checks import max_in_any_window, received_ids
from tests.support.embedded import embedded_config, request, running
from tests.support.smtp_servers import CapturingServer, FaultServer

ROOT = Path(__file__).resolve().parent.parent.parent

# -- retries under MockClock ------------------------------------------------------------


def _renderer() -> TemplateRenderer:
    return TemplateRenderer(ROOT / "templates")


def send_event(event_id: str, recipient: str) -> EmailSendEvent:
    return EmailSendEvent(
        event_id=event_id,
        recipient=recipient,
        template="welcome",
        variables={"name": "Ada", "product": "Acme"},
    )


class ScriptedProvider:
    """Answers each send with the next scripted result; records when each came."""

    name = "scripted"

    def __init__(self, results: list[SendResult], delay: float = 0.0) -> None:
        self.results = list(results)
        self.delay = delay
        self.times: list[float] = []

    async def send(self, email: Any) -> SendResult:
        self.times.append(trio.current_time())
        await trio.sleep(self.delay)
        return self.results.pop(0) if len(self.results) > 1 else self.results[0]


def refused(code: int = 451, failure: Failure = Failure.TRANSIENT, **kw: Any) -> SendResult:
    return SendResult(
        provider="scripted", ok=False, code=code, reply="try later", failure=failure, **kw
    )


OK = SendResult(provider="scripted", ok=True, code=250, reply="2.0.0 Ok")


async def statuses(bus: MemoryBus, until: Status) -> list[EmailStatusEvent]:
    seen: list[EmailStatusEvent] = []
    with trio.fail_after(10_000):
        while not seen or seen[-1].status is not until:
            delivery = await bus.next_status()
            seen.append(status_event_decoder.decode(delivery.body))
    return seen


async def run_one(
    system: ActorSystem, provider: ScriptedProvider, policy: RetryPolicy
) -> list[EmailStatusEvent]:
    bus = MemoryBus(100)
    settings = SenderSettings(root="es", sender="me@x.org", message_id_domain="x.org", retry=policy)
    await system.spawn(
        email_server_tree(bus, provider, _renderer(), settings, concurrency=2, name="es")  # type: ignore[arg-type]
    )
    await bus.publish_send(send_event("e1", "a@example.com"))
    return await statuses(bus, Status.SENT)


async def test_retry_waits_as_long_as_the_provider_asked(
    autojump_clock: trio.testing.MockClock, actor_system: ActorSystem
) -> None:
    provider = ScriptedProvider([refused(retry_after=30.0), refused(retry_after=None), OK])
    policy = RetryPolicy(max_attempts=5, base_delay_s=2.0, jitter=0.0)
    seen = await run_one(actor_system, provider, policy)
    t1, t2, t3 = provider.times
    assert 30.0 <= t2 - t1 < 30.1  # the hint, not the 2 s the policy would wait
    assert 4.0 <= t3 - t2 < 4.1  # attempt 2 -> 3: base * 2 ** 1
    retrying = [s for s in seen if s.status is Status.RETRYING]
    assert [s.attempt for s in retrying] == [1, 2]
    assert retrying[0].next_attempt_at is not None and retrying[0].smtp_code == 451
    gap = retrying[0].next_attempt_at - retrying[0].occurred_at
    assert timedelta(seconds=29.9) < gap < timedelta(seconds=30.1)
    assert seen[-1].attempt == 3


async def test_backoff_doubles_with_jitter_and_is_capped(
    autojump_clock: trio.testing.MockClock, actor_system: ActorSystem
) -> None:
    provider = ScriptedProvider([refused()] * 6 + [OK])
    policy = RetryPolicy(max_attempts=8, base_delay_s=1.0, max_delay_s=10.0, jitter=0.2)
    await run_one(actor_system, provider, policy)
    gaps = [b - a for a, b in zip(provider.times, provider.times[1:], strict=False)]
    for n, gap in enumerate(gaps, 1):
        base = min(10.0, 1.0 * 2 ** (n - 1))
        assert base * 0.8 - 0.01 <= gap <= base * 1.2 + 0.01, (n, gap)


def test_retry_policy_delay_never_below_the_hint() -> None:
    policy = RetryPolicy(base_delay_s=2.0, max_delay_s=300.0, jitter=0.2)
    assert all(1.6 <= policy.delay(1, None) <= 2.4 for _ in range(100))
    assert policy.delay(1, 120.0) == 120.0
    assert all(policy.delay(20, None) <= 360 for _ in range(100))


# -- one copy at a time ---------------------------------------------------------------------


async def test_a_copy_arriving_while_the_first_is_being_sent_waits_and_is_not_sent(tmp_path):
    async with FaultServer(delay=0.3) as smtp:  # each SMTP step takes 0.3 s
        config = embedded_config(
            tmp_path, provider={"kind": "smtp", "smtp": {"host": "127.0.0.1", "port": smtp.port}}
        )
        async with running(config) as app:
            accepted = await app.request(request())
            doc = await app.store.get(accepted.event_id)
            assert doc is not None
            await trio.sleep(0.2)  # the first copy is with the SMTP server now
            await app.bus.publish_send(doc.to_send_event())  # e.g. a sweeper's republish
            done = await app.wait_terminal(accepted.event_id)
            await trio.sleep(0.5)
            senders = [
                a.extra or {} for a in app.system.snapshot().actors if "/senders/sender-" in a.path
            ]
    assert done.status is Status.SENT
    assert received_ids(smtp) == {accepted.event_id: 1}
    assert max(s.get("concurrent_repeats", 0) for s in senders) == 1


# -- per-domain limit, measured at the SMTP server -------------------------------------------


async def test_domain_limit_holds_at_the_smtp_server(tmp_path):
    async with CapturingServer() as smtp:
        config = embedded_config(
            tmp_path,
            provider={"kind": "smtp", "smtp": {"host": "127.0.0.1", "port": smtp.port}},
            throttle={"per_domain": {"gmail.com": 5.0}},
        )
        async with running(config) as app:
            t0 = trio.current_time()
            ids: list[str] = []

            async def one(to: str) -> None:
                ids.append((await app.request(request(to=to))).event_id)

            async with trio.open_nursery() as nursery:
                for i in range(25):
                    nursery.start_soon(one, f"user{i}@gmail.com")
                    nursery.start_soon(one, f"user{i}@example.com")
            for event_id in ids:
                await app.wait_terminal(event_id, timeout=60)
            elapsed = trio.current_time() - t0
    messages = smtp.messages()
    gmail = [m.at for m in messages if m.rcpt_tos[0].endswith("@gmail.com")]
    other = [m.at for m in messages if m.rcpt_tos[0].endswith("@example.com")]
    assert len(gmail) == 25 and len(other) == 25
    assert max_in_any_window(gmail) <= 5  # at the server, in any one second
    assert max(gmail) - min(gmail) >= 4 * 1.0  # 25 at 5/s: five windows
    assert elapsed < 15


# -- suppression -----------------------------------------------------------------------------


async def test_suppression_list_is_durable_and_case_insensitive(tmp_path):
    path = tmp_path / "sent.sqlite3"
    async with SqliteClaims(path), SuppressionList(path) as sup:  # one file, shared
        assert await sup.add("Bob@Example.com", "550 5.1.1 no such user", event_id="e1")
        assert not await sup.add("bob@example.com", "again")  # the first entry stays
    async with SuppressionList(path) as sup:
        entry = sup.lookup("BOB@example.COM")
        assert entry is not None
        assert entry.reason == "550 5.1.1 no such user" and entry.event_id == "e1"
        assert [e.address for e in await sup.entries()] == ["bob@example.com"]
        assert await sup.remove("bob@example.com") and sup.lookup("bob@example.com") is None
        assert not await sup.remove("bob@example.com")


def test_only_a_refusal_of_the_recipient_suppresses():
    def result(
        code: int | None, stage: str | None, failure: Failure = Failure.PERMANENT
    ) -> SendResult:
        return SendResult(provider="smtp", ok=False, code=code, failure=failure, stage=stage)

    assert is_recipient_refusal(result(550, "RCPT"))
    assert is_recipient_refusal(result(554, "DATA"))
    assert not is_recipient_refusal(result(553, "MAIL"))  # our sender was refused
    assert not is_recipient_refusal(result(None, "DATA"))  # no reply code
    assert not is_recipient_refusal(result(451, "RCPT", Failure.TRANSIENT))
    assert not is_recipient_refusal(result(421, "connect", Failure.THROTTLED))


async def test_a_bounced_address_is_suppressed_and_not_contacted_again(tmp_path):
    bounce = "gone@example.com"
    async with FaultServer(rcpt_replies={bounce: "550 5.1.1 No such user"}) as smtp:
        config = embedded_config(
            tmp_path, provider={"kind": "smtp", "smtp": {"host": "127.0.0.1", "port": smtp.port}}
        )
        async with running(config) as app:
            first = await app.wait_terminal((await app.request(request(to=bounce))).event_id)
            refusals = smtp.failed
            second = await app.wait_terminal(
                (await app.request(request(to="GONE@example.com"))).event_id
            )
            other = await app.wait_terminal(
                (await app.request(request(to="ok@example.com"))).event_id
            )
        assert first.status is Status.FAILED and "550" in (first.error or "")
        assert second.status is Status.SUPPRESSED and "No such user" in (second.error or "")
        assert (
            second.attempts == 1
            and second.provider is None
            and [h.status for h in second.history] == [Status.SUPPRESSED]
        )
        assert smtp.failed == refusals  # the server never saw the second request
        assert other.status is Status.SENT
        # durable: a new process still suppresses it
        async with running(config) as app:
            third = await app.wait_terminal((await app.request(request(to=bounce))).event_id)
        assert third.status is Status.SUPPRESSED and smtp.failed == refusals


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "supervisor.py"), *args],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )


def test_suppression_cli_lists_adds_and_removes(tmp_path):
    env = {
        **os.environ,
        "MAILACTORS__EMAIL_SERVER__IDEMPOTENCY_PATH": str(tmp_path / "sent.sqlite3"),
    }
    env.pop("MAILACTORS_PROFILE", None)
    added = _cli(env, "suppression", "add", "Ann@Example.com", "--reason", "asked us to stop")
    assert added.returncode == 0, added.stderr
    assert json.loads(added.stdout) == {"address": "ann@example.com", "added": True}
    listed = _cli(env, "suppression", "list")
    first = json.loads(listed.stdout.splitlines()[0])
    assert first["address"] == "ann@example.com" and first["reason"] == "asked us to stop"
    assert first["source"] == "operator"
    assert _cli(env, "suppression", "remove", "ann@example.com").returncode == 0
    assert _cli(env, "suppression", "remove", "ann@example.com").returncode == 1  # not there
    assert "0 suppressed" in _cli(env, "suppression", "list").stdout
    assert _cli(env, "suppression", "add", "not-an-address").returncode == 2


async def test_an_operator_suppression_takes_effect_in_a_running_system(tmp_path):
    config = embedded_config(tmp_path)
    async with running(config) as app:
        async with SuppressionList(config.email_server.idempotency_path) as sup:  # like the CLI
            await sup.add("optout@example.com", "asked us to stop", source="operator")
        doc = await app.wait_terminal(
            (await app.request(request(to="optout@example.com"))).event_id
        )
    assert doc.status is Status.SUPPRESSED and doc.error == "suppressed: asked us to stop"


# -- poison messages and the dead-letter queue (real RabbitMQ) ---------------------------------


class PoisonedProvider:
    """Sends everything, except that an email to ``poison@`` crashes it (a bug)."""

    name = "poisoned"

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.crashes = 0

    async def send(self, email: Any) -> SendResult:
        await trio.lowlevel.checkpoint()
        if email.recipient.startswith("poison@"):
            self.crashes += 1
            raise RuntimeError("provider bug: cannot handle this email")
        self.sent.append(email.event_id)
        return OK


@pytest.mark.services
async def test_a_poison_message_is_dead_lettered_after_max_deliveries(
    rabbitmq_url: str, edge: AsyncioEdge, tmp_path: Path
) -> None:
    from actors.bus import delete_topology
    from actors.bus.rabbitmq import RabbitBus
    from tests.support.rabbitmq import TIERS, make_config

    config: BusConfig = make_config(rabbitmq_url, max_deliveries=3)
    try:
        bus = RabbitBus(config, url=rabbitmq_url, role="email-server", delay_tiers=TIERS)
        status_side = RabbitBus(config, url=rabbitmq_url, role="integration", delay_tiers=TIERS)
        await bus.open()
        await status_side.open()
        try:
            async with open_actor_system("poison", shutdown=10.0) as actor_system:
                await _poison_run(actor_system, bus, config, rabbitmq_url)
        finally:
            with trio.CancelScope(shield=True):
                await bus.close()
                await status_side.close()
    finally:
        with trio.CancelScope(shield=True):
            await edge.run(delete_topology, config, url=rabbitmq_url, delay_tiers=TIERS)


async def _poison_run(
    actor_system: ActorSystem, bus: Any, config: BusConfig, rabbitmq_url: str
) -> None:
    provider = PoisonedProvider()
    settings = SenderSettings(root="es", sender="me@x.org", message_id_domain="x.org")
    await actor_system.spawn(
        email_server_tree(
            bus, provider, _renderer(), settings, concurrency=2, name="es",  # type: ignore[arg-type]
            guards=SendGuards(),
        )
    )
    poison = send_event("poison-1", "poison@example.com")
    fine = send_event("fine-1", "fine@example.com")
    await bus.publish_send(poison)
    await bus.publish_send(fine)
    with trio.fail_after(30):
        while True:
            letters = await bus.dead_letters(10)
            if letters and "fine-1" in provider.sent:
                break
            await trio.sleep(0.1)
    [letter] = letters
    assert letter.queue == config.send_queue and b"poison-1" in letter.body
    assert "delivery limit" in letter.reason
    assert provider.crashes == 3  # one per delivery: crashed, requeued, redelivered
    restarts = actor_system.snapshot().by_path()
    assert sum(a.restarts for p, a in restarts.items() if "/senders/sender-" in p) >= 1
    # the good one went through, once
    assert provider.sent == ["fine-1"]

    # the CLI, as an operator would use it
    env = {**os.environ}
    env.pop("MAILACTORS_PROFILE", None)
    for key, value in {
        "URL": rabbitmq_url,
        "SEND_EXCHANGE": config.send_exchange,
        "STATUS_EXCHANGE": config.status_exchange,
        "SEND_QUEUE": config.send_queue,
        "STATUS_QUEUE": config.status_queue,
        "DEAD_LETTER_EXCHANGE": config.dead_letter_exchange,
        "DEAD_LETTER_QUEUE": config.dead_letter_queue,
        "MAX_DELIVERIES": "3",
    }.items():
        env[f"MAILACTORS__BUS__{key}"] = value
    listed = await trio.to_thread.run_sync(_cli, env, "--profile", "distributed", "dlq", "list")
    assert listed.returncode == 0, listed.stderr
    row = json.loads(listed.stdout.splitlines()[0])
    assert row["eventId"] == "poison-1" and "delivery limit" in row["reason"]
    assert "1 dead letter(s)" in listed.stdout.splitlines()[-1]
    replayed = await trio.to_thread.run_sync(
        _cli, env, "--profile", "distributed", "dlq", "replay", "--limit", "5"
    )
    assert json.loads(replayed.stdout) == {"replayed": 1}
    # replayed with a fresh delivery count: three more crashes, dead-lettered again
    with trio.fail_after(30):
        while True:
            if provider.crashes >= 6 and await bus.dead_letters(10):
                break
            await trio.sleep(0.1)


def test_dlq_cli_in_the_embedded_profile_says_where_dead_letters_are():
    env = {**os.environ}
    env.pop("MAILACTORS_PROFILE", None)
    for action in ("list", "replay", "purge"):
        out = _cli(env, "dlq", action)
        # No broker, nothing done: a refusal (status 2, as a usage error), saying where they are.
        assert out.returncode == 2 and out.stdout == "", out
        assert "has no broker" in out.stderr and "in-process" in out.stderr


# -- the lifecycle rule for SENDING and the recorded due time --------------------------------


def test_sending_overtaken_by_its_outcome_is_ignored_and_the_due_time_is_kept():
    from datetime import UTC, datetime

    from actors.domain.edges import apply_status
    from actors.domain.schema import EmailDocument

    t0 = datetime(2030, 1, 1, tzinfo=UTC)
    due = t0 + timedelta(seconds=30)
    doc = EmailDocument(event_id="e", recipient="a@example.com", template="welcome")
    retrying = apply_status(
        doc, EmailStatusEvent(event_id="e", status=Status.RETRYING, attempt=1, next_attempt_at=due)
    )
    assert retrying is not None and retrying.next_attempt_at == due
    # the SENDING of attempt 1 arrives after its RETRYING (two publishes in flight at once)
    assert (
        apply_status(retrying, EmailStatusEvent(event_id="e", status=Status.SENDING, attempt=1))
        is None
    )
    sending = apply_status(
        retrying, EmailStatusEvent(event_id="e", status=Status.SENDING, attempt=2)
    )
    assert (
        sending is not None and sending.status is Status.SENDING and sending.next_attempt_at is None
    )
    sent = apply_status(sending, EmailStatusEvent(event_id="e", status=Status.SENT, attempt=2))
    assert sent is not None and [h.attempt for h in sent.history] == [1, 2]

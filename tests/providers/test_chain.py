"""Failover between providers and the circuit breaker in front of each.

The breaker and the chain's rules are tested with scripted providers under Trio's
MockClock (``autojump_clock``: cool-downs take no real time). Failover is then
tested with real servers: SES answered by moto or by ``FakeSesServer`` (5xx,
throttling), and an aiosmtpd ``CapturingServer`` as the SMTP relay behind it, up to
a whole embedded system whose documents record which provider sent each email and
whose introspection snapshot shows the breakers.
"""

from __future__ import annotations

import os
from collections import deque
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio
import trio.testing

from actors.auth.service import RequestEmail
from actors.domain.edges import Failure, OutgoingEmail, SendResult
from actors.domain.schema import Status
from actors.profiles.embedded import open_embedded
from actors.providers.breaker import BreakerState, BreakerStatistics, CircuitBreaker
from actors.providers.build import make_provider
from actors.providers.chain import ChainProvider, provider_report
from actors.providers.ses import SesProvider
from actors.providers.smtp import SmtpProvider
from config import ConfigError, load_config
from runtime import AsyncioEdge
from tests.support.emails import outgoing_email
from tests.support.ses_servers import FakeSesServer, MotoSes, Reply
from tests.support.smtp_servers import CapturingServer

REGION = "eu-west-1"
SENDER = "noreply@mailactors.test"


def outgoing(i: int = 1, **changes: Any) -> OutgoingEmail:
    hello = {"subject": f"Hello ({i})", "text": "Hello Ana.\n"}
    return outgoing_email(i, domain="mailactors.test", **(hello | changes))


class Scripted:
    """A provider answering from a script of outcomes (None = ok), then ``default``.

    While ``gate`` is set, each send waits for it to be set again (to hold a probe).
    """

    def __init__(
        self, name: str, script: list[Failure | None] | None = None, default: Failure | None = None
    ) -> None:
        self.name = name
        self.script: deque[Failure | None] = deque(script or [])
        self.default = default
        self.calls: list[str] = []
        self.gate: trio.Event | None = None
        self.opened = self.closed = False

    async def open(self) -> None:
        self.opened = True

    async def close(self) -> None:
        self.closed = True

    async def send(self, email: OutgoingEmail) -> SendResult:
        self.calls.append(email.event_id)
        if self.gate is not None:
            await self.gate.wait()
        else:
            await trio.lowlevel.checkpoint()
        outcome = self.script.popleft() if self.script else self.default
        if outcome is None:
            return SendResult(
                provider=self.name, ok=True, message_id=f"{self.name}-{email.event_id}"
            )
        return SendResult(
            provider=self.name,
            ok=False,
            failure=outcome,
            reply=f"{self.name} says {outcome}",
            retry_after=3.0 if outcome is Failure.THROTTLED else None,
        )


# -- the breaker on its own ------------------------------------------------------------


def fail(breaker: CircuitBreaker, times: int = 1) -> None:
    """*times* calls that the breaker admits and that fail."""
    for _ in range(times):
        t = breaker.acquire()
        assert t is not None
        breaker.failure(t)


def tripped(failures: int, cool_down: float) -> CircuitBreaker:
    """A breaker just opened by *failures* failures in a row."""
    breaker = CircuitBreaker(failures=failures, cool_down=cool_down)
    fail(breaker, failures)
    return breaker


def assert_open(
    breaker: CircuitBreaker, *, failures: int, times_opened: int, retry_in: float
) -> BreakerStatistics:
    """Open after *failures* in a row, for the *times_opened*th time, for *retry_in* s more;
    it admits nobody."""
    stats = breaker.statistics()
    assert stats.state is BreakerState.OPEN and stats.consecutive_failures == failures
    assert stats.opened_at is not None and stats.times_opened == times_opened
    assert stats.retry_in == pytest.approx(retry_in)
    assert breaker.acquire() is None
    return stats


async def test_breaker_opens_after_n_consecutive_failures(
    autojump_clock: trio.testing.MockClock,
) -> None:
    breaker = CircuitBreaker(failures=3, cool_down=10.0)
    fail(breaker, 2)
    t = breaker.acquire()
    assert t is not None
    breaker.success(t)  # a success in between resets the count
    assert breaker.statistics().consecutive_failures == 0
    fail(breaker, 3)
    assert_open(breaker, failures=3, times_opened=1, retry_in=10.0)


async def test_breaker_half_open_lets_one_probe_through_and_closes_on_success(
    autojump_clock: trio.testing.MockClock,
) -> None:
    breaker = tripped(failures=1, cool_down=30.0)
    await trio.sleep(29.0)
    assert breaker.acquire() is None and breaker.state is BreakerState.OPEN
    await trio.sleep(1.0)
    assert breaker.state is BreakerState.HALF_OPEN
    probe = breaker.acquire()
    assert probe is not None and probe.probe
    assert breaker.acquire() is None  # others skip it while the probe is out
    assert breaker.statistics().probing
    breaker.success(probe)
    stats = breaker.statistics()
    assert stats.state is BreakerState.CLOSED and stats.consecutive_failures == 0
    assert not stats.probing
    assert breaker.acquire() is not None


async def test_breaker_failed_probe_opens_again_for_another_cool_down(
    autojump_clock: trio.testing.MockClock,
) -> None:
    breaker = tripped(failures=2, cool_down=5.0)
    first_opened = breaker.statistics().opened_at
    await trio.sleep(5.0)
    probe = breaker.acquire()
    assert probe is not None
    breaker.failure(probe)
    stats = assert_open(breaker, failures=3, times_opened=2, retry_in=5.0)
    assert stats.opened_at is not None and first_opened is not None
    assert stats.opened_at >= first_opened


async def test_breaker_cancelled_probe_frees_the_slot(
    autojump_clock: trio.testing.MockClock,
) -> None:
    breaker = tripped(failures=1, cool_down=1.0)
    await trio.sleep(1.0)
    probe = breaker.acquire()
    assert probe is not None
    breaker.release(probe)
    again = breaker.acquire()
    assert again is not None and again.probe


async def test_breaker_late_results_do_not_close_it(autojump_clock: trio.testing.MockClock) -> None:
    breaker = CircuitBreaker(failures=1, cool_down=10.0)
    early = breaker.acquire()
    late = breaker.acquire()
    assert early is not None and late is not None
    breaker.failure(early)
    breaker.success(late)  # admitted before it opened: not a probe
    assert breaker.state is BreakerState.OPEN


def test_breaker_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="failures"):
        CircuitBreaker(failures=0, clock=lambda: 0.0)
    with pytest.raises(ValueError, match="cool_down"):
        CircuitBreaker(cool_down=-1, clock=lambda: 0.0)


# -- the chain's rules, with scripted providers -----------------------------------------


async def test_transient_failure_moves_the_email_to_the_next_provider(
    autojump_clock: trio.testing.MockClock,
) -> None:
    first, second = Scripted("ses", [Failure.TRANSIENT]), Scripted("relay")
    chain = ChainProvider([first, second])
    result = await chain.send(outgoing(1))
    assert result.ok and result.provider == "relay" and result.message_id == "relay-ev-1"
    assert first.calls == ["ev-1"] and second.calls == ["ev-1"]
    assert chain.statistics().failovers == 1


async def test_throttled_moves_on_too(autojump_clock: trio.testing.MockClock) -> None:
    first, second = Scripted("ses", [Failure.THROTTLED]), Scripted("relay")
    result = await ChainProvider([first, second]).send(outgoing())
    assert result.ok and result.provider == "relay"


async def test_permanent_failure_does_not_move_on(autojump_clock: trio.testing.MockClock) -> None:
    first, second = Scripted("ses", [Failure.PERMANENT]), Scripted("relay")
    chain = ChainProvider([first, second], failures=1)
    result = await chain.send(outgoing())
    assert not result.ok and result.failure is Failure.PERMANENT and result.provider == "ses"
    assert second.calls == []
    # and it does not count against the provider: it answered
    assert chain.breaker("ses").state is BreakerState.CLOSED


async def test_first_success_is_used(autojump_clock: trio.testing.MockClock) -> None:
    first, second = Scripted("ses"), Scripted("relay")
    chain = ChainProvider([first, second])
    result = await chain.send(outgoing())
    assert result.provider == "ses" and second.calls == []
    assert chain.statistics().failovers == 0


async def test_when_every_provider_fails_the_chain_fails_transiently(
    autojump_clock: trio.testing.MockClock,
) -> None:
    chain = ChainProvider(
        [Scripted("ses", [Failure.THROTTLED]), Scripted("relay", [Failure.TRANSIENT])]
    )
    result = await chain.send(outgoing())
    assert not result.ok and result.failure is Failure.TRANSIENT
    assert result.provider == "relay"  # the last one tried
    assert result.reply and "ses: ses says throttled" in result.reply
    assert "relay: relay says transient" in result.reply
    assert result.retry_after == 3.0  # the throttled provider's hint
    assert chain.statistics().exhausted == 1


async def test_when_every_provider_throttles_the_chain_is_throttled(
    autojump_clock: trio.testing.MockClock,
) -> None:
    chain = ChainProvider(
        [Scripted("a", default=Failure.THROTTLED), Scripted("b", default=Failure.THROTTLED)]
    )
    result = await chain.send(outgoing())
    assert result.failure is Failure.THROTTLED


def before_a_relay(first: Scripted, failures: int, cool_down: float) -> ChainProvider:
    """*first*, then a provider named "relay" that sends everything."""
    return ChainProvider([first, Scripted("relay")], failures=failures, cool_down=cool_down)


async def test_breaker_skips_a_failing_provider_then_probes_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    ses = Scripted("ses", default=Failure.TRANSIENT)
    chain = before_a_relay(ses, failures=3, cool_down=60.0)
    for i in range(3):
        assert (await chain.send(outgoing(i))).provider == "relay"
    assert len(ses.calls) == 3
    [link, _] = chain.statistics().links
    assert link.state is BreakerState.OPEN and link.consecutive_failures == 3
    assert link.opened_at is not None
    # open: emails go straight to the relay, SES is not called
    for i in range(3, 8):
        assert (await chain.send(outgoing(i))).provider == "relay"
    assert len(ses.calls) == 3
    assert chain.statistics().links[0].skipped == 5
    # cool-down over: one probe goes to SES; sends during the probe skip it
    await trio.sleep(60.0)
    assert chain.statistics().links[0].state is BreakerState.HALF_OPEN
    ses.default = None  # SES has recovered
    ses.gate = trio.Event()
    results: dict[int, SendResult] = {}

    async def send(i: int) -> None:
        results[i] = await chain.send(outgoing(i))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(send, 100)
        await trio.testing.wait_all_tasks_blocked()
        assert ses.calls[-1] == "ev-100"  # the probe, held at the gate
        for i in range(101, 105):
            nursery.start_soon(send, i)
        await trio.testing.wait_all_tasks_blocked()
        assert [results[i].provider for i in range(101, 105)] == ["relay"] * 4
        assert chain.statistics().links[0].state is BreakerState.HALF_OPEN
        ses.gate.set()
    assert results[100].provider == "ses" and results[100].ok
    assert chain.statistics().links[0].state is BreakerState.CLOSED
    ses.gate = None
    assert (await chain.send(outgoing(200))).provider == "ses"


async def test_a_failed_probe_keeps_the_provider_out_for_another_cool_down(
    autojump_clock: trio.testing.MockClock,
) -> None:
    ses = Scripted("ses", default=Failure.TRANSIENT)
    chain = before_a_relay(ses, failures=1, cool_down=10.0)
    await chain.send(outgoing(1))
    await trio.sleep(10.0)
    await chain.send(outgoing(2))  # the probe, failed
    assert len(ses.calls) == 2
    stats = chain.statistics().links[0]
    assert stats.state is BreakerState.OPEN and stats.times_opened == 2
    await trio.sleep(9.0)
    await chain.send(outgoing(3))
    assert len(ses.calls) == 2  # still cooling down


async def test_a_cancelled_probe_lets_the_next_email_probe(
    autojump_clock: trio.testing.MockClock,
) -> None:
    ses = Scripted("ses", [Failure.TRANSIENT])
    chain = before_a_relay(ses, failures=1, cool_down=10.0)
    await chain.send(outgoing(1))
    await trio.sleep(10.0)
    ses.gate = trio.Event()
    with trio.move_on_after(1.0):
        await chain.send(outgoing(2))  # the probe, cancelled while SES has it
    ses.gate = None
    result = await chain.send(outgoing(3))
    assert result.provider == "ses" and ses.calls == ["ev-1", "ev-2", "ev-3"]
    assert chain.statistics().links[0].state is BreakerState.CLOSED


async def test_every_breaker_open_fails_with_the_soonest_retry(
    autojump_clock: trio.testing.MockClock,
) -> None:
    chain = ChainProvider(
        [Scripted("a", default=Failure.TRANSIENT), Scripted("b", default=Failure.TRANSIENT)],
        failures=1,
        cool_down=20.0,
    )
    await chain.send(outgoing(1))  # opens both
    await trio.sleep(5.0)
    result = await chain.send(outgoing(2))
    assert not result.ok and result.failure is Failure.TRANSIENT and result.provider == "chain"
    assert result.retry_after == pytest.approx(15.0)
    assert result.reply and "a: skipped, circuit open" in result.reply


async def test_statistics_are_json_ready_for_the_snapshot(
    autojump_clock: trio.testing.MockClock,
) -> None:
    chain = ChainProvider(
        [Scripted("ses", default=Failure.TRANSIENT), Scripted("relay")], failures=1
    )
    await chain.send(outgoing())
    report = msgspec.json.decode(msgspec.json.encode(provider_report(chain)))
    [ses, relay] = report["provider"]["links"]
    assert ses["name"] == "ses" and ses["state"] == "open" and ses["consecutive_failures"] == 1
    assert isinstance(ses["opened_at"], float) and ses["failed"] == 1
    assert relay["state"] == "closed" and relay["sent"] == 1
    assert provider_report(object()) == {}


async def test_open_and_close_in_order_and_unwind_a_failed_open() -> None:
    a, b = Scripted("a"), Scripted("b")
    chain = ChainProvider([a, b])
    await chain.open()
    assert a.opened and b.opened
    await chain.close()
    assert a.closed and b.closed

    class Broken(Scripted):
        async def open(self) -> None:
            raise OSError("cannot open")

    c = Scripted("c")
    with pytest.raises(OSError):
        await ChainProvider([c, Broken("d")]).open()
    assert c.closed


def test_chain_needs_unique_names_and_at_least_one_provider() -> None:
    with pytest.raises(ValueError, match="at least one"):
        ChainProvider([])
    with pytest.raises(ValueError, match="unique"):
        ChainProvider([Scripted("smtp"), Scripted("smtp")])


# -- failover between real servers ------------------------------------------------------


async def failover_chain(ses_url: str, relay_port: int, **breaker: Any) -> ChainProvider:
    chain = ChainProvider(
        [
            SesProvider(REGION, endpoint_url=ses_url, timeout=5),
            SmtpProvider("127.0.0.1", relay_port, name="relay", pool_size=2),
        ],
        **breaker,
    )
    await chain.open()
    return chain


@pytest.mark.parametrize(
    "reply",
    [
        Reply(500, "InternalFailure", "internal error"),
        Reply(503),
        Reply(400, "ThrottlingException", "Maximum sending rate exceeded."),
        Reply(429, "TooManyRequestsException", "Too Many Requests"),
    ],
)
async def test_ses_failing_moves_the_email_to_the_smtp_relay(
    reply: Reply, aws_env: dict[str, str], edge: AsyncioEdge
) -> None:
    with FakeSesServer(default=reply) as ses, CapturingServer() as relay:
        chain = await failover_chain(ses.url, relay.port)
        try:
            result = await chain.send(outgoing(7))
        finally:
            await chain.close()
        assert len(ses.requests) == 1
        [received] = relay.messages()
    assert result.ok and result.provider == "relay"
    assert result.message_id == "00000001"  # the relay's queue id
    assert b"X-Mailactors-Event-Id: ev-7" in received.data
    assert received.rcpt_tos == ["ana@example.org"]


async def test_ses_unreachable_moves_the_email_to_the_smtp_relay(
    aws_env: dict[str, str], edge: AsyncioEdge
) -> None:
    with FakeSesServer() as gone:
        url = gone.url
    with CapturingServer() as relay:
        chain = await failover_chain(url, relay.port)
        try:
            result = await chain.send(outgoing())
        finally:
            await chain.close()
        assert len(relay.messages()) == 1
    assert result.ok and result.provider == "relay"


async def test_ses_rejecting_the_message_does_not_fail_over(
    moto_ses: MotoSes, edge: AsyncioEdge
) -> None:
    with CapturingServer() as relay:
        chain = await failover_chain(moto_ses.url, relay.port)
        try:
            result = await chain.send(outgoing(sender="stranger@elsewhere.test"))
        finally:
            await chain.close()
        assert relay.messages() == []
    assert not result.ok and result.failure is Failure.PERMANENT and result.provider == "ses"
    assert result.reply and "MessageRejected" in result.reply


async def test_healthy_ses_sends_and_the_relay_is_not_used(
    moto_ses: MotoSes, edge: AsyncioEdge
) -> None:
    moto_ses.verify(SENDER, REGION)
    with CapturingServer() as relay:
        chain = await failover_chain(moto_ses.url, relay.port)
        try:
            result = await chain.send(outgoing())
        finally:
            await chain.close()
        assert relay.messages() == []
    [sent] = moto_ses.sent(REGION)
    assert result.ok and result.provider == "ses" and result.message_id == sent.message_id


async def test_breaker_stops_calling_a_failing_ses(
    aws_env: dict[str, str], edge: AsyncioEdge
) -> None:
    with FakeSesServer() as ses, CapturingServer() as relay:
        chain = await failover_chain(ses.url, relay.port, failures=2, cool_down=600.0)
        try:
            results = [await chain.send(outgoing(i)) for i in range(6)]
        finally:
            await chain.close()
        assert len(ses.requests) == 2  # then the breaker opened
        assert len(relay.messages()) == 6
    assert all(r.ok and r.provider == "relay" for r in results)
    stats = chain.statistics().links[0]
    assert stats.state is BreakerState.OPEN and stats.skipped == 4


# -- configuration ---------------------------------------------------------------------


CHAIN_TOML = """
[provider]
kind = "chain"
sender = "noreply@mailactors.test"

[provider.ses]
region = "eu-west-1"

[provider.breaker]
failures = 3
cool_down_s = 12.5

[[provider.chain]]
kind = "ses"

[[provider.chain]]
kind = "smtp"
name = "relay"
[provider.chain.smtp]
host = "relay.example.com"
port = 2525
username = "mailer"
password_file = "secrets/relay-password"
"""


def write_profile(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "profile.toml"
    path.write_text(text)
    return path


def test_chain_profile_builds_a_chain_with_its_breaker(
    tmp_path: Path, aws_env: dict[str, str]
) -> None:
    config = load_config(write_profile(tmp_path, CHAIN_TOML), env={})
    p = config.provider
    assert [e.label for e in p.chain] == ["ses", "relay"]
    assert p.chain[0].ses is None and p.chain[1].smtp is not None
    # a relative path in a chain entry is resolved against the project root, like any other
    assert os.path.isabs(p.chain[1].smtp.password_file)
    secret = tmp_path / "relay-password"
    secret.write_text("hunter2\n")
    config = load_config(
        write_profile(tmp_path, CHAIN_TOML.replace("secrets/relay-password", str(secret))),
        env={},
    )
    chain = make_provider(config.provider)
    assert isinstance(chain, ChainProvider)
    ses, relay = chain.providers
    assert isinstance(ses, SesProvider) and ses.region == "eu-west-1" and ses.name == "ses"
    assert isinstance(relay, SmtpProvider) and relay.name == "relay"
    assert (relay.host, relay.port) == ("relay.example.com", 2525)
    assert "hunter2" not in repr(relay) and "hunter2" not in repr(config)
    breaker = chain.breaker("ses")
    assert (breaker.failures, breaker.cool_down) == (3, 12.5)


def test_chain_from_environment_json(tmp_path: Path) -> None:
    env = {
        "MAILACTORS__PROVIDER__KIND": "chain",
        "MAILACTORS__PROVIDER__CHAIN": '[{"kind": "maildir", "name": "outbox"}, {"kind": "smtp"}]',
    }
    config = load_config("embedded", env=env)
    chain = make_provider(config.provider)
    assert isinstance(chain, ChainProvider)
    assert [p.name for p in chain.providers] == ["outbox", "smtp"]


def test_an_empty_chain_stops_start_up(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"provider\.chain is empty") as info:
        load_config(write_profile(tmp_path, '[provider]\nkind = "chain"\n'), env={})
    assert info.value.key == "provider"


def test_an_unknown_provider_in_a_chain_stops_start_up(tmp_path: Path) -> None:
    text = CHAIN_TOML.replace('kind = "smtp"', 'kind = "sendgrid"')
    with pytest.raises(ConfigError) as info:
        load_config(write_profile(tmp_path, text), env={})
    assert info.value.key == "provider.chain.1.kind"
    assert "'sendgrid'" in str(info.value) and "'ses'" in str(info.value)


def test_an_unknown_key_in_a_chain_entry_is_named(tmp_path: Path) -> None:
    text = CHAIN_TOML.replace('host = "relay.example.com"', 'hots = "relay.example.com"')
    with pytest.raises(ConfigError) as info:
        load_config(write_profile(tmp_path, text), env={})
    assert info.value.key == "provider.chain.1.smtp.hots"
    assert "did you mean 'host'" in str(info.value)


def test_a_chain_entry_without_kind_is_named(tmp_path: Path) -> None:
    text = CHAIN_TOML.replace('kind = "ses"\n', 'name = "x"\n', 1)
    with pytest.raises(ConfigError) as info:
        load_config(write_profile(tmp_path, text), env={})
    assert info.value.key == "provider.chain.0" and "kind" in str(info.value)


def test_repeated_names_in_a_chain_stop_start_up(tmp_path: Path) -> None:
    text = CHAIN_TOML.replace('name = "relay"', 'name = "ses"')
    with pytest.raises(ConfigError, match="unique.*repeated: ses"):
        load_config(write_profile(tmp_path, text), env={})


def test_a_chain_entry_using_ses_without_a_region_is_named(
    tmp_path: Path, aws_env: dict[str, str]
) -> None:
    config = load_config(
        write_profile(tmp_path, CHAIN_TOML.replace('region = "eu-west-1"', "")), env={}
    )
    with pytest.raises(ConfigError) as info:
        make_provider(config.provider)
    assert info.value.key == "provider.ses.region"
    assert "used by provider.chain.0" in str(info.value)
    text = (
        CHAIN_TOML
        + '\n[[provider.chain]]\nkind = "ses"\nname = "ses-us"\n'
        + '[provider.chain.ses]\nprofile = ""\n'
    )
    config = load_config(write_profile(tmp_path, text), env={})
    with pytest.raises(ConfigError) as info:
        make_provider(config.provider)
    assert info.value.key == "provider.chain.1.smtp.password"  # no such secret file
    assert "relay-password" in str(info.value)
    config = load_config(
        write_profile(
            tmp_path,
            text.replace('username = "mailer"\npassword_file = "secrets/relay-password"\n', ""),
        ),
        env={},
    )
    with pytest.raises(ConfigError) as info:
        make_provider(config.provider)
    assert info.value.key == "provider.chain.2.ses.region"


# -- end to end --------------------------------------------------------------------------


def ses_then_relay(ses_url: str, relay_port: int) -> list[dict[str, Any]]:
    """The chain SES first, then an SMTP relay named "relay"."""
    return [
        {"kind": "ses", "ses": {"region": REGION, "endpoint_url": ses_url}},
        {"kind": "smtp", "name": "relay", "smtp": {"host": "127.0.0.1", "port": relay_port}},
    ]


def chain_config(tmp_path: Path, chain: list[dict[str, Any]], **provider: Any) -> Any:
    overrides: dict[str, Any] = {
        "store": {"sqlite_path": str(tmp_path / "emails.sqlite3"), "batch_ms": 2.0},
        "provider": {
            "kind": "chain",
            "chain": chain,
            "sender": SENDER,
            "maildir_path": str(tmp_path / "maildir"),
            **provider,
        },
        "grpc": {"auth_port": 0},
        "http": {"port": 0},
        "email_server": {"idempotency_path": str(tmp_path / "sent.sqlite3"), "concurrency": 2},
        "retry": {"base_delay_s": 0.01, "max_delay_s": 0.05, "max_attempts": 2},
    }
    return load_config("embedded", env={}, overrides=overrides)


def welcome(to: str = "ada@example.com") -> RequestEmail:
    return RequestEmail(
        recipient=to, template="welcome", variables={"name": "Ada", "product": "Acme"}
    )


async def test_embedded_chain_records_which_provider_sent_and_shows_the_breakers(
    aws_env: dict[str, str], tmp_path: Path
) -> None:
    with FakeSesServer() as ses, CapturingServer() as relay:
        config = chain_config(
            tmp_path,
            ses_then_relay(ses.url, relay.port),
            breaker={"failures": 2, "cool_down_s": 600.0},
        )
        async with open_embedded(config, grpc=False, shutdown=10.0) as app:
            docs = []
            for i in range(4):
                accepted = await app.request(welcome(f"user{i}@example.com"))
                docs.append(await app.wait_terminal(accepted.event_id))
            snapshot = app.system.snapshot()
        assert len(ses.requests) == 2  # the breaker opened after two failures
        assert len(relay.messages()) == 4
    assert all(d.status is Status.SENT and d.provider == "relay" for d in docs)
    assert all(d.provider_message_id for d in docs)
    sender = snapshot.by_path()["email-server/senders/sender-0"]
    assert sender.extra is not None
    links = msgspec.json.decode(msgspec.json.encode(sender.extra))["provider"]["links"]
    assert [link["name"] for link in links] == ["ses", "relay"]
    assert links[0]["state"] == "open" and links[0]["consecutive_failures"] == 2
    assert links[0]["opened_at"] is not None and links[0]["skipped"] == 2
    assert links[1]["state"] == "closed" and links[1]["sent"] == 4


async def test_embedded_chain_prefers_ses_and_records_its_message_id(
    moto_ses: MotoSes, tmp_path: Path
) -> None:
    moto_ses.verify(SENDER, REGION)
    with CapturingServer() as relay:
        config = chain_config(
            tmp_path,
            ses_then_relay(moto_ses.url, relay.port),
        )
        async with open_embedded(config, grpc=False, shutdown=10.0) as app:
            accepted = await app.request(welcome())
            doc = await app.wait_terminal(accepted.event_id)
        assert relay.messages() == []
    [sent] = moto_ses.sent(REGION)
    assert doc.status is Status.SENT and doc.provider == "ses"
    assert doc.provider_message_id == sent.message_id


def test_settings_a_provider_refuses_stop_start_up(tmp_path: Path) -> None:
    text = CHAIN_TOML.replace('password_file = "secrets/relay-password"\n', "")
    config = load_config(write_profile(tmp_path, text), env={})
    with pytest.raises(ConfigError) as info:
        make_provider(config.provider)
    assert info.value.key == "provider.chain.1"
    assert "username and password go together" in str(info.value)

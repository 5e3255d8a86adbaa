"""Rate limits under Trio's MockClock: strict per-domain windows, the provider bucket,
adaptive slow-down and recovery, connection slots. (Measured at a real SMTP
server in tests/email_server/test_guarantees.py.)"""

from __future__ import annotations

import random
from typing import Any

import pytest
import trio
import trio.lowlevel
import trio.testing

from actors.domain.edges import Failure, SendResult
from actors.domain.schema import EmailSendEvent
from actors.email_server.safeguards import SendGuards
from actors.email_server.service import SenderSettings, SendJob, email_server_tree
from actors.email_server.throttle import (
    Acquire,
    AdaptiveRate,
    DomainLimit,
    Done,
    SlowDown,
    ThrottleGate,
    Throttler,
    TokenBucket,
)
from runtime import ActorSystem, ChildSpec, SupervisorSpec
from tests.support.checks import max_in_any_window

# -- the pieces -------------------------------------------------------------------------


def test_domain_limit_counts_a_send_from_its_grant_to_a_window_after_it_is_done() -> None:
    limit = DomainLimit(2, guard=0.0)
    assert limit.next_free(0.0) == 0.0
    limit.grant(1, 0.0)
    limit.grant(2, 0.0)
    assert limit.next_free(0.1) == 120.0  # both in flight: a Done, or at worst the lease
    limit.release(1, 0.3)
    assert limit.next_free(0.3) == pytest.approx(1.3)  # a window after it finished
    limit.release(2, 0.5)
    assert limit.next_free(1.31) == 1.31
    assert limit.tokens(1.31) == 1
    assert limit.next_free(1.6) == 1.6
    slow = DomainLimit(0.5, guard=0.0)  # one per two seconds
    slow.grant(1, 0.0)
    slow.release(1, 0.1)
    assert slow.next_free(0.1) == pytest.approx(2.1)


def test_a_send_never_reported_frees_its_slot_after_the_lease() -> None:
    limit = DomainLimit(1, guard=0.0, lease_s=10.0)
    limit.grant(1, 0.0)
    assert limit.next_free(1.0) == 10.0  # the lease's end
    assert limit.next_free(10.0) == pytest.approx(11.0)  # then a window, as if done at 10
    assert limit.next_free(11.0) == 11.0


def test_token_bucket_allows_the_burst_then_the_rate() -> None:
    bucket = TokenBucket(10, 5, now=0.0)
    waits = [bucket.reserve(0.0) for _ in range(7)]
    assert (
        waits[:5] == [0.0] * 5 and waits[5] == pytest.approx(0.1) and waits[6] == pytest.approx(0.2)
    )
    bucket.set_rate(1.0, now=0.2)  # what accrued until now accrued at the old rate
    assert bucket.reserve(0.2) == pytest.approx(1.0)  # the debt was paid at 10/s by 0.2


def test_adaptive_rate_halves_once_per_burst_and_recovers_additively() -> None:
    aimd = AdaptiveRate(ceiling=100.0, min_rate=1.0, recover_per_s=10.0)
    assert aimd.rate(0.0) is None
    assert aimd.slow_down(0.0, observed=0)
    assert aimd.rate(0.0) == 50.0
    assert not aimd.slow_down(0.5, observed=0)  # the same burst of refusals
    assert aimd.rate(1.0) == pytest.approx(60.0)
    assert aimd.slow_down(1.0, observed=0)  # a new refusal halves what is in force
    assert aimd.rate(1.0) == pytest.approx(30.0)
    assert aimd.rate(7.0) == pytest.approx(90.0)
    assert aimd.rate(8.0) is None  # back at the configured rate: no adaptive limit
    floor = AdaptiveRate(ceiling=3.0, min_rate=2.0)
    floor.slow_down(0.0, 0)
    assert floor.rate(0.0) == 2.0  # never below min_rate


def test_adaptive_rate_of_an_unlimited_provider_halves_what_was_observed() -> None:
    aimd = AdaptiveRate(ceiling=0.0, min_rate=1.0, recover_per_s=5.0)
    aimd.slow_down(0.0, observed=80)
    assert aimd.rate(0.0) == 40.0
    assert aimd.rate(7.9) == pytest.approx(79.5)
    assert aimd.rate(8.0) is None  # grown back to what it was: unlimited again


# -- the throttler actor, in Trio time ----------------------------------------------------


async def spawn_throttler(system: ActorSystem, *args: Any, **kwargs: Any) -> Any:
    await system.spawn(
        SupervisorSpec("t", [ChildSpec("throttler", Throttler, args=args, kwargs=kwargs)])
    )
    return system.lookup("t/throttler")


async def grant_times(
    throttler: Any, domains: list[str], *, rng: random.Random | None = None, max_s: float = 0.0
) -> dict[str, list[float]]:
    """Ask for each domain at once; each send takes a random time up to ``max_s``.

    Returns, per domain, when a receiving server would have accepted each
    message: a random moment between the grant and the send's end (the
    worst case is any of them).
    """
    rng = rng or random.Random(0)
    times: dict[str, list[float]] = {}

    async def one(domain: str) -> None:
        grant = await throttler.ask(Acquire(domain), timeout=3600)
        start = trio.current_time()
        took = rng.uniform(0, max_s)
        await trio.sleep(took)
        times.setdefault(domain, []).append(start + rng.uniform(0, took))
        if grant is not None:
            await throttler.send(Done(domain, grant))

    async with trio.open_nursery() as nursery:
        for d in domains:
            nursery.start_soon(one, d)
    return times


@pytest.mark.parametrize("seed", range(5))
async def test_domain_limit_is_strict_whatever_each_send_takes(
    autojump_clock: trio.testing.MockClock, actor_system: ActorSystem, seed: int
) -> None:
    throttler = await spawn_throttler(actor_system, 0.0, 20, {"gmail.com": 20.0, "slow.org": 2.5})
    t0 = trio.current_time()
    times = await grant_times(
        throttler,
        ["gmail.com"] * 200 + ["slow.org"] * 10 + ["free.net"] * 50,
        rng=random.Random(seed),
        max_s=0.5,
    )
    assert max_in_any_window(times["gmail.com"]) <= 20
    assert max_in_any_window(times["slow.org"]) <= 2  # floor(2.5): never 3 in one second
    assert max(times["gmail.com"]) - t0 < 200 / 20 * 1.6  # and not much slower than the rate
    assert max(times["free.net"]) - t0 <= 0.5  # no limit: not held up by the others


async def test_instant_sends_go_at_the_full_domain_rate(
    autojump_clock: trio.testing.MockClock, actor_system: ActorSystem
) -> None:
    throttler = await spawn_throttler(actor_system, 0.0, 20, {"gmail.com": 20.0})
    t0 = trio.current_time()
    times = await grant_times(throttler, ["gmail.com"] * 200)
    assert max_in_any_window(times["gmail.com"]) == 20
    assert max(times["gmail.com"]) - t0 == pytest.approx(9.0, abs=0.01)  # ten windows


async def test_provider_bucket_and_domain_window_together(
    autojump_clock: trio.testing.MockClock, actor_system: ActorSystem
) -> None:
    throttler = await spawn_throttler(actor_system, 10.0, 5, {"a.com": 3.0})
    times = await grant_times(throttler, ["a.com"] * 12 + ["b.com"] * 30)
    everything = times["a.com"] + times["b.com"]
    assert max_in_any_window(times["a.com"]) <= 3
    assert max_in_any_window(everything) <= 5 + 10  # the provider's burst, then its rate
    assert max(everything) - min(everything) >= (42 - 5) / 10 - 0.01


async def test_slow_down_halves_the_provider_rate_and_it_recovers(
    autojump_clock: trio.testing.MockClock, actor_system: ActorSystem
) -> None:
    gate = ThrottleGate(True)
    throttler = await spawn_throttler(
        actor_system, 20.0, 1, {}, adaptive=True, min_rate=1.0, recover_per_s=2.0, gate=gate
    )
    before = await grant_times(throttler, ["x.org"] * 40)
    assert max_in_any_window(before["x.org"]) <= 21
    await throttler.send(SlowDown("x.org"))
    await throttler.send(SlowDown("x.org"))  # the same burst: counted once
    slowed = await grant_times(throttler, ["x.org"] * 20)
    assert max_in_any_window(slowed["x.org"]) <= 11  # 10/s (and one token saved up)
    snapshot = actor_system.snapshot().by_path()["t/throttler"].extra or {}
    assert snapshot["slow_downs"] == 1
    await trio.sleep(10)  # 10 + 2/s * 10 s = back at 20/s: the configured rate again
    after = await grant_times(throttler, ["x.org"] * 60)
    assert max_in_any_window(after["x.org"]) > 15


async def test_slow_down_limits_an_unlimited_provider_through_the_gate(
    autojump_clock: trio.testing.MockClock, actor_system: ActorSystem
) -> None:
    gate = ThrottleGate(False)
    throttler = await spawn_throttler(actor_system, 0.0, 1, {}, recover_per_s=1.0, gate=gate)
    assert not gate.active  # senders do not even ask
    for _ in range(30):  # what the senders report sending, within one second
        gate.note_send(trio.current_time())
    await throttler.send(SlowDown("x.org"))
    await trio.lowlevel.checkpoint()
    await throttler.ask(Acquire("x.org"))  # the throttler has taken the SlowDown
    assert gate.active
    slowed = await grant_times(throttler, ["x.org"] * 30)
    assert max_in_any_window(slowed["x.org"]) <= 16  # observed 30/s, halved
    await trio.sleep(30)
    await throttler.ask(Acquire("x.org"))
    assert not gate.active  # recovered: no limit, no asking


# -- senders: slow-down reports and connection slots --------------------------------------


class _Renderer:
    def render(self, template: str, variables: dict[str, Any], subject: Any) -> Any:
        class R:
            subject = "s"
            text = "t"
            html = None

        return R()


class _Provider:
    """Replies ``result`` after ``delay`` seconds; records the most sends at once."""

    name = "fake"

    def __init__(self, result: SendResult, delay: float = 1.0) -> None:
        self.result = result
        self.delay = delay
        self.busy = 0
        self.most = 0
        self.sends = 0

    async def send(self, email: Any) -> SendResult:
        self.busy += 1
        self.sends += 1
        self.most = max(self.most, self.busy)
        try:
            await trio.sleep(self.delay)
        finally:
            self.busy -= 1
        return self.result


class _Bus:
    durable_delay = False

    def __init__(self) -> None:
        self.statuses: list[Any] = []

    async def publish_status(self, event: Any) -> None:
        self.statuses.append(event)
        await trio.lowlevel.checkpoint()

    async def publish_status_many(self, events: list[Any]) -> list[None]:
        self.statuses.extend(events)
        await trio.lowlevel.checkpoint()
        return [None] * len(events)

    async def ack_many(self, deliveries: list[Any]) -> None:
        await trio.lowlevel.checkpoint()

    async def publish_send_delayed(self, event: Any, delay: float) -> None:
        await trio.sleep(delay)

    async def next_send(self) -> Any:
        await trio.sleep_forever()


async def run_senders(
    system: ActorSystem, provider: _Provider, n: int, guards: SendGuards, **tree: Any
) -> _Bus:
    bus = _Bus()
    settings = SenderSettings(root="es", sender="me@x.org", message_id_domain="x.org")
    await system.spawn(
        email_server_tree(
            bus, provider, _Renderer(), settings, concurrency=8, name="es", guards=guards, **tree  # type: ignore[arg-type]
        )
    )
    for i in range(n):
        event = EmailSendEvent(event_id=f"e{i}", recipient=f"u{i}@x.org", template="t")
        await system.lookup(f"es/senders/sender-{i % 8}").send(SendJob(event, None))
    with trio.fail_after(3600):
        while True:
            if (
                len([s for s in bus.statuses if s.status.terminal or s.status.value == "RETRYING"])
                >= n
            ):
                break
            await trio.sleep(0.5)
    return bus


async def test_connection_slots_cap_concurrent_sends(
    autojump_clock: trio.testing.MockClock, actor_system: ActorSystem
) -> None:
    provider = _Provider(SendResult(provider="fake", ok=True), delay=1.0)
    await run_senders(actor_system, provider, 24, SendGuards(max_connections=3))
    assert provider.most == 3 and provider.sends == 24


async def test_a_throttled_reply_reaches_the_throttler(
    autojump_clock: trio.testing.MockClock, actor_system: ActorSystem
) -> None:
    refused = SendResult(
        provider="fake", ok=False, code=421, reply="4.7.0 slow down", failure=Failure.THROTTLED
    )
    guards = SendGuards()
    await run_senders(actor_system, _Provider(refused, delay=0.1), 8, guards)
    extra = actor_system.snapshot().by_path()["es/throttler"].extra or {}
    assert extra["slow_downs"] == 1 and guards.gate.adaptive


def test_workers_share_every_budget_and_never_exceed_it_together() -> None:
    """The split of each budget between workers, as arithmetic. What two real
    workers do together is measured at the SMTP server in tests/system/test_distributed.py
    (test_two_workers_together_keep_a_domain_within_its_rate)."""
    from actors.profiles.launcher import worker_env
    from config import load_config

    config = load_config(
        "embedded",
        env={},
        overrides={"throttle": {"rate": 100.0, "burst": 20, "max_connections": 8,
                                "per_domain": {"gmail.com": 20.0, "slow.org": 5.0}}},
    )
    env = worker_env(config, 3)
    assert float(env["MAILACTORS__THROTTLE__RATE"]) * 3 == pytest.approx(100.0)
    assert int(env["MAILACTORS__THROTTLE__BURST"]) == 6
    assert int(env["MAILACTORS__THROTTLE__MAX_CONNECTIONS"]) == 2
    import json

    shares = json.loads(env["MAILACTORS__THROTTLE__PER_DOMAIN"])
    for domain, rate in config.throttle.per_domain.items():
        # each worker's strict limit is floor(share): three of them stay within the rate
        assert 3 * DomainLimit(shares[domain]).limit <= rate
    assert worker_env(config, 1) == {}

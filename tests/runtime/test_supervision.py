"""Supervision: strategies, restart types, intensity, backoff, ordered start and stop."""

from __future__ import annotations

import os
import signal

import msgspec
import pytest
import trio
import trio.testing

from runtime import (
    Actor,
    ActorStartError,
    ActorState,
    Backoff,
    ChildSpec,
    Restart,
    Strategy,
    SupervisorEscalation,
    SupervisorSpec,
    open_actor_system,
    run_actor_system,
)
from runtime.testing import wait_for_state


class Crash(msgspec.Struct):
    pass


class Exit(msgspec.Struct):
    pass


class Journal:
    """Records lifecycle events of the actors under test, in order."""

    def __init__(self) -> None:
        self.events: list[str] = []


class Worker(Actor[Crash | Exit]):
    accepts = (Crash, Exit)

    def __init__(self, name: str, journal: Journal, stop_delay: float = 0.0) -> None:
        self.name = name
        self.journal = journal
        self.stop_delay = stop_delay

    async def started(self) -> None:
        self.journal.events.append(f"start {self.name}")

    async def receive(self, msg: Crash | Exit) -> None:
        if isinstance(msg, Crash):
            raise RuntimeError(f"{self.name} crashed")
        self.ctx.stop()

    async def stopping(self) -> None:
        if self.stop_delay:
            await trio.sleep(self.stop_delay)
        self.journal.events.append(f"stop {self.name}")


def workers(journal: Journal, names: str, **kw: object) -> list[ChildSpec]:
    return [ChildSpec(n, Worker, args=(n, journal), **kw) for n in names]  # type: ignore[arg-type]


def restarts(system, path: str) -> int:
    return system.lookup(path)._cell.restarts


async def crash(system, path: str) -> None:
    await system.lookup(path).send(Crash())


@pytest.mark.parametrize(
    "strategy, restarted",
    [
        (Strategy.ONE_FOR_ONE, {"b"}),
        (Strategy.ONE_FOR_ALL, {"a", "b", "c"}),
        (Strategy.REST_FOR_ONE, {"b", "c"}),
    ],
)
async def test_strategies(actor_system, autojump_clock, strategy, restarted):
    journal = Journal()
    await actor_system.spawn(SupervisorSpec("svc", workers(journal, "abc"), strategy=strategy))
    assert journal.events == ["start a", "start b", "start c"]
    journal.events.clear()
    await crash(actor_system, "svc/b")
    await wait_for_state(actor_system, "svc/b", ActorState.RUNNING, restarts=1)
    for name in "abc":
        await wait_for_state(
            actor_system, f"svc/{name}", ActorState.RUNNING, restarts=int(name in restarted)
        )
    assert {n for n in "abc" if restarts(actor_system, f"svc/{n}")} == restarted
    # siblings are stopped in reverse order, then everything restarts in order
    stops = [e for e in journal.events if e.startswith("stop")]
    starts = [e for e in journal.events if e.startswith("start")]
    assert stops == sorted(stops, reverse=True)
    assert starts == [f"start {n}" for n in "abc" if n in restarted]
    assert "stop b" not in stops  # the crashed one had no graceful stop


@pytest.mark.parametrize(
    "restart, after_crash, after_exit",
    [
        (Restart.PERMANENT, True, True),
        (Restart.TRANSIENT, True, False),
        (Restart.TEMPORARY, False, False),
    ],
)
async def test_restart_types(actor_system, autojump_clock, restart, after_crash, after_exit):
    journal = Journal()

    class SelfStop(Worker):
        async def receive(self, msg: Crash | Exit) -> None:
            if isinstance(msg, Crash):
                raise RuntimeError("crash")
            self.ctx.stop()  # a normal exit

    await actor_system.spawn(
        SupervisorSpec(
            "svc",
            [ChildSpec("c", SelfStop, args=("c", journal), restart=restart)],
            intensity=10,
        )
    )
    await crash(actor_system, "svc/c")
    if after_crash:
        await wait_for_state(actor_system, "svc/c", ActorState.RUNNING, restarts=1)
    else:
        await wait_for_state(actor_system, "svc/c", ActorState.STOPPED)
        return
    await actor_system.lookup("svc/c").send(Exit())
    if after_exit:
        await wait_for_state(actor_system, "svc/c", ActorState.RUNNING, restarts=2)
    else:
        await wait_for_state(actor_system, "svc/c", ActorState.STOPPED)
        assert restarts(actor_system, "svc/c") == 1


async def test_intensity_escalates_to_parent(actor_system, autojump_clock):
    journal = Journal()
    inner = SupervisorSpec("inner", workers(journal, "x"), intensity=2, period=60)
    await actor_system.spawn(
        SupervisorSpec("outer", [inner, *workers(journal, "y")], intensity=5, period=60)
    )
    for _ in range(2):
        before = restarts(actor_system, "outer/inner/x")
        await crash(actor_system, "outer/inner/x")
        await wait_for_state(
            actor_system, "outer/inner/x", ActorState.RUNNING, restarts=before + 1
        )
    assert restarts(actor_system, "outer/inner") == 0
    # the third crash within the period is one too many for "inner"
    await crash(actor_system, "outer/inner/x")
    await wait_for_state(actor_system, "outer/inner", ActorState.RUNNING, restarts=1)
    info = actor_system.snapshot().by_path()["outer/inner"]
    assert info.last_error is not None and info.last_error.type == "SupervisorEscalation"
    assert "outer/inner/x" in info.last_error.message
    # the sibling of the escalating supervisor kept running
    assert restarts(actor_system, "outer/y") == 0
    assert actor_system.snapshot().by_path()["outer/y"].state is ActorState.RUNNING


async def test_restart_storm_fails_the_system_with_a_clear_error(autojump_clock):
    journal = Journal()
    with pytest.RaisesGroup(
        pytest.RaisesExc(SupervisorEscalation, match="svc"), flatten_subgroups=True
    ):
        async with open_actor_system("t", intensity=0) as system:
            await system.spawn(SupervisorSpec("svc", workers(journal, "s"), intensity=1, period=10))
            for _ in range(5):
                await crash(system, "svc/s")
                await trio.sleep(1)


async def test_backoff_is_exponential_with_cap_and_resets(actor_system, autojump_clock):
    journal = Journal()
    backoff = Backoff(initial=1.0, multiplier=2.0, maximum=4.0, jitter=0.0, reset_after=100.0)
    await actor_system.spawn(
        SupervisorSpec("svc", workers(journal, "w"), intensity=100, period=1, backoff=backoff)
    )
    delays = []
    for i in range(4):
        t0 = trio.current_time()
        await crash(actor_system, "svc/w")
        await wait_for_state(actor_system, "svc/w", ActorState.RUNNING, restarts=i + 1)
        delays.append(trio.current_time() - t0)
    assert delays == pytest.approx([1.0, 2.0, 4.0, 4.0])
    # a stable period resets the count
    await trio.sleep(150)
    t0 = trio.current_time()
    await crash(actor_system, "svc/w")
    await wait_for_state(actor_system, "svc/w", ActorState.RUNNING, restarts=5)
    assert trio.current_time() - t0 == pytest.approx(1.0)


async def test_backoff_jitter_stays_in_bounds():
    import random

    b = Backoff(initial=1.0, multiplier=2.0, maximum=100, jitter=0.25)
    rng = random.Random(1)
    samples = [b.delay(3, rng) for _ in range(500)]
    assert min(samples) >= 6.0 and max(samples) <= 10.0
    assert max(samples) - min(samples) > 2.0  # it really jitters


async def test_ordered_start_and_reverse_stop_with_shutdown_timeout(autojump_clock):
    journal = Journal()
    specs = [
        ChildSpec("a", Worker, args=("a", journal)),
        ChildSpec("b", Worker, args=("b", journal, 100.0), shutdown=2.0),  # too slow
        ChildSpec("c", Worker, args=("c", journal, 1.0), shutdown=5.0),
    ]
    async with open_actor_system("t") as system:
        await system.spawn(SupervisorSpec("svc", specs))
        assert journal.events == ["start a", "start b", "start c"]
        t0 = trio.current_time()
    # c finished its stop hook, b was cancelled after its 2 s, a stopped last
    assert journal.events[3:] == ["stop c", "stop a"]
    assert trio.current_time() - t0 == pytest.approx(3.0)
    assert system.snapshot().by_path()["svc/b"].state is ActorState.STOPPED


async def test_start_waits_for_ready_before_next_child(autojump_clock):
    order: list[str] = []

    class SlowStart(Actor[Crash]):
        accepts = (Crash,)

        def __init__(self, name: str, delay: float) -> None:
            self.name, self.delay = name, delay

        async def started(self) -> None:
            await trio.sleep(self.delay)
            order.append(self.name)

    async with open_actor_system("t") as system:
        await system.spawn(
            SupervisorSpec(
                "svc",
                [
                    ChildSpec("a", SlowStart, args=("a", 5)),
                    ChildSpec("b", SlowStart, args=("b", 1)),
                ],
            )
        )
        assert order == ["a", "b"]


async def test_child_failing_at_start_fails_the_spawn_clearly(actor_system):
    class BadStart(Actor[Crash]):
        accepts = (Crash,)

        async def started(self) -> None:
            raise ConnectionError("database unreachable")

    journal = Journal()
    with pytest.raises(ActorStartError, match="svc") as info:
        await actor_system.spawn(
            SupervisorSpec("svc", [*workers(journal, "a"), ChildSpec("bad", BadStart)])
        )
    assert "database unreachable" in str(info.value)
    # the child started before it was stopped again, and the tree was not left half-up
    assert journal.events == ["start a", "stop a"]
    assert "svc" not in actor_system.paths()
    # the rest of the system keeps running
    ok = await actor_system.spawn(SupervisorSpec("other", workers(journal, "z")))
    assert ok.path == "other"


async def test_child_failing_at_restart_counts_toward_intensity(actor_system, autojump_clock):
    attempts = []

    class FlakyStart(Actor[Crash]):
        accepts = (Crash,)

        async def started(self) -> None:
            attempts.append(trio.current_time())
            if 1 < len(attempts) < 4:
                raise ConnectionError("not yet")

        async def receive(self, msg: Crash) -> None:
            raise RuntimeError("crash")

    await actor_system.spawn(
        SupervisorSpec(
            "svc",
            [ChildSpec("f", FlakyStart)],
            intensity=5,
            backoff=Backoff(initial=1, jitter=0, multiplier=2),
        )
    )
    await crash(actor_system, "svc/f")
    await wait_for_state(actor_system, "svc/f", ActorState.RUNNING, restarts=3, timeout=60)
    assert len(attempts) == 4
    gaps = [b - a for a, b in zip(attempts, attempts[1:], strict=False)]
    assert gaps == pytest.approx([1, 2, 4])


async def test_sigterm_stops_the_tree_gracefully(autojump_clock):
    journal = Journal()

    def ready(system) -> None:
        os.kill(os.getpid(), signal.SIGTERM)

    with trio.fail_after(30):
        await run_actor_system(SupervisorSpec("svc", workers(journal, "abc")), ready=ready)
    assert journal.events == ["start a", "start b", "start c", "stop c", "stop b", "stop a"]


async def test_nested_trees_stop_in_reverse_depth_first(autojump_clock):
    journal = Journal()
    tree = SupervisorSpec(
        "root",
        [
            SupervisorSpec("db", workers(journal, "ab")),
            SupervisorSpec("web", workers(journal, "cd")),
        ],
    )
    async with open_actor_system("t") as system:
        await system.spawn(tree)
    assert journal.events == [
        "start a", "start b", "start c", "start d",
        "stop d", "stop c", "stop b", "stop a",
    ]

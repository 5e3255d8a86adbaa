"""Every ``ask`` is answered: when the callee's incarnation ends, the caller gets
ActorStopped at once, and the callee's cancellation never reaches the caller."""

from __future__ import annotations

import math
from typing import Any

import msgspec
import pytest
import trio

from runtime import (
    Actor,
    ActorState,
    ActorStopped,
    ActorSystem,
    ChildSpec,
    Reply,
    Restart,
    Strategy,
    SupervisorSpec,
)
from runtime.testing import wait_for_state


class Hang(msgspec.Struct):
    """Ask the callee to hold the request without answering."""


class Later(msgspec.Struct):
    """Ask the callee to take the reply with reply_later() and keep it."""


class Call(msgspec.Struct):
    """Tell the caller actor to ask ``target`` a ``Hang`` or ``Later``."""

    target: str
    later: bool = False


class Callee(Actor[Hang | Later]):
    accepts = (Hang, Later)

    def __init__(self, holding: trio.Event, background_fails: trio.Event | None = None) -> None:
        self.holding = holding
        self.background_fails = background_fails
        self.kept: list[Reply] = []

    async def started(self) -> None:
        if self.background_fails is not None:
            self.ctx.start_soon(self._background, self.background_fails)

    async def _background(self, go: trio.Event) -> None:
        await go.wait()
        raise RuntimeError("background task failed")

    async def receive(self, msg: Hang | Later) -> None:
        if isinstance(msg, Later):
            self.kept.append(self.ctx.reply_later())
            self.holding.set()
            return
        self.holding.set()
        await trio.sleep_forever()


class Stubborn(Callee):
    """Ignores a graceful stop: its request in hand never finishes."""


class Caller(Actor[Call]):
    """A transient actor that asks and records what it got, as application code does."""

    accepts = (Call,)

    def __init__(self, outcome: list[object], after: list[str]) -> None:
        self.outcome = outcome
        self.after = after

    async def receive(self, msg: Call) -> None:
        request: Hang | Later = Later() if msg.later else Hang()
        try:
            await self.ctx.lookup(msg.target).ask(request, timeout=math.inf)
        except Exception as exc:  # what a caller writes; a Cancelled would skip it
            self.outcome.append(exc)
        # Code after the ask runs: the callee's cancellation did not leak in here.
        self.after.append("ran")
        self.ctx.stop()


async def _ask_from_caller(
    system: ActorSystem, callee: str, later: bool = False
) -> tuple[list[object], list[str]]:
    outcome: list[object] = []
    after: list[str] = []
    ref = await system.spawn(
        ChildSpec("caller", Caller, args=(outcome, after), restart=Restart.TRANSIENT)
    )
    await ref.send(Call(callee, later))
    return outcome, after


async def _caller_done(system: ActorSystem) -> None:
    await wait_for_state(system, "caller", ActorState.STOPPED, timeout=5.0)
    info = system.lookup("caller").statistics()
    assert info.failures == 0, info.last_error


@pytest.mark.parametrize("later", [False, True], ids=["in-hand", "reply_later"])
async def test_inject_crash_fails_the_pending_ask_with_actor_stopped(
    actor_system: ActorSystem, autojump_clock: trio.abc.Clock, later: bool
) -> None:
    holding = trio.Event()
    await actor_system.spawn(SupervisorSpec("svc", [ChildSpec("callee", Callee, args=(holding,))]))
    outcome, after = await _ask_from_caller(actor_system, "svc/callee", later)
    await holding.wait()
    start = trio.current_time()
    await actor_system.inject_crash("svc/callee")
    await _caller_done(actor_system)
    assert after == ["ran"]
    assert len(outcome) == 1 and isinstance(outcome[0], ActorStopped), outcome
    assert outcome[0].path == "svc/callee"
    assert trio.current_time() - start < 1.0  # at once, not after a timeout


async def test_failing_background_task_fails_the_ask_in_hand(
    actor_system: ActorSystem, autojump_clock: trio.abc.Clock
) -> None:
    holding, go = trio.Event(), trio.Event()
    await actor_system.spawn(
        SupervisorSpec("svc", [ChildSpec("callee", Callee, args=(holding, go))])
    )
    outcome, after = await _ask_from_caller(actor_system, "svc/callee")
    await holding.wait()
    go.set()
    await _caller_done(actor_system)
    assert after == ["ran"]
    assert [type(e) for e in outcome] == [ActorStopped]
    assert "cancelled before answering Hang" in str(outcome[0])


async def test_one_for_all_stop_past_shutdown_fails_the_ask(
    actor_system: ActorSystem, autojump_clock: trio.abc.Clock
) -> None:
    holding = trio.Event()
    await actor_system.spawn(
        SupervisorSpec(
            "svc",
            [
                ChildSpec("stubborn", Stubborn, args=(holding,), shutdown=2.0),
                ChildSpec("sibling", Callee, args=(trio.Event(),)),
            ],
            strategy=Strategy.ONE_FOR_ALL,
        )
    )
    outcome, after = await _ask_from_caller(actor_system, "svc/stubborn")
    await holding.wait()
    start = trio.current_time()
    await actor_system.inject_crash("svc/sibling")
    await _caller_done(actor_system)
    assert after == ["ran"]
    assert [type(e) for e in outcome] == [ActorStopped]
    # Answered when the stubborn child was cancelled, after its shutdown timeout.
    assert 2.0 <= trio.current_time() - start < 3.0


async def test_graceful_stop_fails_replies_taken_with_reply_later(
    actor_system: ActorSystem, autojump_clock: trio.abc.Clock
) -> None:
    holding = trio.Event()
    await actor_system.spawn(
        SupervisorSpec(
            "svc", [ChildSpec("callee", Callee, args=(holding,), restart=Restart.TEMPORARY)]
        )
    )
    ref = actor_system.lookup("svc/callee")
    got: list[BaseException] = []

    async def ask() -> None:
        try:
            await ref.ask(Later(), timeout=math.inf)
        except ActorStopped as exc:
            got.append(exc)

    # Without the fix the ask waits for ever; the deadline turns that into a failure.
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ask)
            await holding.wait()
            node = actor_system._nodes["svc/callee"]
            assert node.child is not None
            node.child.request_stop()
    assert len(got) == 1
    assert "ended before answering Later" in str(got[0])


async def test_a_reply_already_given_is_not_overwritten_at_the_end(
    actor_system: ActorSystem, autojump_clock: trio.abc.Clock
) -> None:
    class AnswersThenCrashes(Actor[Later]):
        accepts = (Later,)

        async def receive(self, msg: Later) -> None:
            reply = self.ctx.reply_later()
            reply.set("answered")
            reply.fail(RuntimeError("second answer"))  # first answer wins
            raise RuntimeError("crash after answering")

    await actor_system.spawn(SupervisorSpec("svc", [ChildSpec("a", AnswersThenCrashes)]))
    value: Any = await actor_system.lookup("svc/a").ask(Later())
    assert value == "answered"

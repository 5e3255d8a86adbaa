"""Actors, refs and mailboxes: typed sends, backpressure, ask, dead letters."""

from __future__ import annotations

import math
from typing import Any

import msgspec
import pytest
import trio
import trio.testing

from runtime import (
    Actor,
    ActorNotFound,
    ActorState,
    ActorStopped,
    AskTimeout,
    ChildSpec,
    MailboxFull,
    MessageTypeError,
    Restart,
    SupervisorSpec,
)
from runtime.testing import spawn_probe, wait_for_state


class Ping(msgspec.Struct):
    n: int


class Pong(msgspec.Struct):
    n: int


class Other(msgspec.Struct):
    x: str


class Echo(Actor[Ping]):
    accepts = (Ping,)

    async def receive(self, msg: Ping) -> Pong:
        return Pong(msg.n)


class Gate(Actor[Ping]):
    """Blocks on an event before handling each message: lets tests fill the mailbox."""

    accepts = (Ping,)
    mailbox = 2

    def __init__(self, gate: trio.Event, seen: list[int]) -> None:
        self.gate = gate
        self.seen = seen

    async def receive(self, msg: Ping) -> None:
        await self.gate.wait()
        self.seen.append(msg.n)


class Forwarder(Actor[Ping]):
    accepts = (Ping,)

    async def receive(self, msg: Ping) -> None:
        await self.ctx.lookup("probe").send(Pong(msg.n))


async def test_ask_returns_the_reply(actor_system):
    ref = await actor_system.spawn(ChildSpec("echo", Echo))
    assert await ref.ask(Ping(7)) == Pong(7)


async def test_wrong_type_fails_at_call_site_naming_both(actor_system):
    ref = await actor_system.spawn(ChildSpec("echo", Echo))
    with pytest.raises(MessageTypeError) as info:
        await ref.send(Other("x"))
    text = str(info.value)
    assert "echo" in text and "Other" in text and "Ping" in text
    with pytest.raises(MessageTypeError):
        ref.send_nowait(Other("x"))
    with pytest.raises(MessageTypeError):
        await ref.ask(Other("x"))
    # the actor is untouched by the refused send
    assert await ref.ask(Ping(1)) == Pong(1)


async def test_full_mailbox_is_backpressure(actor_system):
    gate, seen = trio.Event(), []
    ref = await actor_system.spawn(ChildSpec("gate", Gate, args=(gate, seen)))
    await ref.send(Ping(0))  # taken by the actor, which waits at the gate
    await trio.testing.wait_all_tasks_blocked()
    ref.send_nowait(Ping(1))
    ref.send_nowait(Ping(2))  # capacity 2: now full
    with pytest.raises(MailboxFull) as info:
        ref.send_nowait(Ping(3))
    assert "gate" in str(info.value) and "2" in str(info.value)
    done = trio.Event()

    async def blocked_send() -> None:
        await ref.send(Ping(3))
        done.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(blocked_send)
        await trio.testing.wait_all_tasks_blocked()
        assert not done.is_set()  # send waits while the mailbox is full
        gate.set()
    assert done.is_set()
    await wait_until(lambda: len(seen) == 4)
    assert seen == [0, 1, 2, 3]


async def wait_until(predicate: Any) -> None:
    with trio.fail_after(5):
        while not predicate():
            await trio.testing.wait_all_tasks_blocked()
            if not predicate():
                await trio.sleep(0.001)


async def test_ask_timeout_names_the_actor(actor_system, autojump_clock):
    gate = trio.Event()
    ref = await actor_system.spawn(ChildSpec("slow", Gate, args=(gate, [])))
    start = trio.current_time()
    with pytest.raises(AskTimeout) as info:
        await ref.ask(Ping(1), timeout=3)
    assert "slow" in str(info.value) and "Ping" in str(info.value)
    assert trio.current_time() - start == pytest.approx(3)


async def test_exception_in_receive_reaches_the_asker(actor_system):
    class Boom(Actor[Ping]):
        accepts = (Ping,)

        async def receive(self, msg: Ping) -> None:
            raise ValueError(f"bad {msg.n}")

    ref = await actor_system.spawn(SupervisorSpec("sup", [ChildSpec("boom", Boom)]))
    child = actor_system.lookup("sup/boom")
    with pytest.raises(ValueError, match="bad 5"):
        await child.ask(Ping(5))
    await wait_for_state(actor_system, "sup/boom", ActorState.RUNNING, restarts=1)
    assert ref.path == "sup"


async def test_lookup_by_path_and_sibling(actor_system):
    probe = await spawn_probe(actor_system)
    await actor_system.spawn(
        SupervisorSpec("svc", [SupervisorSpec("inner", [ChildSpec("fwd", Forwarder)])])
    )
    ref = actor_system.lookup("svc/inner/fwd")
    await ref.send(Ping(3))
    assert (await probe.expect(Pong)).n == 3
    with pytest.raises(ActorNotFound, match="svc/nope"):
        actor_system.lookup("svc/nope")


async def test_message_to_stopped_actor_goes_to_dead_letters(actor_system):
    class Quit(Actor[Ping]):
        accepts = (Ping,)

        async def receive(self, msg: Ping) -> None:
            raise RuntimeError("done")  # temporary: not restarted

    await actor_system.spawn(
        SupervisorSpec("svc", [ChildSpec("once", Quit, restart=Restart.TEMPORARY)])
    )
    ref = actor_system.lookup("svc/once")
    await ref.send(Ping(1))
    await wait_for_state(actor_system, "svc/once", ActorState.STOPPED)
    before = actor_system.dead_letters.count
    await ref.send(Ping(2))
    ref.send_nowait(Ping(3))
    assert actor_system.dead_letters.count == before + 2
    assert actor_system.dead_letters.recent[-1].path == "svc/once"
    with pytest.raises(ActorStopped, match="svc/once"):
        await ref.ask(Ping(4))
    assert actor_system.dead_letters.count == before + 3


async def test_queued_messages_go_to_dead_letters_when_the_system_stops():
    from runtime import open_actor_system

    gate, seen = trio.Event(), []
    async with open_actor_system("t", shutdown=0.5) as system:
        ref = await system.spawn(ChildSpec("gate", Gate, args=(gate, seen), shutdown=0.1))
        await ref.send(Ping(0))
        await trio.testing.wait_all_tasks_blocked()
        ref.send_nowait(Ping(1))
        ref.send_nowait(Ping(2))
    # the gate never opened: the actor was cancelled after its shutdown timeout,
    # and what was queued was counted, not dropped silently
    assert system.dead_letters.count == 2
    assert seen == []


async def test_messages_sent_during_restart_wait_and_none_is_lost(actor_system, mock_clock):
    seen: list[int] = []

    class Collect(Actor[Ping]):
        accepts = (Ping,)
        mailbox = 1000

        async def receive(self, msg: Ping) -> None:
            seen.append(msg.n)

    await actor_system.spawn(SupervisorSpec("svc", [ChildSpec("c", Collect)]))
    ref = actor_system.lookup("svc/c")
    await ref.send(Ping(0))
    await actor_system.inject_crash("svc/c")
    # time stands still: the supervisor is backing off and the cell is RESTARTING
    await wait_for_state(actor_system, "svc/c", ActorState.RESTARTING)
    for i in range(1, 101):
        ref.send_nowait(Ping(i))
    await trio.testing.wait_all_tasks_blocked()
    assert seen == [0]
    mock_clock.jump(60)
    await wait_for_state(actor_system, "svc/c", ActorState.RUNNING, restarts=1)
    await wait_until(lambda: len(seen) == 101)
    assert seen == list(range(101))


async def test_snapshot_shows_every_actor(actor_system):
    await actor_system.spawn(
        SupervisorSpec("svc", [ChildSpec("a", Echo), ChildSpec("b", Echo, mailbox=9)])
    )
    await actor_system.lookup("svc/a").ask(Ping(1))
    snap = actor_system.snapshot().by_path()
    assert set(snap) >= {"svc", "svc/a", "svc/b"}
    assert snap["svc/a"].processed == 1
    assert snap["svc/b"].mailbox_capacity == 9
    assert snap["svc/a"].state is ActorState.RUNNING
    assert snap["svc"].kind == "supervisor"
    assert snap["svc/a"].kind == "Echo"
    # JSON-ready for the control endpoint
    decoded = msgspec.json.decode(msgspec.json.encode(actor_system.snapshot()))
    assert {a["path"] for a in decoded["actors"]} >= {"svc/a", "svc/b"}


async def test_ask_waits_for_infinite_timeout(actor_system):
    ref = await actor_system.spawn(ChildSpec("echo", Echo))
    assert await ref.ask(Ping(2), timeout=math.inf) == Pong(2)


async def test_reply_later_lets_an_actor_answer_a_batch(actor_system):
    from runtime import Reply

    class Batcher(Actor[Ping]):
        accepts = (Ping,)

        def __init__(self) -> None:
            self.pending: list[tuple[Ping, Reply]] = []

        async def receive(self, msg: Ping) -> None:
            self.pending.append((msg, self.ctx.reply_later()))
            if len(self.pending) == 3:
                for m, reply in self.pending:
                    reply.set(Pong(m.n * 10))
                self.pending.clear()

    ref = await actor_system.spawn(ChildSpec("b", Batcher))
    results: dict[int, Pong] = {}

    async def ask(n: int) -> None:
        results[n] = await ref.ask(Ping(n))

    async with trio.open_nursery() as nursery:
        for n in range(3):
            nursery.start_soon(ask, n)
    assert results == {0: Pong(0), 1: Pong(10), 2: Pong(20)}


async def test_reply_later_outside_an_ask_is_an_error(actor_system):
    errors: list[Exception] = []

    class Wrong(Actor[Ping]):
        accepts = (Ping,)

        async def receive(self, msg: Ping) -> None:
            try:
                self.ctx.reply_later()
            except RuntimeError as exc:
                errors.append(exc)

    ref = await actor_system.spawn(ChildSpec("w", Wrong))
    await ref.send(Ping(1))
    await wait_until(lambda: errors)
    assert "outside an ask" in str(errors[0])


async def test_snapshot_mailbox_depth_counts_queued_messages(actor_system):
    gate = trio.Event()
    ref = await actor_system.spawn(ChildSpec("gate", Gate, args=(gate, []), mailbox=5))
    await ref.send(Ping(0))
    await trio.testing.wait_all_tasks_blocked()
    for i in range(3):
        ref.send_nowait(Ping(i))
    info = actor_system.snapshot().by_path()["gate"]
    assert (info.mailbox_depth, info.mailbox_capacity) == (3, 5)
    assert info.mailbox_depth == ref._cell.receive_channel.statistics().current_buffer_used
    gate.set()


async def test_probe_expect_and_expect_nothing(actor_system, autojump_clock):
    probe = await spawn_probe(actor_system, reply=lambda m: Pong(m.n + 1))
    assert await probe.ref.ask(Ping(1)) == Pong(2)  # a probe answers asks too
    assert (await probe.expect(Ping)).n == 1
    await probe.expect_nothing(5)
    await probe.ref.send(Pong(3))
    with pytest.raises(AssertionError, match="expected Ping"):
        await probe.expect(Ping)
    with pytest.raises(AssertionError, match="no Ping within 2s"):
        await probe.expect(Ping, timeout=2)
    await probe.ref.send(Ping(4))
    with pytest.raises(AssertionError, match="expected nothing"):
        await probe.expect_nothing(1)

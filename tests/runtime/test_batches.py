"""Actors that take everything waiting in their mailbox in one turn (``batch`` and
``receive_batch``): batches are only what is queued, in order, each message answered or
failed alone, with no wait at light load and supervision as for ``receive``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec
import pytest
import trio
import trio.testing

from runtime import (
    Actor,
    ActorError,
    ActorState,
    ActorStopped,
    ActorSystem,
    ChildSpec,
    Failed,
    SupervisorSpec,
)
from runtime.testing import wait_for_state


class Item(msgspec.Struct, frozen=True):
    n: int
    bad: bool = False  # fail this one alone
    crash: bool = False  # fail the whole batch (the actor fails)


class Batcher(Actor[Item]):
    """Answers n * 10; records every batch it was handed."""

    accepts = (Item,)
    mailbox = 64
    batch = 16

    def __init__(self, batches: list[list[int]], gate: trio.Event | None = None) -> None:
        self.batches = batches
        self.gate = gate

    async def receive_batch(self, msgs: list[Item]) -> Sequence[Any]:
        self.batches.append([m.n for m in msgs])
        if any(m.crash for m in msgs):
            raise RuntimeError("the whole batch failed")
        if self.gate is not None:
            await self.gate.wait()  # hold the first batch: the rest queues meanwhile
            self.gate = None
        return [Failed(ValueError(f"bad item {m.n}")) if m.bad else m.n * 10 for m in msgs]


async def spawn(system: ActorSystem, batches: list[list[int]], **kwargs: Any) -> Any:
    return await system.spawn(ChildSpec("b", Batcher, args=(batches,), kwargs=kwargs))


async def test_a_lone_message_goes_alone_at_once(
    actor_system: ActorSystem, autojump_clock: trio.testing.MockClock
) -> None:
    batches: list[list[int]] = []
    ref = await spawn(actor_system, batches)
    t0 = trio.current_time()
    assert await ref.ask(Item(1)) == 10
    assert trio.current_time() == t0  # not a tick of (virtual) time waited for more
    assert await ref.ask(Item(2)) == 20
    assert batches == [[1], [2]]


async def test_batches_are_what_was_waiting_in_order(
    actor_system: ActorSystem, autojump_clock: trio.testing.MockClock
) -> None:
    batches: list[list[int]] = []
    gate = trio.Event()
    ref = await spawn(actor_system, batches, gate=gate)
    ref.send_nowait(Item(0))
    await wait_for_batches(batches, 1)  # the first batch is in hand, held at the gate
    for i in range(1, 21):
        ref.send_nowait(Item(i))
    gate.set()
    assert await ref.ask(Item(21)) == 210
    # 0 alone; then at most `batch` of what queued behind it, in order; then the rest.
    assert batches == [[0], list(range(1, 17)), list(range(17, 22))]
    info = ref.statistics()
    assert info.processed == 22


async def wait_for_batches(batches: list[list[int]], n: int) -> None:
    """Until the actor is blocked (held at its gate) with ``n`` batches taken."""
    await trio.testing.wait_all_tasks_blocked()
    assert len(batches) == n


async def test_one_bad_message_fails_alone(
    actor_system: ActorSystem, autojump_clock: trio.testing.MockClock
) -> None:
    batches: list[list[int]] = []
    gate = trio.Event()
    ref = await spawn(actor_system, batches, gate=gate)
    ref.send_nowait(Item(0))
    await wait_for_batches(batches, 1)
    outcomes: dict[int, object] = {}

    async def ask(item: Item) -> None:
        try:
            outcomes[item.n] = await ref.ask(item)
        except ValueError as exc:
            outcomes[item.n] = exc

    async with trio.open_nursery() as nursery:
        for i in range(1, 6):
            nursery.start_soon(ask, Item(i, bad=i == 3))
        await trio.testing.wait_all_tasks_blocked()
        gate.set()
    assert sorted(batches[1]) == [1, 2, 3, 4, 5]  # one batch (tasks start in any order)
    assert outcomes[3].__class__ is ValueError and "bad item 3" in str(outcomes[3])
    assert {n: v for n, v in outcomes.items() if n != 3} == {1: 10, 2: 20, 4: 40, 5: 50}
    # A failed send (no asker) is counted; the actor runs on, never restarted.
    ref.send_nowait(Item(9, bad=True))
    assert await ref.ask(Item(10)) == 100
    info = ref.statistics()
    assert (info.state, info.restarts, info.failures) == (ActorState.RUNNING, 0, 1)


async def test_a_raising_batch_fails_its_asks_and_the_actor_restarts(
    actor_system: ActorSystem, autojump_clock: trio.testing.MockClock
) -> None:
    batches: list[list[int]] = []
    gate = trio.Event()
    await actor_system.spawn(
        SupervisorSpec("s", [ChildSpec("b", Batcher, args=(batches,), kwargs={"gate": gate})])
    )
    ref = actor_system.lookup("s/b")
    ref.send_nowait(Item(0))
    await wait_for_batches(batches, 1)
    errors: list[BaseException] = []

    async def ask(item: Item) -> None:
        try:
            await ref.ask(item)
        except Exception as exc:
            errors.append(exc)

    async with trio.open_nursery() as nursery:
        for item in (Item(1), Item(2, crash=True), Item(3)):
            nursery.start_soon(ask, item)
        await trio.testing.wait_all_tasks_blocked()
        gate.set()
    assert [str(e) for e in errors] == ["the whole batch failed"] * 3
    await wait_for_state(actor_system, "s/b", ActorState.RUNNING, restarts=1)
    assert await ref.ask(Item(4)) == 40  # a fresh incarnation takes the next ones


class Deferring(Actor[Item]):
    """Takes over the replies of even items and answers them after the batch returned."""

    accepts = (Item,)
    batch = 8

    async def receive_batch(self, msgs: list[Item]) -> Sequence[Any]:
        for i, m in enumerate(msgs):
            if m.n % 2 == 0:
                self.ctx.start_soon(self._answer_later, self.ctx.reply_later(i), m.n)
        return [None if m.n % 2 == 0 else m.n for m in msgs]

    async def _answer_later(self, reply: Any, n: int) -> None:
        await trio.sleep(1)
        reply.set(-n)


async def test_reply_later_by_index_in_a_batch(
    actor_system: ActorSystem, autojump_clock: trio.testing.MockClock
) -> None:
    ref = await actor_system.spawn(ChildSpec("d", Deferring))
    results: dict[int, int] = {}

    async def ask(n: int) -> None:
        results[n] = await ref.ask(Item(n))

    async with trio.open_nursery() as nursery:
        for n in range(4):
            nursery.start_soon(ask, n)
    assert results == {0: 0, 1: 1, 2: -2, 3: 3}


class Miscounting(Actor[Item]):
    accepts = (Item,)
    batch = 4

    async def receive_batch(self, msgs: list[Item]) -> Sequence[Any]:
        return []


async def test_a_result_list_of_the_wrong_length_is_a_clear_error(
    autojump_clock: trio.testing.MockClock,
) -> None:
    from runtime import Restart, open_actor_system

    async with open_actor_system("t") as system:
        ref = await system.spawn(ChildSpec("m", Miscounting, restart=Restart.TEMPORARY))
        with pytest.raises(ActorError, match="returned 0 results for 1 messages"):
            await ref.ask(Item(1))
        await wait_for_state(system, "m", ActorState.STOPPED)
        with pytest.raises(ActorStopped):
            await ref.ask(Item(2))


class Holding(Actor[Item]):
    accepts = (Item,)
    batch = 4

    async def receive_batch(self, msgs: list[Item]) -> Sequence[Any]:
        await trio.sleep_forever()
        raise AssertionError


async def test_graceful_stop_waits_for_the_batch_in_hand_then_cancels(
    autojump_clock: trio.testing.MockClock,
) -> None:
    from runtime import open_actor_system

    errors: list[BaseException] = []
    async with open_actor_system("t") as system:
        ref = await system.spawn(ChildSpec("h", Holding, shutdown=2.0))

        async def ask() -> None:
            try:
                await ref.ask(Item(1), timeout=60)
            except ActorStopped as exc:
                errors.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ask)
            await trio.testing.wait_all_tasks_blocked()
            t0 = trio.current_time()
            system.request_stop()
        await system.wait_stopped()
    # The batch in hand had its shutdown timeout (virtual seconds), then was cancelled;
    # its asker was told the actor went away, not cancelled itself.
    assert trio.current_time() - t0 >= 2.0
    assert len(errors) == 1 and "cancelled" in str(errors[0])

"""BatchingActor: group commit, and several items owed one reply (put_many)."""

from __future__ import annotations

from typing import Any, ClassVar

import msgspec
import pytest
import trio

from actors.stores.batching import BatchingActor, Flush
from runtime import ChildSpec, SupervisorSpec


class Put(msgspec.Struct, frozen=True):
    items: list[int]


class Fail(Exception):
    pass


class Doubler(BatchingActor[int]):
    """Flushes each batch into ``batches``; answers each item with item * 2."""

    accepts: ClassVar[tuple[type, ...]] = (Put, int, Flush)

    def __init__(self, batches: list[list[int]], batch_size: int) -> None:
        super().__init__(batch_size, batch_ms=5.0)
        self.batches = batches

    def collect(self, msg: Any, index: int) -> None:
        if type(msg) is Put:
            self.put_many(msg.items, self.ctx.reply_later(index))
        else:
            self.put(msg, self.ctx.reply_later(index))

    async def flush(self, items: list[int]) -> list[int]:
        self.batches.append(list(items))
        if -1 in items:
            raise Fail("a bad item")
        return [i * 2 for i in items]


async def _spawn(system: Any, batches: list[list[int]], batch_size: int = 100) -> Any:
    await system.spawn(
        SupervisorSpec("b", [ChildSpec("doubler", Doubler, args=(batches, batch_size))])
    )
    return system.lookup("b/doubler")


async def test_put_many_goes_in_one_batch_with_one_reply_in_order(actor_system):
    batches: list[list[int]] = []
    ref = await _spawn(actor_system, batches)
    assert await ref.ask(Put([3, 1, 2])) == [6, 2, 4]
    assert batches == [[3, 1, 2]]  # one flush, not one per item
    assert await ref.ask(Put([])) == []
    assert await ref.ask(7) == 14


async def test_put_many_larger_than_a_batch_is_answered_once_all_batches_are_written(actor_system):
    batches: list[list[int]] = []
    ref = await _spawn(actor_system, batches, batch_size=4)
    assert await ref.ask(Put(list(range(10)))) == [i * 2 for i in range(10)]
    assert batches == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


async def test_a_failed_batch_fails_the_whole_put_many(actor_system):
    batches: list[list[int]] = []
    ref = await _spawn(actor_system, batches)
    with pytest.raises(Fail):
        await ref.ask(Put([1, -1, 2]))


class Lingering(Doubler):
    linger = True


async def test_linger_flushes_at_once_when_idle_and_fills_batches_under_load(
    actor_system, autojump_clock
):
    batches: list[list[int]] = []
    await actor_system.spawn(
        SupervisorSpec("l", [ChildSpec("doubler", Lingering, args=(batches, 100))])
    )
    ref = actor_system.lookup("l/doubler")
    t0 = trio.current_time()
    assert await ref.ask(1) == 2  # idle: no wait at all
    assert trio.current_time() == t0
    # Right after a flush more items come, one by one: they wait for batch_ms together.
    async with trio.open_nursery() as nursery:
        for i in (2, 3, 4):
            nursery.start_soon(ref.ask, i)
            await trio.sleep(0.001)
    assert batches == [[1], [2, 3, 4]]
    assert trio.current_time() - t0 == pytest.approx(0.005, abs=1e-6)  # batch_ms after the first
    await trio.sleep(1)  # long idle again: the next one goes at once
    t1 = trio.current_time()
    assert await ref.ask(5) == 10
    assert trio.current_time() == t1 and batches[-1] == [5]

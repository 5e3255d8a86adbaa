"""BatchingActor on receive_batch: one turn per batch of waiting messages, and a bad item
(refused by collect, or failed by the store alone) fails only its own ask."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest
import trio
import trio.testing

from actors.stores.batching import BatchingActor, Flush
from runtime import ActorSystem, ChildSpec, Failed


class Rejecting(BatchingActor[int]):
    """Refuses negative numbers in collect; the store fails 13 alone; answers n * 2."""

    accepts: ClassVar[tuple[type, ...]] = (int, Flush)

    def __init__(self, batches: list[list[int]]) -> None:
        super().__init__(batch_size=100, batch_ms=5.0)
        self.batches = batches

    def collect(self, msg: int, index: int) -> None:
        if msg < 0:
            raise ValueError(f"negative: {msg}")
        self.put(msg, self.ctx.reply_later(index))

    async def flush(self, items: list[int]) -> list[Any]:
        self.batches.append(list(items))
        return [Failed(KeyError(i)) if i == 13 else i * 2 for i in items]


async def test_one_bad_item_fails_alone_the_rest_share_one_write(
    actor_system: ActorSystem, autojump_clock: trio.testing.MockClock
) -> None:
    batches: list[list[int]] = []
    ref = await actor_system.spawn(ChildSpec("r", Rejecting, args=(batches,)))
    outcomes: dict[int, Any] = {}

    async def ask(n: int) -> None:
        try:
            outcomes[n] = await ref.ask(n)
        except (ValueError, KeyError) as exc:
            outcomes[n] = type(exc)

    t0 = trio.current_time()
    async with trio.open_nursery() as nursery:
        for n in (1, -2, 13, 4):
            nursery.start_soon(ask, n)
    assert outcomes == {1: 2, -2: ValueError, 13: KeyError, 4: 8}
    assert sorted(batches[0]) == [1, 4, 13] and len(batches) == 1  # one write for all three
    assert trio.current_time() == t0  # group commit: nothing waited for batch_ms
    info = ref.statistics()
    assert info.restarts == 0 and info.processed == 4


async def test_a_lone_item_is_written_at_once(
    actor_system: ActorSystem, autojump_clock: trio.testing.MockClock
) -> None:
    batches: list[list[int]] = []
    ref = await actor_system.spawn(ChildSpec("r", Rejecting, args=(batches,)))
    t0 = trio.current_time()
    assert await ref.ask(5) == 10
    assert trio.current_time() == t0 and batches == [[5]]
    with pytest.raises(ValueError, match="negative: -1"):
        await ref.ask(-1)
    assert await ref.ask(6) == 12

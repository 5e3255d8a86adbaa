"""Runtime benchmarks: one actor hop against a raw Trio channel hop, and snapshot cost."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import msgspec
import trio

from runtime import Actor, ChildSpec, SupervisorSpec, open_actor_system


class Msg(msgspec.Struct):
    n: int
    payload: str = "x" * 64


async def _rate(n: int, send: Callable[[Msg], Awaitable[object]], done: trio.Event) -> float:
    """Messages per second: *n* sent, until the receiver says it has them all."""
    t0 = time.perf_counter()
    for i in range(n):
        await send(Msg(i))
    await done.wait()
    return n / (time.perf_counter() - t0)


async def _raw_hop(n: int) -> float:
    send, receive = trio.open_memory_channel[Msg](64)
    done = trio.Event()

    async def consumer() -> None:
        count = 0
        async for _ in receive:
            count += 1
            if count == n:
                done.set()
                return

    async with trio.open_nursery() as nursery:
        nursery.start_soon(consumer)
        return await _rate(n, send.send, done)


class _Counter(Actor[Msg]):
    accepts = (Msg,)
    mailbox = 64

    def __init__(self, n: int, done: trio.Event) -> None:
        self.n = n
        self.done = done
        self.count = 0

    async def receive(self, msg: Msg) -> None:
        self.count += 1
        if self.count == self.n:
            self.done.set()


async def _actor_hop(n: int) -> float:
    done = trio.Event()
    async with open_actor_system("bench") as system:
        ref = await system.spawn(ChildSpec("counter", _Counter, args=(n, done)))
        return await _rate(n, ref.send, done)


class _BatchCounter(_Counter):
    """The same count, taking everything waiting in one turn (``batch``)."""

    batch = 64
    turns = 0

    async def receive_batch(self, msgs: list[Msg]) -> Sequence[None]:
        _BatchCounter.turns += 1
        self.count += len(msgs)
        if self.count >= self.n:
            self.done.set()
        return [None] * len(msgs)


async def _actor_batch_hop(n: int) -> float:
    done = trio.Event()
    async with open_actor_system("bench") as system:
        ref = await system.spawn(ChildSpec("counter", _BatchCounter, args=(n, done)))
        return await _rate(n, ref.send, done)


class _Idle(Actor[Msg]):
    accepts = (Msg,)
    mailbox = 8

    async def receive(self, msg: Msg) -> None:
        pass


async def _snapshot(actors: int, repeat: int) -> dict[str, float]:
    per_sup = 50
    tree = SupervisorSpec(
        "root",
        [
            SupervisorSpec(f"s{j}", [ChildSpec(f"a{i}", _Idle) for i in range(per_sup)])
            for j in range(actors // per_sup)
        ],
    )
    async with open_actor_system("bench", shutdown=60) as system:
        await system.spawn(tree)
        count = len(system.snapshot().actors)
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            system.snapshot()
            times.append((time.perf_counter() - t0) * 1000)
        times.sort()
        return {
            "actors": count,
            "median_ms": times[len(times) // 2],
            "p95_ms": times[int(len(times) * 0.95) - 1],
            "max_ms": times[-1],
        }


def actor_hop(quick: bool = False) -> dict[str, Any]:
    """Best of several alternating runs of each, so both see the same machine noise."""
    n = 50_000 if quick else 200_000
    rounds = 3 if quick else 5
    raw, actor, batch = [], [], []
    _BatchCounter.turns = 0
    for _ in range(rounds):
        raw.append(trio.run(_raw_hop, n))
        actor.append(trio.run(_actor_hop, n))
        batch.append(trio.run(_actor_batch_hop, n))
    return {
        "raw_msgs_per_s": round(max(raw)),
        "actor_msgs_per_s": round(max(actor)),
        "ratio": round(max(actor) / max(raw), 3),
        # receive_batch: the sender still pays one send per message; the receiver one turn
        # per batch of what was waiting.
        "actor_batch_msgs_per_s": round(max(batch)),
        "ratio_batch": round(max(batch) / max(raw), 3),
        "batch_mean_size": round(n * rounds / max(_BatchCounter.turns, 1), 2),
        "target": ">= 0.5",
        "conditions": (
            f"{n} msgspec Structs (64 B payload), mailbox/channel 64, best of {rounds} "
            "alternating runs; batch: receive_batch with batch = 64"
        ),
    }


def snapshot(quick: bool = False) -> dict[str, Any]:
    result = trio.run(_snapshot, 1000, 20 if quick else 100)
    return {
        **{k: round(v, 3) for k, v in result.items()},
        "target": "<= 5 ms",
        "conditions": "1,000 actors under 20 supervisors, idle",
    }


if __name__ == "__main__":
    print(actor_hop(quick=True))
    print(snapshot(quick=True))

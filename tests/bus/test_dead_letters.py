"""The broker's dead-letter queue read by several readers at once, against a real RabbitMQ.

Before, each reader took what it could with basic.get and handed it back when
its channel closed: two readers each saw a different part of the queue, and the
hand-backs reordered it. Now readers take turns and see all of it, in order.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio

from actors.bus import RabbitBus, delete_topology
from config import BusConfig
from runtime import AsyncioEdge, open_asyncio_edge
from tests.support.rabbitmq import publish_dead_letters

pytestmark = pytest.mark.services

COUNT = 40


def _config(url: str) -> BusConfig:
    p = f"test.dlq.{uuid.uuid4().hex[:10]}"
    return BusConfig(
        kind="rabbitmq",
        url=url,
        send_exchange=f"{p}.send.exchange",
        status_exchange=f"{p}.status.exchange",
        send_queue=f"{p}.send",
        status_queue=f"{p}.status",
        dead_letter_exchange=f"{p}.dead.exchange",
        dead_letter_queue=f"{p}.dead",
        publish_timeout_s=10.0,
    )


@pytest.fixture
async def edge() -> AsyncIterator[AsyncioEdge]:
    async with open_asyncio_edge() as e:
        yield e


@pytest.fixture
async def dead(rabbitmq_url: str, edge: AsyncioEdge) -> AsyncIterator[BusConfig]:
    """A fresh topology whose dead-letter queue holds COUNT known messages."""
    config = _config(rabbitmq_url)
    owner = RabbitBus(config, url=rabbitmq_url, role="email-server")
    await owner.open()  # declares the exchanges and queues, the DLQ among them
    try:
        await edge.run(publish_dead_letters, rabbitmq_url, config, COUNT)
        yield config
    finally:
        with trio.CancelScope(shield=True):
            await owner.close()
            await edge.run(delete_topology, config, url=rabbitmq_url)


async def _open_reader(config: BusConfig) -> RabbitBus:
    bus = RabbitBus(config, url=config.url, role="tool", connection_name="test-dlq-reader")
    await bus.open()
    return bus


EXPECTED = [f"dl-{i:03d}" for i in range(COUNT)]


def _ids(letters: list[Any]) -> list[str]:
    return [letter.body.decode().split('"')[3] for letter in letters]


async def test_two_concurrent_readers_each_see_every_dead_letter_in_order(
    dead: BusConfig,
) -> None:
    readers = [await _open_reader(dead) for _ in range(2)]
    try:
        seen: dict[int, list[list[str]]] = {0: [], 1: []}

        async def read(index: int, rounds: int) -> None:
            for _ in range(rounds):
                seen[index].append(_ids(await readers[index].dead_letters(limit=1000)))

        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(read, 0, 5)
                nursery.start_soon(read, 1, 5)
        for index, rounds in seen.items():
            for n, got in enumerate(rounds):
                assert got == EXPECTED, f"reader {index}, round {n}: {got}"
        # And nothing was lost or moved: the queue is as it was.
        assert _ids(await readers[0].dead_letters(limit=1000)) == EXPECTED
        depths = await readers[0].queue_depths()
        assert depths[dead.dead_letter_queue] == COUNT
    finally:
        for bus in readers:
            await bus.close()


async def test_a_limit_shows_the_oldest_and_a_replay_meanwhile_is_not_confused(
    dead: BusConfig,
) -> None:
    reader, replayer = await _open_reader(dead), await _open_reader(dead)
    try:
        firsts: list[list[str]] = []

        async def look() -> None:
            for _ in range(5):
                firsts.append(_ids(await reader.dead_letters(limit=5)))

        replayed: list[int] = []

        async def replay() -> None:
            # Replayed letters go back to the send queue, out of the DLQ.
            replayed.append(await replayer.replay_dead_letters(3))

        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(look)
                nursery.start_soon(replay)
        assert replayed == [3]
        # Every look saw the oldest five of what was there at that moment: before
        # the replay took the first three, or after.
        for got in firsts:
            assert got in (EXPECTED[:5], EXPECTED[3:8]), got
        assert _ids(await reader.dead_letters(limit=1000)) == EXPECTED[3:]
    finally:
        await reader.close()
        await replayer.close()


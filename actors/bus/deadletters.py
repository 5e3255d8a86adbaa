"""The dead-letter queue of a RabbitMQ bus: what a dead letter is, and the tools that read it.

A message reaches the dead-letter queue two ways: :meth:`RabbitDelivery.reject
<actors.bus.rabbitmq.RabbitDelivery.reject>` publishes it there with the reason and
where it came from in headers (``x-reject-reason``, ``x-original-*``), or the broker
dead-letters it (a nack without requeue, a delivery limit, an expired TTL) and records
that in ``x-death``. :class:`DeadLetter` is either, read back. :class:`DeadLetterTools`
lists them, replays them to where they came from, and counts the queues' depths, for
``supervisor.py dlq``, the console, the soak and tests (through ``RabbitBus``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from typing import Any, NamedTuple

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage
from aiormq.exceptions import ChannelLockedResource, ChannelNotFoundEntity

from actors.bus.topology import Topology, close_quietly
from actors.domain.edges import BusError
from config import BusConfig

__all__ = [
    "ORIGIN_EXCHANGE_HEADER",
    "ORIGIN_KEY_HEADER",
    "ORIGIN_QUEUE_HEADER",
    "REASON_HEADER",
    "DeadLetter",
    "DeadLetterTools",
]

REASON_HEADER = "x-reject-reason"
ORIGIN_QUEUE_HEADER = "x-original-queue"
ORIGIN_EXCHANGE_HEADER = "x-original-exchange"
ORIGIN_KEY_HEADER = "x-original-routing-key"
# Headers the broker or we add on the way to the dead-letter queue; a replayed
# message starts clean.
_DEAD_HEADERS = frozenset(
    {
        "x-death",
        "x-first-death-exchange",
        "x-first-death-queue",
        "x-first-death-reason",
        "x-last-death-exchange",
        "x-last-death-queue",
        "x-last-death-reason",
        "x-delivery-count",
        REASON_HEADER,
        ORIGIN_QUEUE_HEADER,
        ORIGIN_EXCHANGE_HEADER,
        ORIGIN_KEY_HEADER,
    }
)


class DeadLetter(NamedTuple):
    queue: str  # the queue the message was dead-lettered from
    body: bytes
    reason: str


ChannelFactory = Callable[[bool], Awaitable[AbstractChannel]]


class DeadLetterTools:
    """asyncio side: the dead-letter queue and the queue depths of one topology.

    *channel* opens a throwaway channel on the caller's connection (with publisher
    confirms when its argument is true); each tool closes the channels it opens.
    One instance reads the dead-letter queue at a time (an asyncio lock), and
    readers in other processes take turns through the broker (below).
    """

    def __init__(self, topology: Topology, channel: ChannelFactory) -> None:
        self.topology = topology
        self._channel = channel
        self._lock: asyncio.Lock | None = None  # one dead-letter reader per bus

    @property
    def config(self) -> BusConfig:
        return self.topology.config

    async def queue_depths(self) -> dict[str, int]:
        """Ready messages per queue of this topology (missing queues are left out)."""
        depths: dict[str, int] = {}
        channel = await self._channel(False)
        try:
            for name in self.topology.queue_names():
                if channel.is_closed:  # a missing queue closes the channel (404)
                    channel = await self._channel(False)
                try:
                    queue = await channel.declare_queue(name, passive=True)
                except ChannelNotFoundEntity:
                    continue
                count = queue.declaration_result.message_count
                depths[name] = int(count or 0)
        finally:
            await close_quietly(channel)
        return depths

    # How the dead-letter queue is read. A queue has no "peek": a reader takes
    # messages unacknowledged and hands them back. While one reader holds some,
    # another does not see them (each saw a different random part), and a
    # quorum queue (3.10) puts what is handed back at its tail, so handing back
    # a prefix rotated the queue. So readers take turns: each holds an
    # exclusive queue named after the DLQ as a lock (the broker refuses a
    # second holder, and drops the lock of a reader that dies), takes the whole
    # queue in order with one consumer (up to its message count, plus whatever
    # arrives meanwhile), keeps or acks what it needs, and hands everything
    # else back with one nack(multiple, requeue): back in the same order.
    # Only a message dead-lettered in the one round trip between the end of
    # the read and the hand-back lands ahead of them. A stream would allow true
    # browsing, but the DLQ must stay a queue: replay removes what it
    # republishes, and at-least-once dead-lettering targets a queue.

    @asynccontextmanager
    async def _holding(
        self, limit: int, confirms: bool = False
    ) -> AsyncIterator[tuple[AbstractChannel, list[AbstractIncomingMessage]] | None]:
        """The first ``limit`` dead letters, in order, as the only reader.

        Yields None if there is no dead-letter queue. The whole queue is held
        during the block; whatever is not acked in it goes back, in its order,
        when the block ends.
        """
        c = self.config
        if self._lock is None:
            self._lock = asyncio.Lock()
        deadline = time.monotonic() + max(c.publish_timeout_s, 5.0)
        async with self._lock:
            lock_channel = await self._take_lock(deadline)
            channel: AbstractChannel | None = None
            held: list[AbstractIncomingMessage] = []
            try:
                channel = await self._channel(confirms)
                try:
                    queue = await channel.declare_queue(c.dead_letter_queue, passive=True)
                except ChannelNotFoundEntity:
                    yield None
                    return
                count = int(queue.declaration_result.message_count or 0)
                if limit > 0 and count > 0:
                    await channel.set_qos(prefetch_count=0)  # the whole queue, not a prefix
                    full = asyncio.Event()

                    async def take(message: AbstractIncomingMessage) -> None:
                        held.append(message)
                        if len(held) >= count:
                            full.set()

                    tag = await queue.consume(take, no_ack=False, exclusive=True)
                    with contextlib.suppress(asyncio.TimeoutError):
                        # Fewer arrive only if a consumer outside this protocol took some.
                        await asyncio.wait_for(full.wait(), max(0.1, deadline - time.monotonic()))
                    await queue.cancel(tag)
                yield channel, held[:limit]
            finally:
                if channel is not None and held and not channel.is_closed:
                    with contextlib.suppress(Exception):
                        # One nack for every unacked message up to the last tag (if
                        # the last was acked, all were: nothing to hand back).
                        await held[-1].nack(multiple=True, requeue=True)
                if channel is not None:
                    await close_quietly(channel)  # returns anything still held
                with contextlib.suppress(Exception):
                    await lock_channel.queue_delete(f"{c.dead_letter_queue}.reader-lock")
                await close_quietly(lock_channel)

    async def _take_lock(self, deadline: float) -> AbstractChannel:
        name = f"{self.config.dead_letter_queue}.reader-lock"
        backoff = 0.02
        while True:
            channel = await self._channel(False)
            try:
                await channel.declare_queue(name, exclusive=True, durable=False)
                return channel
            except ChannelLockedResource:
                await close_quietly(channel)
            if time.monotonic() + backoff > deadline:
                raise BusError(
                    f"another reader holds the dead-letter queue {self.config.dead_letter_queue!r}"
                    " (a dlq list/replay or a console); try again"
                )
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 0.5)

    async def dead_letters(self, limit: int) -> list[DeadLetter]:
        """Up to *limit* dead letters, oldest first, left in place."""
        async with self._holding(limit) as holding:
            if holding is None:
                return []
            return [
                DeadLetter(
                    _origin_queue(dict(m.headers or {}), m.routing_key or ""),
                    m.body,
                    _reason(dict(m.headers or {})),
                )
                for m in holding[1]
            ]

    async def purge(self, n: int) -> int:
        """Delete up to *n* dead letters, oldest first (acked while held: gone for good)."""
        async with self._holding(n) as holding:
            if holding is None:
                return 0
            for message in holding[1]:
                await message.ack()
            return len(holding[1])

    async def replay(self, n: int) -> int:
        """Publish up to *n* dead letters (confirmed) back where they came from, then ack them."""
        c = self.config
        routes = {c.send_queue: c.send_exchange, c.status_queue: c.status_exchange}
        replayed = 0
        async with self._holding(n, confirms=True) as holding:
            if holding is None:
                return 0
            channel, messages = holding
            for message in messages:
                headers = dict(message.headers or {})
                origin = _origin_queue(headers, message.routing_key or "")
                if origin in routes:
                    exchange_name, routing_key = routes[origin], origin
                else:
                    exchange_name = str(headers.get(ORIGIN_EXCHANGE_HEADER) or "")
                    routing_key = str(headers.get(ORIGIN_KEY_HEADER) or origin)
                clean = {k: v for k, v in headers.items() if k not in _DEAD_HEADERS}
                republished = aio_pika.Message(
                    message.body,
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    content_type=message.content_type or "application/json",
                    message_id=message.message_id or uuid.uuid4().hex,
                    headers=clean,
                )
                exchange = (
                    channel.default_exchange
                    if not exchange_name
                    else await channel.get_exchange(exchange_name, ensure=False)
                )
                try:
                    await exchange.publish(
                        republished, routing_key, mandatory=True, timeout=c.publish_timeout_s
                    )
                except Exception as exc:
                    raise BusError(
                        f"could not replay a dead letter from {origin!r} to "
                        f"{exchange_name!r}/{routing_key!r}: {exc!r}"
                    ) from exc
                await message.ack()
                replayed += 1
        return replayed


def _text(value: object) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _deaths(headers: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    deaths = headers.get("x-death")
    if isinstance(deaths, Iterable) and not isinstance(deaths, str | bytes):
        return [d for d in deaths if isinstance(d, Mapping)]
    return []


def _origin_queue(headers: Mapping[str, Any], routing_key: str) -> str:
    if headers.get(ORIGIN_QUEUE_HEADER):
        return _text(headers[ORIGIN_QUEUE_HEADER])
    deaths = _deaths(headers)
    if deaths and deaths[0].get("queue"):
        return _text(deaths[0]["queue"])
    return routing_key


def _reason(headers: Mapping[str, Any]) -> str:
    if headers.get(REASON_HEADER):
        return _text(headers[REASON_HEADER])
    deaths = _deaths(headers)
    if deaths:
        death = deaths[0]  # the most recent
        why = _text(death.get("reason", "unknown"))
        queue = _text(death.get("queue", "?"))
        if why == "delivery_limit":
            return f"delivery limit reached on {queue} (the broker dead-lettered it)"
        return f"{why} on {queue} (the broker dead-lettered it)"
    return "unknown (no reason recorded)"

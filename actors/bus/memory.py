"""The in-process bus of the embedded profile: two bounded Trio channels.

It carries the same JSON bytes as RabbitMQ does, so the consumers decode and
validate exactly as in the distributed profile. A full channel is
backpressure on the publisher. Nothing here survives the process; the
embedded profile's durability comes from the store and the outbox sweeper.
"""

from __future__ import annotations

from collections.abc import Sequence

import trio

from actors.domain.edges import BusError, Delivery
from actors.domain.schema import EmailSendEvent, EmailStatusEvent, encode


class MemoryDelivery:
    __slots__ = ("body", "redelivered", "_bus", "_queue", "_settled")

    def __init__(self, bus: MemoryBus, queue: str, body: bytes, redelivered: bool) -> None:
        self.body = body
        self.redelivered = redelivered
        self._bus = bus
        self._queue = queue
        self._settled = False

    def _settle(self) -> None:
        if self._settled:
            raise RuntimeError("delivery settled twice")
        self._settled = True

    async def ack(self) -> None:
        self._settle()
        await trio.lowlevel.checkpoint()

    async def reject(self, reason: str) -> None:
        self._settle()
        self._bus.dead_letters.append((self._queue, self.body, reason))
        await trio.lowlevel.checkpoint()

    async def requeue(self) -> None:
        self._settle()
        await self._bus._channel(self._queue)[0].send((self.body, True))


class MemoryBus:
    """Implements ``actors.domain.edges.Bus`` in one process."""

    durable_delay = False  # a delay can only be waited out in memory here

    def __init__(self, capacity: int = 10_000) -> None:
        self._send = trio.open_memory_channel[tuple[bytes, bool]](capacity)
        self._status = trio.open_memory_channel[tuple[bytes, bool]](capacity)
        self.dead_letters: list[tuple[str, bytes, str]] = []

    def _channel(
        self, queue: str
    ) -> tuple[
        trio.MemorySendChannel[tuple[bytes, bool]], trio.MemoryReceiveChannel[tuple[bytes, bool]]
    ]:
        return self._send if queue == "send" else self._status

    async def open(self) -> None:
        await trio.lowlevel.checkpoint()

    async def close(self) -> None:
        await trio.lowlevel.checkpoint()

    async def publish_send(self, event: EmailSendEvent) -> None:
        await self._send[0].send((encode(event), False))

    async def publish_status(self, event: EmailStatusEvent) -> None:
        await self._status[0].send((encode(event), False))

    async def publish_status_many(
        self, events: Sequence[EmailStatusEvent]
    ) -> list[BusError | None]:
        """Each in turn, in order (a full channel is backpressure); none fails here."""
        for event in events:
            await self._status[0].send((encode(event), False))
        await trio.lowlevel.checkpoint()
        return [None] * len(events)

    async def ack_many(self, deliveries: Sequence[Delivery]) -> None:
        """As ``d.ack()`` each; a delivery of another bus or settled already raises first."""
        mine: list[MemoryDelivery] = []
        for d in deliveries:
            if not isinstance(d, MemoryDelivery) or d._bus is not self:
                raise ValueError(f"ack_many: {d!r} was not taken from this bus")
            if d._settled:
                raise RuntimeError("ack_many: a delivery is settled already")
            mine.append(d)
        if len({id(d) for d in mine}) != len(mine):
            raise RuntimeError("ack_many: a delivery is given twice")
        for d in mine:
            d._settle()
        await trio.lowlevel.checkpoint()

    async def publish_send_delayed(self, event: EmailSendEvent, delay_s: float) -> None:
        """Wait out the delay, then publish: the caller's task holds the wait."""
        await trio.sleep(delay_s)
        await self.publish_send(event)

    async def publish_raw(self, queue: str, body: bytes) -> None:
        """Put arbitrary bytes on a queue (tests of bad input)."""
        await self._channel(queue)[0].send((body, False))

    async def next_send(self) -> MemoryDelivery:
        body, redelivered = await self._send[1].receive()
        return MemoryDelivery(self, "send", body, redelivered)

    async def next_status(self) -> MemoryDelivery:
        body, redelivered = await self._status[1].receive()
        return MemoryDelivery(self, "status", body, redelivered)

    async def next_send_many(self, limit: int) -> list[MemoryDelivery]:
        return await self._next_many("send", limit)

    async def next_status_many(self, limit: int) -> list[MemoryDelivery]:
        return await self._next_many("status", limit)

    async def _next_many(self, queue: str, limit: int) -> list[MemoryDelivery]:
        """The next delivery and those already queued behind it, at most ``limit``."""
        if limit < 1:
            raise ValueError(f"limit: must be at least 1, got {limit}")
        receive = self._channel(queue)[1]
        body, redelivered = await receive.receive()
        taken = [MemoryDelivery(self, queue, body, redelivered)]
        while len(taken) < limit:
            try:
                body, redelivered = receive.receive_nowait()
            except trio.WouldBlock:
                break
            taken.append(MemoryDelivery(self, queue, body, redelivered))
        return taken

    def depths(self) -> dict[str, int]:
        return {
            "send": self._send[1].statistics().current_buffer_used,
            "status": self._status[1].statistics().current_buffer_used,
        }

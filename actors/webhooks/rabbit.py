"""The distributed profile's webhook queue: RabbitMQ, one durable queue per endpoint.

Queues (classic, durable, messages persistent, published with confirms and ``mandatory``):

* ``<prefix>.<endpoint>``: deliveries due now. Its consumer's prefetch is the endpoint's
  ``concurrency``, so a slow endpoint holds only its own messages.
* ``<prefix>.<endpoint>.retry``: a failed try is published here with a per-message TTL
  (the backoff delay) and acked; on expiry the broker dead-letters it back into the
  endpoint's queue. So a retry waits in the broker, not in a process. RabbitMQ expires
  messages only at a queue's head, so a retry may wait a little longer than its delay
  behind one with a longer delay, never less.
* ``<prefix>.failed``: deliveries given up after ``max_age_s``, for ``webhooks
  list-failed`` (read and left in place) and ``webhooks replay`` (moved back).

Order per email is not enforced here (retries and ``concurrency`` > 1 can reorder);
the body's ``sequence`` tells the receiver which status is newer.

aio-pika runs behind ``runtime``'s asyncio edge; ``connect_robust`` restores the channels,
queues and consumers after a lost connection (deliveries taken before it are redelivered).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

import aio_pika
import msgspec
import trio
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractRobustConnection

from actors.domain.edges import BusUnavailable
from actors.webhooks.events import WebhookItem
from actors.webhooks.outbox import Job
from runtime import AsyncioEdge, current_edge

__all__ = ["RabbitWebhookQueue"]

log = logging.getLogger("mailactors.webhooks")

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(WebhookItem).decode


class RabbitWebhookQueue:
    """Implements ``WebhookQueue`` on RabbitMQ; open it inside ``open_asyncio_edge()``."""

    def __init__(
        self,
        url: str,
        prefix: str,
        endpoints: dict[str, int],
        *,
        consume: bool = True,
        publish_timeout_s: float = 10.0,
    ) -> None:
        self.url = url
        self.prefix = prefix
        self.endpoints = dict(endpoints)  # name -> prefetch (the endpoint's concurrency)
        self.consume = consume
        self.publish_timeout_s = publish_timeout_s
        self._edge: AsyncioEdge | None = None
        self._conn: AbstractRobustConnection | None = None
        self._pub: AbstractChannel | None = None
        self._inboxes: dict[str, asyncio.Queue[AbstractIncomingMessage]] = {}

    def queue(self, endpoint: str) -> str:
        return f"{self.prefix}.{endpoint}"

    def retry_queue(self, endpoint: str) -> str:
        return f"{self.prefix}.{endpoint}.retry"

    @property
    def failed_queue(self) -> str:
        return f"{self.prefix}.failed"

    # -- lifecycle ---------------------------------------------------------------------------

    async def _run(self, fn: Any, *args: Any) -> Any:
        if self._edge is None:
            raise RuntimeError("RabbitWebhookQueue used before open()")
        return await self._edge.run(fn, *args)

    async def open(self) -> None:
        self._edge = current_edge()
        await self._run(self._aio_open)

    async def close(self) -> None:
        if self._edge is None or self._conn is None:
            await trio.lowlevel.checkpoint()
            return
        with trio.CancelScope(shield=True), trio.move_on_after(5.0):
            await self._run(self._conn.close)

    async def _aio_open(self) -> None:
        try:
            self._conn = await asyncio.wait_for(
                aio_pika.connect_robust(
                    self.url, client_properties={"connection_name": "mailactors-webhooks"}
                ),
                self.publish_timeout_s,
            )
        except (TimeoutError, OSError, aio_pika.exceptions.AMQPConnectionError) as exc:
            raise BusUnavailable(f"webhook queue: cannot reach RabbitMQ: {exc}") from exc
        self._pub = await self._conn.channel(publisher_confirms=True, on_return_raises=True)
        for name in self.endpoints:
            await self._pub.declare_queue(self.queue(name), durable=True)
            await self._pub.declare_queue(
                self.retry_queue(name),
                durable=True,
                arguments={
                    "x-dead-letter-exchange": "",
                    "x-dead-letter-routing-key": self.queue(name),
                },
            )
        await self._pub.declare_queue(self.failed_queue, durable=True)
        if self.consume:
            for name, prefetch in self.endpoints.items():
                channel = await self._conn.channel()
                await channel.set_qos(prefetch_count=prefetch)
                queue = await channel.declare_queue(self.queue(name), durable=True)
                inbox: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
                self._inboxes[name] = inbox
                await queue.consume(inbox.put)

    # -- publishing ---------------------------------------------------------------------------

    async def _aio_publish(
        self, routes: Sequence[tuple[str, bytes, float | None]]
    ) -> None:
        pub = self._pub
        assert pub is not None
        try:
            await asyncio.wait_for(
                asyncio.gather(*(
                    pub.default_exchange.publish(
                        aio_pika.Message(
                            body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                            content_type="application/json", expiration=ttl,
                        ),
                        routing_key=queue,
                        mandatory=True,
                    )
                    for queue, body, ttl in routes
                )),
                self.publish_timeout_s,
            )  # fmt: skip
        except (TimeoutError, aio_pika.exceptions.AMQPConnectionError, OSError) as exc:
            raise BusUnavailable(f"webhook queue: publish failed: {exc!r}") from exc

    async def add_many(self, items: Sequence[WebhookItem]) -> None:
        routes = [(self.queue(i.endpoint), _encode(i), None) for i in items]
        await self._run(self._aio_publish, routes)

    # -- consuming ---------------------------------------------------------------------------

    async def take(self, endpoint: str) -> Job:
        while True:
            message: AbstractIncomingMessage = await self._run(self._inboxes[endpoint].get)
            try:
                return Job(_decode(message.body), message)
            except (msgspec.ValidationError, msgspec.DecodeError) as exc:
                # Not a delivery we queued (someone published here): dropped, loudly.
                log.warning("dropped a message in %s that is not a delivery: %s",
                            self.queue(endpoint), exc)  # fmt: skip
                await self._run(message.reject)

    async def release(self, job: Job) -> None:
        message: AbstractIncomingMessage = job.handle
        try:
            await self._run(message.nack, True)  # requeue
        except aio_pika.exceptions.ChannelInvalidStateError:
            pass  # its channel died: the broker redelivers it anyway

    async def _ack(self, job: Job) -> None:
        message: AbstractIncomingMessage = job.handle
        try:
            await self._run(message.ack)
        except aio_pika.exceptions.ChannelInvalidStateError:
            pass  # its channel died: the broker redelivers it (at least once)

    async def delivered(self, job: Job) -> None:
        await self._ack(job)

    async def retry(self, job: Job, delay_s: float, error: str) -> None:
        item = msgspec.structs.replace(job.item, attempts=job.item.attempts + 1, last_error=error)
        ttl = max(delay_s, 0.001)
        await self._run(self._aio_publish, [(self.retry_queue(item.endpoint), _encode(item), ttl)])
        await self._ack(job)

    async def give_up(self, job: Job, error: str) -> None:
        item = msgspec.structs.replace(job.item, attempts=job.item.attempts + 1, last_error=error)
        await self._run(self._aio_publish, [(self.failed_queue, _encode(item), None)])
        await self._ack(job)

    # -- the failed queue ---------------------------------------------------------------------

    async def _aio_browse(self, limit: int, endpoint: str | None, move: bool) -> list[WebhookItem]:
        """Read up to ``limit`` failed deliveries; ``move``: publish them back and ack them.
        What is not acked goes back to the queue when the channel closes."""
        assert self._conn is not None
        channel = await self._conn.channel()
        out: list[WebhookItem] = []
        try:
            queue = await channel.declare_queue(self.failed_queue, durable=True)
            while len(out) < limit:
                message = await queue.get(no_ack=False, fail=False)
                if message is None:
                    break
                item = _decode(message.body)
                if endpoint is not None and item.endpoint != endpoint:
                    continue
                if move:
                    if item.endpoint not in self.endpoints:
                        continue  # no longer configured: left where it is
                    now = time.time()
                    fresh = msgspec.structs.replace(item, attempts=0, created_at=now)
                    await self._aio_publish([(self.queue(item.endpoint), _encode(fresh), None)])
                    await message.ack()
                out.append(item)
        finally:
            await channel.close()
        return out

    async def failed(self, limit: int = 100) -> list[WebhookItem]:
        result: list[WebhookItem] = await self._run(self._aio_browse, limit, None, False)
        return result

    async def replay(self, endpoint: str | None = None, limit: int | None = None) -> int:
        moved: list[WebhookItem] = await self._run(
            self._aio_browse, limit if limit is not None else 1_000_000, endpoint, True
        )
        return len(moved)

"""The RabbitMQ bus of the distributed profile: aio-pika behind the asyncio edge.

Topology (declared at :meth:`RabbitBus.open` by the service that owns it, see
``actors.bus.topology``; the dead-letter tools are in ``actors.bus.deadletters``):

* ``send_exchange`` (durable, direct) -> ``send_queue``, routing key = the queue name.
  Owned by email-server, with the retry delay queues ``<send_queue>.delay.<tier>``
  (``x-message-ttl`` = the tier; on expiry the broker dead-letters them into
  ``send_exchange`` with the send queue's routing key, so a delayed retry is as
  durable as any message and survives restarts of everything).
* ``status_exchange`` -> ``status_queue``, owned by integration.
* ``dead_letter_exchange`` (direct) -> ``dead_letter_queue``, bound once per work
  queue with the queue's name as routing key. Work queues dead-letter there
  (``x-dead-letter-exchange``/``-routing-key``), and :meth:`RabbitDelivery.reject`
  publishes there itself, with the reason in the ``x-reject-reason`` header.
* With ``config.quorum`` (and a broker >= 3.8) every queue is a quorum queue with
  at-least-once dead-lettering. Work queues get ``x-delivery-limit``, so a message
  that keeps killing its consumer is dead-lettered after ``max_deliveries``
  deliveries. Classic queues have no delivery limit.
* Publishers declare the exchanges they publish to (same arguments, idempotent), so
  start-up order does not matter for exchanges. A publish before the owner has
  declared and bound the queue is unroutable and raises :class:`BusError`.

Why it is built this way:

* Every aio-pika call runs on the asyncio side of ``runtime``'s edge, and every
  crossing has a cost (a task creation and a Trio reschedule; much more under
  trio-asyncio). So the Trio side crosses as little as it can. Publishes and
  settlements issued concurrently by several Trio tasks are combined: one task leads
  a batch through one :meth:`AsyncioEdge.run`, the others join the next batch
  (:class:`_Combiner`). The consumer callback (asyncio) appends deliveries to a plain
  deque that the Trio side pops without crossing at all; it crosses only to wait when
  the deque is empty. Everything runs in one thread under both edges, so the deque
  and the counters need no locks, and nothing on the Trio side calls asyncio code.
  A caller with a batch in hand (the status updater's acks, a sender's statuses)
  passes it whole: :meth:`RabbitBus.ack_many`, :meth:`RabbitBus.publish_status_many`.
* A batch's frames leave in one socket write (``actors.bus.wire``), and publishes
  go to aiormq's channel without aio-pika's per-message objects and without waiting
  for each to drain: a send per frame was a sixth of a service's CPU.
* Reconnection is our own loop, not ``connect_robust``: a robust connection does
  not replay publishes that failed with the connection (aio-pika's own docs), and a
  publish on it hangs until the reconnect (aio-pika #636). Here a publish waits for
  the link at most ``publish_timeout_s`` and then raises :class:`BusUnavailable`; a
  publish whose confirm was lost with the connection is sent again after the
  reconnect (so a consumer may see it twice; consumers dedup by eventId).
* A delivery belongs to the channel it came on. After a reconnect the broker
  redelivers everything that was unacked, so settling a delivery from an older
  channel is a silent no-op, and buffered deliveries of an old channel are dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Generic, TypeVar, cast

import aio_pika
import aiormq
import trio
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
)
from aiormq.abc import DeliveredMessage
from aiormq.exceptions import (
    AMQPChannelError,
    AuthenticationError,
    ChannelNotFoundEntity,
    DeliveryError,
    PublishError,
)

from actors.bus.deadletters import (
    ORIGIN_EXCHANGE_HEADER,
    ORIGIN_KEY_HEADER,
    ORIGIN_QUEUE_HEADER,
    REASON_HEADER,
    DeadLetter,
    DeadLetterTools,
)
from actors.bus.topology import (
    CLOSE_TIMEOUT_S,
    DEFAULT_DELAY_TIERS,
    ROLES,
    Role,
    Topology,
    close_quietly,
    delay_tier,
)
from actors.bus.wire import CoalescingTransportFactory, WireConnection
from actors.domain.edges import BusError, BusUnavailable, Delivery
from actors.domain.schema import EmailSendEvent, EmailStatusEvent, encode
from config import BusConfig
from runtime import AsyncioEdge, current_edge

__all__ = [
    "DEFAULT_DELAY_TIERS",
    "BusError",
    "BusUnavailable",
    "DeadLetter",
    "RabbitBus",
    "RabbitBusStatistics",
    "RabbitDelivery",
    "Role",
    "delay_tier",
]

log = logging.getLogger(__name__)

_MAX_REASON_CHARS = 2000
_FIRST_BACKOFF_S = 0.1


@dataclass(frozen=True, slots=True)
class RabbitBusStatistics:
    """A snapshot of one bus, for the console and tests.

    Attributes:
      connected: the link is up now.
      connects: successful connections since open (1 + reconnects).
      published: publishes confirmed by the broker (dead-lettering ones included).
      consumed: deliveries handed to callers.
      acked / requeued / rejected: settlements sent to the broker.
      multi_acks: acks sent as one frame for a run of deliveries (multiple=True).
      stale: settlements skipped because their channel is gone (redelivered instead).
      crossings: asyncio edge crossings made by this bus (publish and settle batches,
        consumer waits, control calls).
      frames_written / socket_writes: frame groups (a publish, an ack) handed to the
        connection's writer, and the socket writes that carried them (``actors.bus.wire``
        gathers a batch's frames into one write).
      buffered: deliveries received and not yet handed out, per queue.
    """

    connected: bool
    connects: int
    published: int
    consumed: int
    acked: int
    requeued: int
    rejected: int
    stale: int
    multi_acks: int
    crossings: int
    frames_written: int
    socket_writes: int
    buffered: Mapping[str, int]


# -- deliveries ----------------------------------------------------------------


class RabbitDelivery:
    """One message taken from a queue. Settle it exactly once.

    ``deliveries`` is which delivery of this message this is (1 for the first), from
    the quorum queue's ``x-delivery-count``; on a classic queue it is 1, or 2 when
    redelivered (the broker keeps no count there).
    """

    __slots__ = (
        "body",
        "redelivered",
        "deliveries",
        "message_id",
        "queue",
        "headers",
        "exchange",
        "routing_key",
        "_bus",
        "_channel",
        "_tag",
        "_settled",
    )

    def __init__(
        self,
        bus: RabbitBus,
        queue: str,
        channel: aiormq.abc.AbstractChannel,
        message: DeliveredMessage,
    ) -> None:
        props = message.header.properties
        headers: dict[str, Any] = dict(props.headers or {})
        redelivered = bool(message.redelivered)
        count = headers.get("x-delivery-count")
        self.body: bytes = message.body
        self.redelivered = redelivered
        self.deliveries = int(count) + 1 if isinstance(count, int) else (2 if redelivered else 1)
        self.message_id: str | None = props.message_id
        self.queue = queue
        self.headers = headers
        self.exchange: str = message.exchange or ""
        self.routing_key: str = message.routing_key or ""
        self._bus = bus
        self._channel = channel
        self._tag: int = message.delivery_tag or 0
        self._settled = False

    def __repr__(self) -> str:
        return (
            f"<RabbitDelivery {self.queue} id={self.message_id} "
            f"delivery={self.deliveries} settled={self._settled}>"
        )

    @property
    def stale(self) -> bool:
        """True when the channel it came on is gone: settling it does nothing,
        and the broker delivers the message again."""
        return self._channel is not self._bus._raw_sub or self._channel.is_closed

    def _settle(self) -> None:
        if self._settled:
            raise RuntimeError("delivery settled twice")
        self._settled = True

    # Settling is shielded from cancellation once it starts (it is short: an ack waits
    # for no reply; a reject's dead-letter publish is bounded by publish_timeout_s), so
    # a cancelled caller never leaves a delivery marked settled but still unacked,
    # holding a prefetch slot until the connection closes.

    async def ack(self) -> None:
        """The work is done: the broker forgets the message."""
        await trio.lowlevel.checkpoint_if_cancelled()
        self._settle()
        with trio.CancelScope(shield=True):
            await self._bus._settle(self, _ACK)

    async def requeue(self) -> None:
        """The work was not done: deliver it again (to this or another consumer).

        On a quorum queue this counts towards the delivery limit.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        self._settle()
        with trio.CancelScope(shield=True):
            await self._bus._settle(self, _REQUEUE)

    async def reject(self, reason: str) -> None:
        """Give up on it: to the dead-letter queue with *reason* (never requeued).

        The body goes to the dead-letter exchange with the reason in the
        ``x-reject-reason`` header (confirmed), then the original is acked. If that
        publish fails, the original is nacked without requeue instead, which
        dead-letters it through the queue's own arguments, without the reason.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        self._settle()
        with trio.CancelScope(shield=True):
            await self._bus._reject(self, reason)


# -- combining concurrent requests into edge crossings -------------------------

_ACK = 0
_REQUEUE = 1
_DEAD = 2  # nack without requeue: the queue dead-letters it


class _Op:
    """One request in a :class:`_Combiner` batch; the asyncio side calls finish()."""

    __slots__ = ("done", "error", "event", "taken", "promoted")

    def __init__(self) -> None:
        self.done = False
        self.error: BaseException | None = None
        self.event: trio.Event | None = None
        self.taken = False
        self.promoted = False

    def finish(self, error: BaseException | None = None) -> None:
        if not self.done:
            self.done = True
            self.error = error


class _PublishOp(_Op):
    __slots__ = ("exchange", "routing_key", "body", "message_id", "headers", "deadline")

    def __init__(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        message_id: str,
        headers: dict[str, Any] | None,
        deadline: float,
    ) -> None:
        super().__init__()
        self.exchange = exchange
        self.routing_key = routing_key
        self.body = body
        self.message_id = message_id
        self.headers = headers
        self.deadline = deadline  # time.monotonic()


class _SettleOp(_Op):
    __slots__ = ("delivery", "kind")

    def __init__(self, delivery: RabbitDelivery, kind: int) -> None:
        super().__init__()
        self.delivery = delivery
        self.kind = kind


OpT = TypeVar("OpT", bound=_Op)
T = TypeVar("T")


class _Combiner(Generic[OpT]):
    """Runs requests from concurrent Trio tasks in as few edge crossings as possible.

    Group commit: when no batch is in flight the caller leads, taking everything
    pending through one ``edge.run(run_batch, batch)``; callers arriving meanwhile
    queue up and the first of them leads the next batch. A lone caller pays one
    crossing, N concurrent callers pay about two. ``run_batch`` must finish every op
    and bound its own duration; the crossing is shielded so that a cancelled leader
    never aborts the others' requests.
    """

    def __init__(self, bus: RabbitBus, run_batch: Callable[[list[OpT]], Awaitable[None]]) -> None:
        self._bus = bus
        self._run_batch = run_batch
        self._pending: list[OpT] = []
        self._busy = False

    async def submit(self, op: OpT) -> None:
        """Run *op*; on return it is done (``op.error`` says how it went)."""
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._busy:
            op.event = trio.Event()
            self._pending.append(op)
            try:
                await op.event.wait()
            except BaseException:
                if not op.taken:
                    self._pending.remove(op)
                    if op.promoted:
                        self._hand_off()
                raise
            if not op.promoted:
                return
        else:
            self._busy = True
            self._pending.append(op)
        await self._lead(op)

    async def submit_many(self, ops: Sequence[OpT]) -> None:
        """Run *ops* together (one caller's batch: they always go in one crossing);
        on return each is done. One task and one wake-up for all of them."""
        await trio.lowlevel.checkpoint_if_cancelled()
        if not ops:
            return
        if self._busy:
            event = trio.Event()
            for o in ops:
                o.event = event
            self._pending.extend(ops)
            try:
                await event.wait()
            except BaseException:
                if not ops[0].taken:  # appended together, so taken together
                    promoted = any(o.promoted for o in ops)
                    self._pending = [o for o in self._pending if o.event is not event]
                    if promoted:
                        self._hand_off()
                raise
            if not any(o.promoted for o in ops):
                return
        else:
            self._busy = True
            self._pending.extend(ops)
        await self._lead(ops[0])

    async def _lead(self, op: OpT) -> None:
        batch, self._pending = self._pending, []
        for o in batch:
            o.taken = True
        try:
            with trio.CancelScope(shield=True):
                await self._bus._cross(self._run_batch, batch)
        finally:
            for o in batch:
                if not o.done:  # run_batch raised (a bug, or the edge closed under it)
                    o.finish(BusError("the bus operation was interrupted"))
                if o is not op and o.event is not None:
                    o.event.set()
            self._hand_off()

    def _hand_off(self) -> None:
        if self._pending:
            nxt = self._pending[0]
            nxt.promoted = True
            assert nxt.event is not None
            nxt.event.set()
        else:
            self._busy = False


class _Inbox:
    """Deliveries of one queue, appended by the consumer callback, popped by Trio."""

    __slots__ = ("queue", "items", "arrived", "wanted")

    def __init__(self, queue: str) -> None:
        self.queue = queue
        self.items: deque[RabbitDelivery] = deque()
        self.arrived: asyncio.Event | None = None  # created on the asyncio side
        self.wanted = False  # consume this queue on every (re)connect


# -- the bus -------------------------------------------------------------------


class RabbitBus:
    """Implements ``actors.domain.edges.Bus`` on RabbitMQ.

    Open it inside ``runtime.open_asyncio_edge()`` (the edge current at
    :meth:`open` carries every call until :meth:`close`). *role* says which part of
    the topology this process declares; see the module docstring. *url* defaults to
    ``config.resolved_url()``.
    """

    durable_delay = True

    def __init__(
        self,
        config: BusConfig,
        *,
        url: str | None = None,
        role: Role,
        delay_tiers: Sequence[float] = DEFAULT_DELAY_TIERS,
        connection_name: str | None = None,
    ) -> None:
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, got {role!r}")
        self.config = config
        self.role: Role = role
        self.topology = Topology(config, tuple(delay_tiers))  # checks the tiers
        self.delay_tiers = self.topology.delay_tiers
        self.connection_name = connection_name or (
            f"mailactors-{role}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        )
        self._url = url if url is not None else config.resolved_url()
        self._edge: AsyncioEdge | None = None
        self._closed = False
        # asyncio side (touched only in edge.run calls and asyncio callbacks)
        self._connection: AbstractConnection | None = None
        self._pub: AbstractChannel | None = None
        self._sub: AbstractChannel | None = None
        self._raw_sub: aiormq.abc.AbstractChannel | None = None
        self._raw_pub: aiormq.Channel | None = None  # aiormq's, under _pub
        # Delivery tags of _raw_sub not yet settled: an ack with multiple=True may
        # cover a run of them only if every lower one is being acked too.
        self._unsettled: set[int] = set()
        self._ready: asyncio.Event | None = None
        self._lost: asyncio.Future[BaseException | None] | None = None
        self._manager: asyncio.Task[None] | None = None
        self._quorum = False
        # both sides
        self._inboxes = {
            config.send_queue: _Inbox(config.send_queue),
            config.status_queue: _Inbox(config.status_queue),
        }
        self._publishes: _Combiner[_PublishOp] = _Combiner(self, self._aio_publish_batch)
        self._settles: _Combiner[_SettleOp] = _Combiner(self, self._aio_settle_batch)
        self._connects = 0
        self._published = 0
        self._consumed = 0
        self._acked = 0
        self._requeued = 0
        self._rejected = 0
        self._stale = 0
        self._multi_acks = 0
        self._crossings = 0
        self._wire: CoalescingTransportFactory | None = None  # the connection's
        self._frames_written = 0  # ... and the counts of the connections before it
        self._socket_writes = 0
        self._dead = DeadLetterTools(self.topology, self._aio_tool_channel)

    # -- names -------------------------------------------------------------------

    def delay_queue_name(self, tier: float) -> str:
        return self.topology.delay_queue_name(tier)

    def queue_names(self) -> list[str]:
        """Every queue of this topology (whoever owns it)."""
        return self.topology.queue_names()

    def statistics(self) -> RabbitBusStatistics:
        writer = self._wire.writer if self._wire is not None else None
        return RabbitBusStatistics(
            connected=self._ready is not None and self._ready.is_set() and not self._closed,
            connects=self._connects,
            published=self._published,
            consumed=self._consumed,
            acked=self._acked,
            requeued=self._requeued,
            rejected=self._rejected,
            stale=self._stale,
            multi_acks=self._multi_acks,
            crossings=self._crossings,
            frames_written=self._frames_written + (writer.writes if writer else 0),
            socket_writes=self._socket_writes + (writer.sends if writer else 0),
            buffered={name: len(inbox.items) for name, inbox in self._inboxes.items()},
        )

    # -- lifecycle (Trio side) -----------------------------------------------------

    async def open(self) -> None:
        """Connect, declare this role's topology; wait up to publish_timeout_s for the broker.

        Raises BusUnavailable when the broker cannot be reached in that time, and
        BusError at once for what retrying cannot fix (bad credentials, a queue that
        exists with other arguments, no permission).
        """
        if self._edge is not None:
            raise RuntimeError("RabbitBus.open() called twice")
        self._edge = current_edge()
        try:
            await self._cross(self._aio_open)
        except BaseException:
            self._edge = None
            raise

    async def close(self) -> None:
        """Close the connection. Unsettled deliveries go back to their queues."""
        if self._edge is None or self._closed:
            self._closed = True
            await trio.lowlevel.checkpoint()
            return
        self._closed = True
        with trio.CancelScope(shield=True):
            await self._cross(self._aio_close)

    async def _cross(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        edge = self._edge
        if edge is None:
            raise RuntimeError("the RabbitBus is not open: call open() first")
        self._crossings += 1
        return await edge.run(fn, *args)

    def _check_usable(self) -> None:
        if self._edge is None:
            raise RuntimeError("the RabbitBus is not open: call open() first")
        if self._closed:
            raise BusError("the RabbitBus is closed")

    # -- publishing (Trio side) ----------------------------------------------------

    async def publish_send(self, event: EmailSendEvent) -> None:
        """Returns once the broker confirmed the event; raises BusError / BusUnavailable."""
        c = self.config
        await self._publish(c.send_exchange, c.send_queue, encode(event), event.event_id)

    async def publish_status(self, event: EmailStatusEvent) -> None:
        c = self.config
        await self._publish(c.status_exchange, c.status_queue, encode(event), event.event_id)

    async def publish_status_many(
        self, events: Sequence[EmailStatusEvent]
    ) -> list[BusError | None]:
        """Publish several status events in one edge crossing; wait for every confirm.

        One outcome per event, in order: None when the broker confirmed it, else the
        BusError (BusUnavailable after publish_timeout_s) that ``publish_status`` would
        have raised for it. It never raises for one event's failure, so the caller
        acks exactly the deliveries whose status is on the bus. Events to one email
        keep their order only across calls: publish an email's next status after
        this returns (within one call they are in flight together).
        """
        self._check_usable()
        c = self.config
        deadline = time.monotonic() + c.publish_timeout_s
        ops = [
            _PublishOp(c.status_exchange, c.status_queue, encode(e), e.event_id, None, deadline)
            for e in events
        ]
        await self._publishes.submit_many(ops)
        return [_bus_error(op.error) for op in ops]

    async def publish_send_delayed(self, event: EmailSendEvent, delay_s: float) -> None:
        """Publish *event* to come back to the send queue after about *delay_s*.

        The wait is a delay queue tier (:func:`delay_tier`), so the delay is rounded
        down to a tier (or up to the smallest one); it survives broker and service
        restarts like any durable message.
        """
        queue = self.delay_queue_name(delay_tier(delay_s, self.delay_tiers))
        await self._publish("", queue, encode(event), event.event_id)

    async def publish_raw(self, queue: str, body: bytes) -> None:
        """Put arbitrary bytes on the send or status queue (tests of bad input)."""
        c = self.config
        exchange = {c.send_queue: c.send_exchange, c.status_queue: c.status_exchange}.get(queue)
        if exchange is None:
            raise ValueError(f"unknown queue {queue!r}")
        await self._publish(exchange, queue, body, uuid.uuid4().hex)

    async def _publish(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        message_id: str,
        headers: dict[str, Any] | None = None,
    ) -> None:
        self._check_usable()
        deadline = time.monotonic() + self.config.publish_timeout_s
        op = _PublishOp(exchange, routing_key, body, message_id, headers, deadline)
        await self._publishes.submit(op)
        if op.error is not None:
            raise op.error

    # -- consuming (Trio side) -----------------------------------------------------

    async def next_send(self) -> RabbitDelivery:
        """Wait for the next delivery from the send queue (email-server side)."""
        return await self._next(self._inboxes[self.config.send_queue])

    async def next_status(self) -> RabbitDelivery:
        """Wait for the next delivery from the status queue (integration side)."""
        return await self._next(self._inboxes[self.config.status_queue])

    async def next_send_many(self, limit: int) -> list[RabbitDelivery]:
        """The next send delivery and those already buffered behind it, at most
        *limit*; only the first may wait (see ``Bus.next_send_many``)."""
        return await self._next_many(self._inboxes[self.config.send_queue], limit)

    async def next_status_many(self, limit: int) -> list[RabbitDelivery]:
        """As :meth:`next_send_many`, from the status queue (integration side)."""
        return await self._next_many(self._inboxes[self.config.status_queue], limit)

    async def _next_many(self, inbox: _Inbox, limit: int) -> list[RabbitDelivery]:
        if limit < 1:
            raise ValueError(f"limit: must be at least 1, got {limit}")
        taken = [await self._next(inbox)]
        items = inbox.items
        while items and len(taken) < limit:  # no checkpoint: nothing can cancel a half batch
            delivery = items.popleft()
            if delivery.stale:
                self._stale += 1
                continue
            self._consumed += 1
            taken.append(delivery)
        return taken

    async def _next(self, inbox: _Inbox) -> RabbitDelivery:
        self._check_usable()
        await trio.lowlevel.checkpoint_if_cancelled()
        if not inbox.wanted:
            await self._cross(self._aio_start_consuming, inbox)
        items = inbox.items
        while True:
            while items:
                delivery = items.popleft()
                if delivery.stale:
                    self._stale += 1
                    continue
                self._consumed += 1
                await trio.lowlevel.cancel_shielded_checkpoint()
                return delivery
            await self._cross(self._aio_wait_for_delivery, inbox)

    # -- settling (Trio side) ------------------------------------------------------

    async def _settle(self, delivery: RabbitDelivery, kind: int) -> None:
        if delivery.stale:
            self._stale += 1
            await trio.lowlevel.checkpoint()
            return
        await self._settles.submit(_SettleOp(delivery, kind))

    async def ack_many(self, deliveries: Sequence[Delivery]) -> None:
        """Ack several deliveries of this bus at once: one edge crossing, and one
        ``basic_ack(multiple=True)`` frame for the run of the lowest unsettled tags
        among them (a batch acked in delivery order is one frame).

        The same as ``await d.ack()`` for each, without a Trio task or a wake-up per
        delivery. Each must be unsettled; a delivery given twice, or already settled,
        raises RuntimeError before anything is sent. Stale ones (their channel is
        gone) are skipped: the broker delivers them again. Shielded once started,
        like :meth:`RabbitDelivery.ack`.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        if len({id(d) for d in deliveries}) != len(deliveries):
            raise RuntimeError("ack_many: a delivery is given twice")
        mine: list[RabbitDelivery] = []
        for d in deliveries:
            if not isinstance(d, RabbitDelivery) or d._bus is not self:
                raise ValueError(f"ack_many: {d!r} was not taken from this bus")
            if d._settled:
                raise RuntimeError(f"ack_many: {d!r} is settled already")
            mine.append(d)
        ops = []
        for d in mine:
            d._settled = True
            if d.stale:
                self._stale += 1
            else:
                ops.append(_SettleOp(d, _ACK))
        with trio.CancelScope(shield=True):
            if ops:
                await self._settles.submit_many(ops)
            else:
                await trio.lowlevel.checkpoint()

    async def _reject(self, delivery: RabbitDelivery, reason: str) -> None:
        if delivery.stale:
            self._stale += 1
            await trio.lowlevel.checkpoint()
            return
        headers = {k: v for k, v in delivery.headers.items() if k != "x-delivery-count"}
        headers[REASON_HEADER] = reason[:_MAX_REASON_CHARS]
        headers[ORIGIN_QUEUE_HEADER] = delivery.queue
        headers[ORIGIN_EXCHANGE_HEADER] = delivery.exchange
        headers[ORIGIN_KEY_HEADER] = delivery.routing_key
        try:
            await self._publish(
                self.config.dead_letter_exchange,
                delivery.queue,
                delivery.body,
                delivery.message_id or uuid.uuid4().hex,
                headers,
            )
        except BusError as exc:
            log.warning(
                "could not publish a rejected message to the dead-letter exchange (%s); "
                "nacking it instead, which dead-letters it without the reason %r",
                exc,
                reason,
            )
            await self._settle(delivery, _DEAD)
            return
        self._rejected += 1
        await self._settle(delivery, _ACK)

    # -- tools (Trio side) ---------------------------------------------------------

    async def queue_depths(self) -> dict[str, int]:
        """Ready messages per queue of this topology (missing queues are left out)."""
        self._check_usable()
        return await self._cross(self._dead.queue_depths)

    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """Up to *limit* messages from the dead-letter queue, oldest first, left in place."""
        self._check_usable()
        return await self._cross(self._dead.dead_letters, limit)

    async def replay_dead_letters(self, n: int) -> int:
        """Send up to *n* dead letters back to the exchange they came from; return how many.

        Each is published (confirmed) before it is removed from the dead-letter queue;
        the dead-lettering headers are dropped, so it starts a fresh delivery count.
        """
        self._check_usable()
        return await self._cross(self._dead.replay, n)

    async def purge_dead_letters(self, n: int) -> int:
        """Delete up to *n* dead letters, oldest first; return how many (``dlq purge``)."""
        self._check_usable()
        return await self._cross(self._dead.purge, n)

    # == asyncio side =============================================================

    async def _aio_open(self) -> None:
        self._ready = asyncio.Event()
        for inbox in self._inboxes.values():
            inbox.arrived = asyncio.Event()
        deadline = time.monotonic() + self.config.publish_timeout_s
        backoff = _FIRST_BACKOFF_S
        while True:
            try:
                await self._aio_connect()
                break
            except BusError:
                raise
            except AuthenticationError as exc:
                raise BusError(f"RabbitMQ refused the credentials: {exc}") from exc
            except Exception as exc:
                if time.monotonic() + backoff > deadline:
                    raise BusUnavailable(
                        f"cannot reach RabbitMQ within {self.config.publish_timeout_s:g}s: {exc!r}"
                    ) from exc
                log.info("RabbitMQ not reachable yet (%r); retrying in %.1fs", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.config.reconnect_max_s)
        self._manager = asyncio.get_running_loop().create_task(self._aio_maintain())

    async def _aio_close(self) -> None:
        self._closed = True
        if self._ready is not None:
            self._ready.set()  # publishers waiting for the link see the bus closed
        for inbox in self._inboxes.values():
            inbox.items.clear()
            if inbox.arrived is not None:
                inbox.arrived.set()
        if self._manager is not None:
            self._manager.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._manager
        await self._aio_drop_connection()

    async def _aio_connect(self) -> None:
        """One connection attempt: connect, channels, topology, consumers. All or nothing."""
        connection = await aio_pika.connect(
            self._url,
            timeout=self.config.publish_timeout_s,
            client_properties={"connection_name": self.connection_name},
            connection_class=WireConnection,  # one socket write per batch (actors.bus.wire)
        )
        try:
            version = _server_version(connection)
            self._quorum = self.config.quorum and version >= (3, 8)
            pub = await connection.channel(publisher_confirms=True, on_return_raises=True)
            await self.topology.declare(pub, self.role, self._quorum)
            sub = await connection.channel(publisher_confirms=False)
            raw_sub = await sub.get_underlay_channel()
            # aiormq's Channel (its basic_publish takes wait=, which the ABC does not list)
            raw_pub = cast(aiormq.Channel, await pub.get_underlay_channel())
            # Current before consuming: the callback drops deliveries of other channels.
            self._raw_sub = raw_sub
            self._unsettled = set()  # tags are per channel
            for inbox in self._inboxes.values():
                if inbox.wanted:
                    await self._aio_consume(raw_sub, inbox)
        except BaseException:
            self._raw_sub = None
            with contextlib.suppress(Exception):
                await asyncio.wait_for(connection.close(), CLOSE_TIMEOUT_S)
            raise
        lost: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()

        def on_close(_sender: object, exc: BaseException | None = None, *_: object) -> None:
            if not lost.done():
                lost.set_result(exc)

        connection.close_callbacks.add(on_close)
        pub.close_callbacks.add(on_close)
        sub.close_callbacks.add(on_close)
        self._connection, self._pub, self._sub = connection, pub, sub
        self._wire = connection.wire if isinstance(connection, WireConnection) else None
        self._raw_pub = raw_pub
        self._lost = lost
        self._connects += 1
        assert self._ready is not None
        self._ready.set()
        if self._connects > 1:
            log.warning("reconnected to RabbitMQ (%s)", self.connection_name)

    async def _aio_consume(self, raw: aiormq.abc.AbstractChannel, inbox: _Inbox) -> None:
        # Per consumer (global=false applies to the consumers started after it): the
        # status updater acks whole stored batches, so its consumer may hold more.
        c = self.config
        prefetch = c.status_prefetch if inbox.queue == c.status_queue else c.prefetch
        await raw.basic_qos(prefetch_count=prefetch)
        await raw.basic_consume(inbox.queue, partial(self._aio_on_message, inbox, raw))

    async def _aio_on_message(
        self, inbox: _Inbox, raw: aiormq.abc.AbstractChannel, message: DeliveredMessage
    ) -> None:
        if raw is not self._raw_sub:
            return  # a late delivery on a channel being replaced: it will come again
        delivery = RabbitDelivery(self, inbox.queue, raw, message)
        self._unsettled.add(delivery._tag)
        inbox.items.append(delivery)
        if inbox.arrived is not None:
            inbox.arrived.set()

    async def _aio_start_consuming(self, inbox: _Inbox) -> None:
        if inbox.wanted:
            return
        if self._connection is not None:
            # Check on a throwaway channel: a consume on a missing queue would close the
            # consumer channel, and with it the link, for every other caller.
            channel = await self._aio_tool_channel()
            try:
                await channel.declare_queue(inbox.queue, passive=True)
            except ChannelNotFoundEntity as exc:
                raise BusError(
                    f"cannot consume from {inbox.queue!r}: no such queue (its owner, "
                    "email-server or integration, declares it when it opens)"
                ) from exc
            finally:
                await close_quietly(channel)
        inbox.wanted = True
        raw = self._raw_sub
        if raw is not None and not raw.is_closed:
            try:
                await self._aio_consume(raw, inbox)
            except BaseException:
                inbox.wanted = False
                raise
        # Not connected: the reconnect starts it.

    async def _aio_wait_for_delivery(self, inbox: _Inbox) -> None:
        arrived = inbox.arrived
        assert arrived is not None
        while not inbox.items:
            if self._closed:
                raise BusError("the RabbitBus is closed")
            arrived.clear()
            await arrived.wait()

    async def _aio_maintain(self) -> None:
        """Reconnect with exponential backoff whenever the link is lost, until close."""
        while not self._closed:
            assert self._lost is not None
            exc = await self._lost
            if self._closed:
                return
            log.warning("lost the RabbitMQ connection (%r); reconnecting", exc)
            await self._aio_drop_connection()
            backoff = _FIRST_BACKOFF_S
            while not self._closed:
                await asyncio.sleep(backoff * random.uniform(0.8, 1.2))
                try:
                    await self._aio_connect()
                    break
                except Exception as connect_exc:
                    log.warning(
                        "reconnecting to RabbitMQ failed (%r); next try in %.1fs",
                        connect_exc,
                        min(backoff * 2, self.config.reconnect_max_s),
                    )
                    backoff = min(backoff * 2, self.config.reconnect_max_s)

    async def _aio_drop_connection(self) -> None:
        """Forget the current link; deliveries from it become stale (the broker redelivers)."""
        if self._ready is not None and not self._closed:
            self._ready.clear()
        connection = self._connection
        self._connection = self._pub = self._sub = self._raw_sub = None
        if self._wire is not None and self._wire.writer is not None:
            self._frames_written += self._wire.writer.writes
            self._socket_writes += self._wire.writer.sends
        self._wire = None
        self._raw_pub = None
        for inbox in self._inboxes.values():
            inbox.items.clear()
        if connection is not None and not connection.is_closed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(connection.close(), CLOSE_TIMEOUT_S)

    async def _aio_publish_batch(self, ops: list[_PublishOp]) -> None:
        # aiormq matches a returned (unroutable) message to its publish by message_id,
        # so two publishes with one message_id must not be in flight together.
        rounds: list[list[_PublishOp]] = []
        seen: dict[str, int] = {}
        for op in ops:
            n = seen.get(op.message_id, 0)
            seen[op.message_id] = n + 1
            if n == len(rounds):
                rounds.append([])
            rounds[n].append(op)
        try:
            for round_ops in rounds:
                if len(round_ops) == 1:
                    await self._aio_publish_one(round_ops[0])
                else:
                    await asyncio.gather(*(self._aio_publish_one(op) for op in round_ops))
        finally:
            for op in ops:
                if not op.done:
                    op.finish(BusError("publish cancelled"))

    async def _aio_publish_one(self, op: _PublishOp) -> None:
        timeout = self.config.publish_timeout_s
        while True:
            if self._closed:
                op.finish(BusError("the RabbitBus is closed"))
                return
            remaining = op.deadline - time.monotonic()
            if remaining <= 0:
                op.finish(
                    BusUnavailable(
                        f"RabbitMQ did not take the message within {timeout:g}s "
                        f"(exchange {op.exchange!r}, routing key {op.routing_key!r})"
                    )
                )
                return
            pub = self._pub
            if pub is None:
                assert self._ready is not None
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._ready.wait(), remaining)
                continue
            raw = self._raw_pub
            assert raw is not None
            # aiormq's channel directly: aio-pika's Message and Exchange.publish cost
            # more than the frames themselves. wait=False: do not hold the channel's
            # publish lock until the writer has drained this one message, so a batch's
            # messages reach the writer together (one socket write for the batch,
            # actors.bus.wire). The confirm is still awaited: nothing changes for the
            # guarantee.
            properties = aiormq.spec.Basic.Properties(
                delivery_mode=2,
                content_type="application/json",
                message_id=op.message_id,
                headers=op.headers,
            )
            try:
                await raw.basic_publish(
                    op.body,
                    exchange=op.exchange,
                    routing_key=op.routing_key,
                    properties=properties,
                    mandatory=True,
                    timeout=remaining,
                    wait=False,
                )
            except PublishError as exc:
                op.finish(_unroutable(op, exc))
                return
            except DeliveryError as exc:
                error = BusError(
                    f"RabbitMQ refused the message (exchange {op.exchange!r}, routing key "
                    f"{op.routing_key!r}): {exc}"
                )
                error.__cause__ = exc
                op.finish(error)
                return
            except TimeoutError:
                continue  # the deadline check above reports it
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise
                # aiormq cancels pending confirms when the channel closes under them.
                await self._aio_wait_after_failure(pub)
            except AMQPChannelError as exc:
                error = BusError(
                    f"RabbitMQ closed the channel on a publish to {op.exchange!r}: {exc}"
                )
                error.__cause__ = exc
                op.finish(error)
                return
            except Exception as exc:
                if pub is self._pub and not pub.is_closed:
                    error = BusError(f"publish to {op.exchange!r} failed: {exc!r}")
                    error.__cause__ = exc
                    op.finish(error)
                    return
                log.info("publish interrupted by a lost connection (%r); retrying", exc)
                await self._aio_wait_after_failure(pub)
            else:
                self._published += 1
                op.finish()
                return

    async def _aio_wait_after_failure(self, pub: AbstractChannel) -> None:
        """The link broke under a publish: let the reconnect loop notice before retrying."""
        if pub is self._pub:
            await asyncio.sleep(0.05)

    async def _aio_settle_batch(self, ops: list[_SettleOp]) -> None:
        acks: list[_SettleOp] = []
        for op in ops:
            delivery = op.delivery
            channel = delivery._channel
            if delivery.stale:
                self._stale += 1
                op.finish()
                continue
            if op.kind == _ACK:
                acks.append(op)
                continue
            self._unsettled.discard(delivery._tag)
            try:
                if op.kind == _REQUEUE:
                    await channel.basic_nack(delivery._tag, requeue=True, wait=False)
                    self._requeued += 1
                else:
                    await channel.basic_nack(delivery._tag, requeue=False, wait=False)
                    self._rejected += 1
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # The channel went away under us: the broker redelivers the message.
                log.debug("settling %r failed (%r): it will be redelivered", delivery, exc)
                self._stale += 1
            op.finish()
        if acks:
            await self._aio_ack(acks)

    async def _aio_ack(self, acks: list[_SettleOp]) -> None:
        """Ack these deliveries (all of the current channel) in as few frames as possible.

        One ``basic_ack(multiple=True)`` covers the longest run of the lowest
        unsettled tags that are all being acked here (the status updater acks
        whole batches in delivery order); the rest go one frame each. Fewer
        frames: fewer writes here and less work for the broker.
        """
        channel = acks[0].delivery._channel
        tags = {op.delivery._tag for op in acks}
        upto = 0
        if len(tags) > 1:
            for tag in sorted(self._unsettled):
                if tag not in tags:
                    break
                upto = tag
        try:
            if upto:
                await channel.basic_ack(upto, multiple=True, wait=False)
            for tag in tags:
                if tag > upto:
                    await channel.basic_ack(tag, wait=False)
            self._acked += len(acks)
            self._multi_acks += upto > 0
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # The channel went away under us: the broker redelivers the messages.
            log.debug("acking %d deliveries failed (%r): they will be redelivered", len(acks), exc)
            self._stale += len(acks)
        self._unsettled -= tags
        for op in acks:
            op.finish()

    # -- tools (asyncio side) --------------------------------------------------

    async def _aio_tool_channel(self, confirms: bool = False) -> AbstractChannel:
        connection = self._connection
        if connection is None or connection.is_closed:
            raise BusUnavailable("not connected to RabbitMQ")
        if confirms:
            return await connection.channel(publisher_confirms=True, on_return_raises=True)
        return await connection.channel(publisher_confirms=False)


def _server_version(connection: AbstractConnection) -> tuple[int, ...]:
    try:
        transport: Any = connection.transport
        raw = transport.connection.server_properties.get("version", "0")
        text = raw.decode() if isinstance(raw, bytes) else str(raw)
        return tuple(int(part) for part in text.split(".")[:3] if part.isdigit())
    except (AttributeError, ValueError):
        return (0,)


def _bus_error(error: BaseException | None) -> BusError | None:
    if error is None or isinstance(error, BusError):
        return error
    wrapped = BusError(f"publish failed: {error!r}")  # run_batch finishes ops with BusErrors
    wrapped.__cause__ = error
    return wrapped


def _unroutable(op: _PublishOp, exc: PublishError) -> BusError:
    where = f"exchange {op.exchange!r}" if op.exchange else "the default exchange"
    error = BusError(
        f"unroutable message {op.message_id}: {where} has no queue bound for routing key "
        f"{op.routing_key!r} (is the consuming service's topology declared?)"
    )
    error.__cause__ = exc
    return error

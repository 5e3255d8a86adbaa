"""The RabbitMQ bus against a real broker.

Every test gets its own exchanges and queues (unique names, deleted afterwards),
so tests never see each other's messages and can run next to other users of the
broker. Under pytest the asyncio edge is trio-asyncio; the same workload under the
guest edge (``run_with_asyncio_host``) runs in a child process:
``python -m tests.bus.test_rabbitmq [--n 3000] [--edge guest|trio-asyncio|plain]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import msgspec
import pytest
import trio
import trio.lowlevel

from actors.bus import delete_topology
from actors.bus.rabbitmq import (
    BusError,
    BusUnavailable,
    RabbitBus,
    RabbitDelivery,
    Role,
    delay_tier,
)
from actors.domain.edges import Bus, Delivery
from actors.domain.schema import (
    EmailSendEvent,
    EmailStatusEvent,
    Status,
    send_event_decoder,
    status_event_decoder,
)
from config import BusConfig
from runtime import AsyncioEdge, open_asyncio_edge
from tests.support.protocols import assert_implements
from tests.support.rabbitmq import TIERS, make_config
from tests.support.services import local_broker_ctl
from tests.support.waiting import poll_until

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
async def config(rabbitmq_url: str, edge: AsyncioEdge) -> AsyncIterator[BusConfig]:
    cfg = make_config(rabbitmq_url)
    try:
        yield cfg
    finally:
        with trio.CancelScope(shield=True):
            await edge.run(delete_topology, cfg, url=rabbitmq_url, delay_tiers=TIERS)


@asynccontextmanager
async def opened(config: BusConfig, role: Role, **kwargs: Any) -> AsyncIterator[RabbitBus]:
    bus = RabbitBus(config, url=config.url, role=role, delay_tiers=TIERS, **kwargs)
    await bus.open()
    try:
        yield bus
    finally:
        with trio.CancelScope(shield=True):
            await bus.close()


def send_event(i: int = 0) -> EmailSendEvent:
    return EmailSendEvent(
        event_id=f"evt-{uuid.uuid4().hex}",
        recipient=f"user{i}@example.com",
        template="welcome",
        variables={"name": f"User {i}", "n": i},
    )


async def nothing_arrives(take: Callable[[], Awaitable[RabbitDelivery]], seconds: float) -> None:
    with trio.move_on_after(seconds):
        delivery = await take()
        raise AssertionError(f"unexpected delivery {delivery!r}: {delivery.body!r}")


# -- behaviour -------------------------------------------------------------------


@pytest.mark.services
async def test_round_trip_of_both_event_types(config: BusConfig) -> None:
    async with (
        opened(config, "email-server") as server,
        opened(config, "integration") as integration,
        opened(config, "auth") as auth,
    ):
        event = send_event()
        await auth.publish_send(event)
        with trio.fail_after(5):
            delivery = await server.next_send()
        assert send_event_decoder.decode(delivery.body) == event
        assert delivery.message_id == event.event_id
        assert delivery.redelivered is False
        assert delivery.deliveries == 1
        assert delivery.queue == config.send_queue
        await delivery.ack()

        status = EmailStatusEvent(event_id=event.event_id, status=Status.SENT, provider="smtp")
        await server.publish_status(status)
        with trio.fail_after(5):
            got = await integration.next_status()
        assert status_event_decoder.decode(got.body) == status
        await got.ack()
        with pytest.raises(RuntimeError, match="settled twice"):
            await got.ack()

        depths = await integration.queue_depths()
        assert depths[config.send_queue] == 0
        assert depths[config.status_queue] == 0
        assert depths[config.dead_letter_queue] == 0
        assert depths[server.delay_queue_name(1.0)] == 0
        stats = server.statistics()
        assert stats.connected and stats.acked == 1 and stats.published == 1
        # Both implement the edges' protocols (members, parameters, async-ness).
        assert_implements(server, Bus)
        assert_implements(got, Delivery)

    # Acked means gone: a fresh consumer gets nothing.
    async with opened(config, "email-server") as server, opened(config, "integration") as integ:
        await nothing_arrives(server.next_send, 0.5)
        await nothing_arrives(integ.next_status, 0.2)


@pytest.mark.services
async def test_queues_are_quorum_with_a_delivery_limit(
    config: BusConfig, rabbitmq_url: str
) -> None:
    # Ask the broker what was declared, not the code that builds the arguments.
    local_broker_ctl(rabbitmq_url, "rabbitmqctl list_queues")
    async with opened(config, "email-server"), opened(config, "integration"):
        listed = await rabbitmqctl(
            "list_queues", "name", "type", "durable", "arguments", "--formatter", "json"
        )
    queues = {q["name"]: q for q in json.loads(listed)}
    for work_queue in (config.send_queue, config.status_queue):
        q = queues[work_queue]
        assert q["type"] == "quorum" and q["durable"] is True, q
        args = {key: value for key, _amqp_type, value in q["arguments"]}  # [key, type, value]
        assert args["x-queue-type"] == "quorum"
        assert args["x-delivery-limit"] == config.max_deliveries - 1
        assert args["x-dead-letter-exchange"] == config.dead_letter_exchange
        assert args["x-dead-letter-routing-key"] == work_queue
    assert queues[config.dead_letter_queue]["durable"] is True


@pytest.mark.services
async def test_unroutable_publish_raises(config: BusConfig) -> None:
    # auth declares the exchange only; nobody has bound a queue to it yet.
    async with opened(config, "auth") as auth:
        assert await auth.queue_depths() == {}  # auth declares no queue
        with pytest.raises(BusError, match="unroutable") as info:
            await auth.publish_send(send_event())
        assert not isinstance(info.value, BusUnavailable)
        with pytest.raises(BusError, match="no such queue"):
            await auth.next_send()
        assert auth.statistics().connects == 1  # the link was not disturbed
        # The channel is still good afterwards.
        with pytest.raises(BusError, match="unroutable"):
            await auth.publish_send(send_event())
        async with opened(config, "email-server") as server:
            event = send_event()
            await auth.publish_send(event)
            with trio.fail_after(5):
                delivery = await server.next_send()
            assert delivery.message_id == event.event_id
            await delivery.ack()


@pytest.mark.services
async def test_concurrent_publishes_share_crossings(config: BusConfig) -> None:
    async with opened(config, "email-server") as server:
        events = [send_event(i) for i in range(200)]
        before = server.statistics().crossings
        async with trio.open_nursery() as nursery:
            for event in events:
                nursery.start_soon(server.publish_send, event)
        crossings = server.statistics().crossings - before
        assert crossings < len(events) / 2, crossings
        seen: list[str] = []
        with trio.fail_after(10):
            for _ in events:
                delivery = await server.next_send()
                seen.append(delivery.message_id or "")
                await delivery.ack()
        assert sorted(seen) == sorted(e.event_id for e in events)


@pytest.mark.services
async def test_cancelled_callers_never_wedge_the_bus(config: BusConfig) -> None:
    """Publishers and consumers cancelled at random points: the rest carry on, nothing is lost."""
    rng = random.Random(7)
    async with opened(config, "email-server") as server:
        done: list[str] = []

        async def publish(event: EmailSendEvent, cancel_after: float | None) -> None:
            with trio.CancelScope() as scope:
                if cancel_after is not None:
                    scope.deadline = trio.current_time() + cancel_after
                await server.publish_send(event)
                done.append(event.event_id)

        events = [send_event(i) for i in range(150)]
        async with trio.open_nursery() as nursery:
            for i, event in enumerate(events):
                cancel_after = rng.uniform(0, 0.01) if i % 3 == 0 else None
                nursery.start_soon(publish, event, cancel_after)
        assert {e.event_id for i, e in enumerate(events) if i % 3} <= set(done)

        # A consumer cancelled while it waits loses nothing.
        with trio.move_on_after(0.05):
            while True:
                d = await server.next_send()
                await d.ack()
        await server.publish_send(last := send_event())
        with trio.fail_after(5):
            while True:
                d = await server.next_send()
                await d.ack()
                if d.message_id == last.event_id:
                    break
        # And the bus still works for a lone publisher.
        with trio.fail_after(5):
            await server.publish_send(send_event())


@pytest.mark.services
async def test_reject_goes_to_the_dead_letter_queue_with_the_reason(config: BusConfig) -> None:
    async with opened(config, "email-server") as server:
        await server.publish_raw(config.send_queue, b"not json")
        with trio.fail_after(5):
            delivery = await server.next_send()
        await delivery.reject("undecodable EmailSendEvent: not json")

        letters = await server.dead_letters(10)
        assert [(d.queue, d.body, d.reason) for d in letters] == [
            (config.send_queue, b"not json", "undecodable EmailSendEvent: not json")
        ]
        assert len(await server.dead_letters(10)) == 1  # looking leaves it there
        assert (await server.queue_depths())[config.send_queue] == 0

        # Replay sends it back where it came from, as a fresh message.
        assert await server.replay_dead_letters(10) == 1
        with trio.fail_after(5):
            again = await server.next_send()
        assert again.body == b"not json"
        assert again.deliveries == 1
        assert "x-reject-reason" not in again.headers
        await again.ack()
        assert await server.dead_letters(10) == []


@pytest.mark.services
async def test_requeue_redelivers(config: BusConfig) -> None:
    async with opened(config, "email-server") as server:
        event = send_event()
        await server.publish_send(event)
        with trio.fail_after(5):
            first = await server.next_send()
        assert (first.redelivered, first.deliveries) == (False, 1)
        await first.requeue()
        with trio.fail_after(5):
            second = await server.next_send()
        assert second.message_id == event.event_id
        assert (second.redelivered, second.deliveries) == (True, 2)
        await second.ack()
        await nothing_arrives(server.next_send, 0.3)


@pytest.mark.services
async def test_delivery_limit_dead_letters_after_max_deliveries(config: BusConfig) -> None:
    assert config.max_deliveries == 3
    async with opened(config, "email-server") as server:
        event = send_event()
        await server.publish_send(event)
        for n in range(1, config.max_deliveries + 1):
            with trio.fail_after(5):
                delivery = await server.next_send()
            assert delivery.deliveries == n
            await delivery.requeue()  # as if the consumer crashed on it
        await nothing_arrives(server.next_send, 0.5)
        with trio.fail_after(5):
            while True:
                if letters := await server.dead_letters(10):
                    break
                await trio.sleep(0.05)
        [letter] = letters
        assert letter.queue == config.send_queue
        assert send_event_decoder.decode(letter.body) == event
        assert "delivery limit" in letter.reason


@pytest.mark.services
async def test_delayed_publish_arrives_after_the_delay(config: BusConfig) -> None:
    assert delay_tier(0.2, TIERS) == 1.0
    assert delay_tier(7, TIERS) == 5.0
    assert delay_tier(99999, TIERS) == 5.0
    async with opened(config, "email-server") as server:
        event = send_event()
        started = trio.current_time()
        await server.publish_send_delayed(event, 1.0)
        await nothing_arrives(server.next_send, 0.8)
        with trio.fail_after(5):
            delivery = await server.next_send()
        waited = trio.current_time() - started
        assert 0.8 <= waited < 4, waited
        assert send_event_decoder.decode(delivery.body) == event
        assert delivery.queue == config.send_queue
        await delivery.ack()


async def test_open_gives_up_when_the_broker_is_unreachable() -> None:
    cfg = make_config("amqp://guest:guest@127.0.0.1:1/", publish_timeout_s=0.5)
    async with open_asyncio_edge():
        bus = RabbitBus(cfg, role="auth")
        started = trio.current_time()
        with pytest.raises(BusUnavailable, match="cannot reach RabbitMQ"):
            await bus.open()
        assert trio.current_time() - started < 3


@pytest.mark.services
async def test_bus_refuses_work_after_close(config: BusConfig) -> None:
    async with opened(config, "email-server") as server:
        pass
    with pytest.raises(BusError, match="closed"):
        await server.publish_send(send_event())
    with pytest.raises(BusError, match="closed"):
        await server.next_send()


# -- connection loss ---------------------------------------------------------------


async def rabbitmqctl(*args: str) -> str:
    done = await trio.run_process(["rabbitmqctl", "-q", *args], capture_stdout=True)
    out: bytes = done.stdout
    return out.decode()


async def close_connections_named(name: str) -> int:
    """Close, from the broker side, every connection whose connection_name is *name*."""
    out = await rabbitmqctl("-s", "list_connections", "pid", "client_properties")
    closed = 0
    for line in out.splitlines():
        pid, _, props = line.partition("\t")
        if f'{{"connection_name","{name}"}}' in props:
            await rabbitmqctl("close_connection", pid, "test: connection drop")
            closed += 1
    return closed


async def wait_until(predicate: Callable[[], bool], interval: float = 0.01) -> None:
    while True:
        if predicate():
            return
        await trio.sleep(interval)


def status_event(i: int = 0) -> EmailStatusEvent:
    return EmailStatusEvent(
        event_id=f"evt-{i}-{uuid.uuid4().hex[:8]}", status=Status.SENT, attempt=1
    )


@pytest.mark.services
async def test_batches_cross_once_and_go_out_in_few_socket_writes(config: BusConfig) -> None:
    """publish_status_many: one crossing, every confirm awaited, a few socket writes for
    the batch; ack_many: one crossing and one multiple=True frame; nothing comes back."""
    events = [status_event(i) for i in range(40)]
    async with opened(config, "integration") as integration:
        before = integration.statistics()
        outcomes = await integration.publish_status_many(events)
        after = integration.statistics()
        assert outcomes == [None] * len(events)
        assert after.published - before.published == len(events)
        assert after.crossings - before.crossings == 1
        frames = after.frames_written - before.frames_written
        writes = after.socket_writes - before.socket_writes
        assert frames >= len(events)
        assert writes <= len(events) / 4, (frames, writes)
        with trio.fail_after(10):
            taken = [await integration.next_status() for _ in events]
        # One channel publishes in order, and a queue keeps it.
        assert [d.message_id for d in taken] == [e.event_id for e in events]
        before = integration.statistics()
        await integration.ack_many(taken)
        after = integration.statistics()
        assert after.acked - before.acked == len(events)
        assert after.crossings - before.crossings == 1
        assert after.multi_acks - before.multi_acks == 1
        with pytest.raises(RuntimeError, match="settled already"):
            await integration.ack_many(taken[:1])
        assert integration.statistics().acked == after.acked
    async with opened(config, "integration") as again:  # acked: none is delivered again
        assert (await again.queue_depths())[config.status_queue] == 0
        with trio.move_on_after(0.3):
            extra = await again.next_status()
            raise AssertionError(f"an acked status came back: {extra!r}")


@pytest.mark.services
async def test_each_queue_has_its_own_prefetch(rabbitmq_url: str, edge: AsyncioEdge) -> None:
    """The send consumer holds at most ``prefetch`` unacked deliveries, the status
    consumer ``status_prefetch`` (the status updater acks whole stored batches)."""
    cfg = make_config(rabbitmq_url, prefetch=3, status_prefetch=8)
    try:
        async with opened(cfg, "email-server") as server, opened(cfg, "integration") as integ:
            await integ.publish_status_many([status_event(i) for i in range(12)])
            for i in range(6):
                await server.publish_send(send_event(i))
            with trio.fail_after(10):
                statuses = [await integ.next_status() for _ in range(8)]
                sends = [await server.next_send() for _ in range(3)]
            # The rest wait in the broker (ready, not delivered): held back by the prefetch.
            depths = await integ.queue_depths()
            assert (depths[cfg.status_queue], depths[cfg.send_queue]) == (4, 3)
            await integ.ack_many(statuses)
            await server.ack_many(sends)
            with trio.fail_after(10):
                assert len([await integ.next_status() for _ in range(4)]) == 4
                assert len([await server.next_send() for _ in range(3)]) == 3
    finally:
        with trio.CancelScope(shield=True):
            await edge.run(delete_topology, cfg, url=rabbitmq_url, delay_tiers=TIERS)


@pytest.mark.services
async def test_next_many_takes_what_is_buffered_without_waiting_for_more(
    config: BusConfig,
) -> None:
    """The first delivery is waited for; the rest are what has arrived, at most limit."""
    async with opened(config, "email-server") as server:
        events = [send_event(i) for i in range(5)]
        for event in events:
            await server.publish_send(event)
        with trio.fail_after(10):
            first = await server.next_send_many(1)  # starts the consumer
        await poll_until(
            lambda: server.statistics().buffered[config.send_queue] == 4,
            timeout=10,
            what="the other four buffered",
        )
        second = await server.next_send_many(3)
        rest = await server.next_send_many(10)
        assert (len(first), len(second), len(rest)) == (1, 3, 1)
        taken = first + second + rest
        assert [d.message_id for d in taken] == [e.event_id for e in events]
        with pytest.raises(ValueError, match="limit"):
            await server.next_send_many(0)
        with trio.move_on_after(0.2) as waited:  # nothing buffered: it waits for the next
            await server.next_send_many(10)
        assert waited.cancelled_caught
        await server.ack_many(taken)


@pytest.mark.services
async def test_ack_many_refuses_before_sending_anything(config: BusConfig) -> None:
    """A delivery given twice, or one of another bus: an error, and none of the batch
    is acked (they stay unsettled and can still be acked)."""
    async with opened(config, "integration") as integration, opened(config, "integration") as other:
        assert await integration.publish_status_many([status_event(1), status_event(2)]) == [
            None,
            None,
        ]
        with trio.fail_after(10):
            a = await integration.next_status()
            b = await integration.next_status()
        with pytest.raises(RuntimeError, match="twice"):
            await integration.ack_many([a, b, a])
        with pytest.raises(ValueError, match="not taken from this bus"):
            await other.ack_many([b])
        assert integration.statistics().acked == 0
        await integration.ack_many([a, b])
        assert integration.statistics().acked == 2


@pytest.mark.services
async def test_publish_status_many_reports_each_failure_without_raising(
    config: BusConfig,
) -> None:
    """No status queue is bound (integration never declared it): each event's outcome is
    the BusError publish_status raises, and the call itself does not raise."""
    async with opened(config, "email-server") as server:
        outcomes = await server.publish_status_many([status_event(1), status_event(2)])
        assert len(outcomes) == 2
        for outcome in outcomes:
            assert isinstance(outcome, BusError), outcomes
            assert "unroutable" in str(outcome)
        assert await server.publish_status_many([]) == []


@pytest.mark.services
async def test_concurrent_acks_go_as_one_frame_but_never_cover_an_unsettled_delivery(
    config: BusConfig,
) -> None:
    """Acks of a run of deliveries share one multiple=True frame; one held back is
    not swept up by it: it is redelivered when its channel goes."""
    async with opened(config, "email-server") as server:
        events = [send_event(i) for i in range(12)]
        for event in events:
            await server.publish_send(event)
        with trio.fail_after(5):
            taken = [await server.next_send() for _ in events]
        held, run, later = taken[0], taken[1:6], taken[6:]
        # Acks from many tasks at once, as the status updater makes them.
        async with trio.open_nursery() as nursery:
            for delivery in later:
                nursery.start_soon(delivery.ack)
        async with trio.open_nursery() as nursery:
            for delivery in run:
                nursery.start_soon(delivery.ack)
        stats = server.statistics()
        assert stats.acked == 11
        assert stats.multi_acks == 0, (
            "held (the lowest tag) is unsettled: no run may start below it"
        )
        await held.ack()  # now held, and with it everything, can be covered
        more = [send_event(100 + i) for i in range(6)]
        for event in more:
            await server.publish_send(event)
        with trio.fail_after(5):
            batch = [await server.next_send() for _ in more]
        async with trio.open_nursery() as nursery:
            for delivery in batch:
                nursery.start_soon(delivery.ack)
        assert server.statistics().multi_acks >= 1
        # Hold one back again, ack those above it, and drop the connection.
        last = [send_event(200 + i) for i in range(4)]
        for event in last:
            await server.publish_send(event)
        with trio.fail_after(5):
            kept, *acked = [await server.next_send() for _ in last]
        async with trio.open_nursery() as nursery:
            for delivery in acked:
                nursery.start_soon(delivery.ack)
        assert await close_connections_named(server.connection_name) == 1
        with trio.fail_after(15):
            again = await server.next_send()
        assert again.message_id == kept.message_id and again.redelivered
        await again.ack()
        await nothing_arrives(server.next_send, 0.5)
        depths = await server.queue_depths()
        assert depths[config.send_queue] == 0


@pytest.mark.services
async def test_consumer_and_publisher_survive_a_connection_drop(config: BusConfig) -> None:
    """Drop the consumer's connection, then the publisher's, while messages flow.

    Every message published (confirmed) is consumed and acked for good: none is lost,
    and none is left unacked for the broker to redeliver later.
    """
    published: list[str] = []
    taken: Counter[str] = Counter()
    async with opened(config, "email-server") as server, opened(config, "auth") as auth:
        drops_done = trio.Event()

        async def publish() -> None:
            after_drops = 0
            while after_drops < 200:
                event = send_event(len(published))
                await auth.publish_send(event)
                published.append(event.event_id)
                if drops_done.is_set():
                    after_drops += 1
                await trio.sleep(0.002)

        async def consume() -> None:
            while True:
                delivery = await server.next_send()
                assert delivery.message_id is not None
                taken[delivery.message_id] += 1
                await trio.lowlevel.checkpoint()  # a little work
                await delivery.ack()

        async def drop() -> None:
            await wait_until(lambda: len(taken) >= 100)
            assert await close_connections_named(server.connection_name) == 1
            assert await close_connections_named(auth.connection_name) == 1
            drops_done.set()

        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(consume)
                nursery.start_soon(drop)
                await publish()
                await wait_until(lambda: not set(published) - set(taken), 0.05)
                # Let any redeliveries of stale deliveries come in, then stop.
                await trio.sleep(0.5)
                nursery.cancel_scope.cancel()

        assert server.statistics().connects == 2
        assert auth.statistics().connects == 2
    missing = set(published) - set(taken)
    assert not missing, f"{len(missing)} of {len(published)} messages lost"
    redelivered = sum(1 for c in taken.values() if c > 1)
    print(f"\n{len(published)} published, {redelivered} seen more than once")
    # Every message was acked for good: nothing is left for a fresh consumer.
    async with opened(config, "email-server") as server:
        await nothing_arrives(server.next_send, 1.0)
        depths = await server.queue_depths()
        assert depths[config.send_queue] == 0
        assert depths[config.dead_letter_queue] == 0


@pytest.mark.services
async def test_stale_settlements_are_no_ops(config: BusConfig) -> None:
    async with opened(config, "email-server") as server:
        await server.publish_send(send_event())
        with trio.fail_after(5):
            old = await server.next_send()
        assert await close_connections_named(server.connection_name) == 1
        with trio.fail_after(15):
            again = await server.next_send()  # redelivered on the new channel
        assert old.stale and not again.stale
        assert again.redelivered and again.message_id == old.message_id
        await old.ack()  # no-op, no error
        await again.ack()
        await nothing_arrives(server.next_send, 0.5)


@pytest.mark.services
async def test_publish_during_an_outage_waits_then_raises_bus_unavailable(
    config: BusConfig,
) -> None:
    cfg = msgspec.structs.replace(config, publish_timeout_s=1.0)
    async with opened(cfg, "email-server") as server:
        url = server._url
        server._url = "amqp://guest:guest@127.0.0.1:1/"  # every reconnect fails from now on
        assert await close_connections_named(server.connection_name) == 1
        with trio.fail_after(10):
            await wait_until(lambda: not server.statistics().connected)
        started = trio.current_time()
        with pytest.raises(BusUnavailable, match="within 1s"):
            await server.publish_send(send_event())
        assert 0.9 <= trio.current_time() - started < 3

        # The broker is back: a publish issued now waits for the reconnect and succeeds.
        cfg_back = msgspec.structs.replace(cfg, publish_timeout_s=10.0)
        server.config = cfg_back
        server._url = url
        event = send_event()
        with trio.fail_after(10):
            await server.publish_send(event)
            delivery = await server.next_send()
        assert delivery.message_id == event.event_id
        await delivery.ack()


@pytest.mark.slow
@pytest.mark.services
async def test_survives_a_broker_restart(config: BusConfig) -> None:
    """stop_app/start_app: durable quorum queues keep the messages; every bus reconnects.

    Deliveries in hand during the restart are acked afterwards (no-ops) and come again.
    """
    async with opened(config, "email-server") as server, opened(config, "auth") as auth:
        before = [send_event(i) for i in range(20)]
        for event in before:
            await auth.publish_send(event)
        with trio.fail_after(5):
            in_hand = [await server.next_send() for _ in range(5)]
        late = send_event(99)
        await rabbitmqctl("stop_app")
        started = False
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(auth.publish_send, late)  # waits for the broker
                await trio.sleep(1.0)
                await rabbitmqctl("start_app")
                started = True
        finally:
            if not started:
                await rabbitmqctl("start_app")
        for delivery in in_hand:
            await delivery.ack()  # stale: a no-op, the broker redelivers them
        seen: Counter[str] = Counter()
        with trio.fail_after(25):
            while len(seen) < len(before) + 1:
                delivery = await server.next_send()
                assert delivery.message_id is not None
                seen[delivery.message_id] += 1
                await delivery.ack()
        assert set(seen) == {e.event_id for e in [*before, late]}
        assert server.statistics().connects == 2 and auth.statistics().connects == 2
        await nothing_arrives(server.next_send, 0.5)


# -- throughput ------------------------------------------------------------------


async def measure(url: str, n: int, concurrency: int = 1, quorum: bool = True) -> dict[str, float]:
    """Publish n send events (confirmed) then consume+ack them; msgs/s for each phase.

    Runs inside an open asyncio edge; creates and deletes its own topology.
    """
    cfg = make_config(url, prefetch=100, quorum=quorum)
    bus = RabbitBus(cfg, role="email-server", delay_tiers=TIERS)
    events = [send_event(i) for i in range(n)]
    await bus.open()
    try:
        started = time.perf_counter()
        if concurrency == 1:
            for event in events:
                await bus.publish_send(event)
        else:
            chunks = [events[i::concurrency] for i in range(concurrency)]

            async def publish_all(chunk: list[EmailSendEvent]) -> None:
                for event in chunk:
                    await bus.publish_send(event)

            async with trio.open_nursery() as nursery:
                for chunk in chunks:
                    nursery.start_soon(publish_all, chunk)
        published = time.perf_counter()
        for _ in range(n):
            delivery = await bus.next_send()
            await delivery.ack()
        consumed = time.perf_counter()
        crossings = bus.statistics().crossings
    finally:
        await bus.close()
        from runtime import current_edge

        await current_edge().run(delete_topology, cfg, url=url, delay_tiers=TIERS)
    return {
        "publish": n / (published - started),
        "consume": n / (consumed - published),
        "crossings_per_msg": crossings / (2 * n),
    }


@pytest.mark.services
async def test_throughput_under_trio_asyncio(rabbitmq_url: str, edge: AsyncioEdge) -> None:
    n = 3000
    sequential = await measure(rabbitmq_url, n)
    concurrent = await measure(rabbitmq_url, n, concurrency=16)
    print(
        f"\nRabbitBus via {edge.name} edge, {n} msgs: "
        f"publish+confirm {sequential['publish']:.0f}/s sequential, "
        f"{concurrent['publish']:.0f}/s with 16 publishers; "
        f"consume+ack {sequential['consume']:.0f}/s "
        f"({sequential['crossings_per_msg']:.2f} crossings per message, sequential)"
    )
    assert sequential["publish"] > 100 and sequential["consume"] > 100


@pytest.mark.slow
@pytest.mark.services
def test_throughput_under_the_guest_edge(rabbitmq_url: str) -> None:
    result = run_child("guest", 3000, rabbitmq_url)
    print(f"\nRabbitBus via guest edge: {result}")
    assert result["publish"] > 100 and result["consume"] > 100


@pytest.mark.slow
@pytest.mark.services
def test_behaviour_under_the_guest_edge(rabbitmq_url: str) -> None:
    """The behaviour tests above, again, in a child process under run_with_asyncio_host."""
    result = run_child("guest", 0, rabbitmq_url, "--behaviour")
    assert result["edge"] == "guest"
    assert result["passed"] == [t.__name__ for t in BEHAVIOUR], result


async def run_behaviour(url: str) -> list[str]:
    """Run the BEHAVIOUR tests in the current edge; return the names that passed."""
    from runtime import current_edge

    passed = []
    for test in BEHAVIOUR:
        cfg = make_config(url)
        try:
            await test(cfg)
        finally:
            await current_edge().run(delete_topology, cfg, url=url, delay_tiers=TIERS)
        passed.append(test.__name__)
    return passed


async def plain_workload(url: str, n: int, quorum: bool = True) -> dict[str, float]:
    """The baseline: the same broker work as :func:`measure`, in plain asyncio aio-pika.

    Same topology (RabbitBus declares it), same messages, publish with confirms one
    at a time, then consume (prefetch 100) and ack one at a time.
    """
    import aio_pika

    from actors.domain.schema import encode

    cfg = make_config(url, prefetch=100, quorum=quorum)
    events = [send_event(i) for i in range(n)]
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        await channel.set_qos(prefetch_count=100)
        exchange = await channel.declare_exchange(cfg.send_exchange, "direct", durable=True)
        arguments: dict[str, Any] = {
            "x-dead-letter-exchange": cfg.dead_letter_exchange,
            "x-dead-letter-routing-key": cfg.send_queue,
        }
        if quorum:
            arguments["x-queue-type"] = "quorum"
        queue = await channel.declare_queue(cfg.send_queue, durable=True, arguments=arguments)
        await queue.bind(exchange, cfg.send_queue)
        started = time.perf_counter()
        for event in events:
            message = aio_pika.Message(
                encode(event),
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                content_type="application/json",
                message_id=event.event_id,
            )
            await exchange.publish(message, cfg.send_queue, mandatory=True)
        published = time.perf_counter()
        async with queue.iterator() as iterator:
            count = 0
            async for incoming in iterator:
                await incoming.ack()
                count += 1
                if count == n:
                    break
        consumed = time.perf_counter()
    finally:
        await delete_topology(cfg, url=url, delay_tiers=TIERS)
        await connection.close()
    return {"publish": n / (published - started), "consume": n / (consumed - published)}


def run_child(edge: str, n: int, url: str, *extra: str) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "tests.bus.test_rabbitmq", "--edge", edge, "--n", str(n)]
        + ["--url", url, *extra],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.bus.test_rabbitmq")
    parser.add_argument("--edge", choices=("guest", "trio-asyncio", "plain"), default="guest")
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--url", default="amqp://guest:guest@127.0.0.1:5672/")
    parser.add_argument("--classic", action="store_true", help="classic queues, not quorum")
    parser.add_argument("--behaviour", action="store_true", help="run the behaviour tests")
    args = parser.parse_args(argv)

    if args.edge == "plain":
        print(json.dumps(asyncio.run(plain_workload(args.url, args.n, not args.classic))))
        return

    async def run() -> dict[str, Any]:
        async with open_asyncio_edge() as edge:
            if args.behaviour:
                return {"edge": edge.name, "passed": await run_behaviour(args.url)}
            result: dict[str, Any] = dict(
                await measure(args.url, args.n, args.concurrency, not args.classic)
            )
            result["edge"] = edge.name
            return result

    if args.edge == "guest":
        from runtime import run_with_asyncio_host

        print(json.dumps(run_with_asyncio_host(run)))
    else:
        print(json.dumps(trio.run(run)))


BEHAVIOUR: list[Callable[[BusConfig], Awaitable[None]]] = [
    test_round_trip_of_both_event_types,
    test_unroutable_publish_raises,
    test_concurrent_publishes_share_crossings,
    test_cancelled_callers_never_wedge_the_bus,
    test_reject_goes_to_the_dead_letter_queue_with_the_reason,
    test_requeue_redelivers,
    test_delivery_limit_dead_letters_after_max_deliveries,
    test_delayed_publish_arrives_after_the_delay,
    test_consumer_and_publisher_survive_a_connection_drop,
    test_stale_settlements_are_no_ops,
    test_publish_during_an_outage_waits_then_raises_bus_unavailable,
]

if __name__ == "__main__":
    main()

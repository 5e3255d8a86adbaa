"""The in-process bus's batch calls behave as the RabbitMQ bus's (see test_rabbitmq)."""

from __future__ import annotations

import pytest

from actors.bus.memory import MemoryBus
from actors.domain.edges import Bus
from actors.domain.schema import EmailStatusEvent, Status, encode
from tests.support.protocols import assert_implements


def _status(i: int) -> EmailStatusEvent:
    return EmailStatusEvent(event_id=f"evt-{i}", status=Status.SENT, attempt=1)


async def test_publish_status_many_in_order_and_ack_many_settles_each_once() -> None:
    bus = MemoryBus(capacity=16)
    assert_implements(bus, Bus)
    events = [_status(i) for i in range(5)]
    assert await bus.publish_status_many(events) == [None] * 5
    taken = [await bus.next_status() for _ in events]
    assert [d.body for d in taken] == [encode(e) for e in events]
    with pytest.raises(RuntimeError, match="twice"):
        await bus.ack_many([taken[0], taken[0]])
    with pytest.raises(ValueError, match="not taken from this bus"):
        await MemoryBus().ack_many(taken[:1])
    await bus.ack_many(taken)
    with pytest.raises(RuntimeError, match="settled already"):
        await bus.ack_many(taken[-1:])
    with pytest.raises(RuntimeError, match="settled twice"):
        await taken[0].ack()


async def test_next_many_waits_for_one_and_takes_what_is_queued() -> None:
    bus = MemoryBus(capacity=16)
    events = [_status(i) for i in range(3)]
    await bus.publish_status_many(events)
    assert [d.body for d in await bus.next_status_many(2)] == [encode(e) for e in events[:2]]
    assert len(await bus.next_status_many(10)) == 1
    with pytest.raises(ValueError, match="limit"):
        await bus.next_send_many(0)

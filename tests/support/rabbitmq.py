"""RabbitMQ bus configs with unique names for tests.

``actors.bus.delete_topology`` removes them afterwards.
"""

from __future__ import annotations

import uuid
from typing import Any

from actors.bus.deadletters import REASON_HEADER
from config import BusConfig

TIERS = (1.0, 5.0)


def make_config(url: str, **overrides: Any) -> BusConfig:
    """A BusConfig whose every exchange and queue name is new."""
    p = f"test.bus.{uuid.uuid4().hex[:10]}"
    fields: dict[str, Any] = {
        "kind": "rabbitmq",
        "url": url,
        "send_exchange": f"{p}.send.exchange",
        "status_exchange": f"{p}.status.exchange",
        "send_queue": f"{p}.send",
        "status_queue": f"{p}.status",
        "dead_letter_exchange": f"{p}.dead.exchange",
        "dead_letter_queue": f"{p}.dead",
        "max_deliveries": 3,
        "reconnect_max_s": 2.0,
        "publish_timeout_s": 10.0,
    }
    fields.update(overrides)
    return BusConfig(**fields)


async def publish_dead_letters(url: str, config: BusConfig, count: int) -> None:
    """asyncio: ``count`` known dead letters, in order, as a consumer's reject leaves them."""
    import aio_pika

    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(config.dead_letter_exchange)
        for i in range(count):
            await exchange.publish(
                aio_pika.Message(
                    f'{{"eventId": "dl-{i:03d}"}}'.encode(),
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    headers={REASON_HEADER: f"reason {i}"},
                ),
                routing_key=config.send_queue,
            )
    finally:
        await connection.close()

"""RabbitMQ bus configs with unique names for tests, and their teardown."""

from __future__ import annotations

import uuid
from contextlib import suppress
from typing import Any

from actors.bus.rabbitmq import RabbitBus
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


async def delete_topology(url: str, config: BusConfig, tiers: tuple[float, ...]) -> None:
    """asyncio: delete every queue and exchange a test config names."""
    import aio_pika

    probe = RabbitBus(config, url=url, role="tool", delay_tiers=tiers)
    connection = await aio_pika.connect(url)
    try:
        for name in probe.queue_names():
            channel = await connection.channel()
            with suppress(Exception):
                await channel.queue_delete(name)
            with suppress(Exception):
                await channel.close()
        for name in (config.send_exchange, config.status_exchange, config.dead_letter_exchange):
            channel = await connection.channel()
            with suppress(Exception):
                await channel.exchange_delete(name)
            with suppress(Exception):
                await channel.close()
    finally:
        await connection.close()

"""RabbitMQ topology: the names of a bus's queues and exchanges, their declaration, their deletion.

What each role declares (see ``actors.bus.rabbitmq`` for why it is laid out this way):
``auth`` declares the send exchange; ``email-server`` the three exchanges, the send
queue, the dead-letter queue and the retry delay queues ``<send_queue>.delay.<tier>``;
``integration`` the three exchanges, the status queue and the dead-letter queue;
``tool`` nothing.

:func:`delete` is the one teardown of a topology (tests, the soak and the benchmarks
each make their own names and remove them after: quorum queues left behind hold file
handles in the broker and slow every later broker start).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import aio_pika
from aio_pika.abc import AbstractChannel
from aiormq.exceptions import ChannelAccessRefused, ChannelPreconditionFailed

from actors.domain.edges import BusError
from config import BusConfig

__all__ = ["DEFAULT_DELAY_TIERS", "ROLES", "Role", "Topology", "delay_tier", "delete"]

Role = Literal["auth", "email-server", "integration", "tool"]
ROLES: tuple[Role, ...] = ("auth", "email-server", "integration", "tool")

DEFAULT_DELAY_TIERS: tuple[float, ...] = (1.0, 5.0, 30.0, 120.0, 600.0, 3600.0)

CLOSE_TIMEOUT_S = 5.0


def delay_tier(delay_s: float, tiers: Sequence[float] = DEFAULT_DELAY_TIERS) -> float:
    """The tier a delayed retry waits in: the largest tier <= delay_s, else the smallest."""
    fitting = [t for t in tiers if t <= delay_s]
    return max(fitting) if fitting else min(tiers)


def _tier_label(tier: float) -> str:
    return f"{tier:g}s"


@dataclass(frozen=True, slots=True)
class Topology:
    """The queues and exchanges that one :class:`BusConfig` and its delay tiers name."""

    config: BusConfig
    delay_tiers: tuple[float, ...] = DEFAULT_DELAY_TIERS

    def __post_init__(self) -> None:
        if not self.delay_tiers or any(t <= 0 for t in self.delay_tiers):
            raise ValueError("delay_tiers must be positive and not empty")
        object.__setattr__(self, "delay_tiers", tuple(sorted(set(self.delay_tiers))))

    def delay_queue_name(self, tier: float) -> str:
        return f"{self.config.send_queue}.delay.{_tier_label(tier)}"

    def queue_names(self) -> list[str]:
        """Every queue of this topology (whoever owns it)."""
        c = self.config
        return [
            c.send_queue,
            c.status_queue,
            c.dead_letter_queue,
            *(self.delay_queue_name(t) for t in self.delay_tiers),
        ]

    def exchange_names(self) -> list[str]:
        c = self.config
        return [c.send_exchange, c.status_exchange, c.dead_letter_exchange]

    @staticmethod
    def queue_type_arguments(quorum: bool) -> dict[str, Any]:
        if not quorum:
            return {}
        return {
            "x-queue-type": "quorum",
            # At-least-once dead-lettering (3.10+) needs reject-publish overflow.
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
        }

    def work_queue_arguments(self, queue: str, quorum: bool) -> dict[str, Any]:
        arguments = {
            **self.queue_type_arguments(quorum),
            "x-dead-letter-exchange": self.config.dead_letter_exchange,
            "x-dead-letter-routing-key": queue,
        }
        if quorum:
            # The limit counts returns: N - 1 of them means N deliveries in all.
            arguments["x-delivery-limit"] = max(self.config.max_deliveries - 1, 0)
        return arguments

    async def declare(self, channel: AbstractChannel, role: Role, quorum: bool) -> None:
        """asyncio: declare what *role* owns (idempotent; raises BusError on a mismatch)."""
        c = self.config
        if role == "tool":
            return
        try:
            direct = aio_pika.ExchangeType.DIRECT
            exchanges = {
                "auth": [c.send_exchange],
                "email-server": [c.send_exchange, c.status_exchange, c.dead_letter_exchange],
                "integration": [c.status_exchange, c.send_exchange, c.dead_letter_exchange],
            }[role]
            declared = {
                name: await channel.declare_exchange(name, direct, durable=True)
                for name in exchanges
            }
            owned = {"email-server": c.send_queue, "integration": c.status_queue}.get(role)
            if owned is None:
                return
            source = c.send_exchange if owned == c.send_queue else c.status_exchange
            queue = await channel.declare_queue(
                owned, durable=True, arguments=self.work_queue_arguments(owned, quorum)
            )
            await queue.bind(declared[source], routing_key=owned)
            dlq = await channel.declare_queue(
                c.dead_letter_queue, durable=True, arguments=self.queue_type_arguments(quorum)
            )
            await dlq.bind(declared[c.dead_letter_exchange], routing_key=owned)
            if owned == c.send_queue:
                for tier in self.delay_tiers:
                    arguments = {
                        **self.queue_type_arguments(quorum),
                        "x-message-ttl": int(tier * 1000),
                        "x-dead-letter-exchange": c.send_exchange,
                        "x-dead-letter-routing-key": c.send_queue,
                    }
                    await channel.declare_queue(
                        self.delay_queue_name(tier), durable=True, arguments=arguments
                    )
        except ChannelPreconditionFailed as exc:
            raise BusError(
                f"RabbitMQ topology differs from the configuration ({exc}); an existing "
                "queue or exchange was declared with other arguments (quorum, delivery "
                "limit, dead-letter settings): delete or migrate it"
            ) from exc
        except ChannelAccessRefused as exc:
            raise BusError(f"RabbitMQ refused to declare the topology: {exc}") from exc


async def delete(
    config: BusConfig,
    *,
    url: str | None = None,
    delay_tiers: Sequence[float] = DEFAULT_DELAY_TIERS,
    timeout: float = 10.0,
) -> None:
    """asyncio: delete every queue and exchange that *config* names, those never declared too.

    *url* defaults to ``config.resolved_url()``. A name that is not there is skipped: a
    failed delete closes its channel (404), so each name gets a channel of its own.
    Blocking callers: ``asyncio.run(delete(...))`` in a thread.
    """
    topology = Topology(config, tuple(delay_tiers))
    connection = await aio_pika.connect(url or config.resolved_url(), timeout=timeout)
    try:
        for name in topology.queue_names():
            channel = await connection.channel()
            with contextlib.suppress(Exception):
                await channel.queue_delete(name)
            await close_quietly(channel)
        for name in topology.exchange_names():
            channel = await connection.channel()
            with contextlib.suppress(Exception):
                await channel.exchange_delete(name)
            await close_quietly(channel)
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(connection.close(), CLOSE_TIMEOUT_S)


async def close_quietly(channel: AbstractChannel) -> None:
    """Close *channel* if it is open, within CLOSE_TIMEOUT_S; a failure is not the caller's."""
    with contextlib.suppress(Exception):
        if not channel.is_closed:
            await asyncio.wait_for(channel.close(), CLOSE_TIMEOUT_S)

"""Layer 2, edge: the message bus between the services.

Implements ``actors.domain.edges.Bus``: in memory (embedded) or on RabbitMQ.

Modules:

* ``memory``       The in-process bus of the embedded profile: two bounded Trio channels.
* ``rabbitmq``     The RabbitMQ bus of the distributed profile: aio-pika behind the asyncio edge
                   (connect, publish, consume, settle).
* ``topology``     The RabbitMQ queue and exchange names, their declaration per role, the delay
                   tiers, and ``delete``: the one teardown of a bus's queues and exchanges.
* ``deadletters``  The RabbitMQ dead-letter queue: ``DeadLetter``, reading the reason and origin
                   back, and the tools that list, replay and count (one reader at a time).
* ``wire``         The AMQP connection's writer: the frames written in one loop turn go out in
                   one socket write (through aiormq's ``TransportFactory`` hook).

The public names below are imported on first use: the embedded profile uses ``memory``
alone and should not pay for importing aio-pika.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from actors.bus.deadletters import DeadLetter
    from actors.bus.memory import MemoryBus
    from actors.bus.rabbitmq import RabbitBus, RabbitDelivery
    from actors.bus.topology import DEFAULT_DELAY_TIERS, Role, Topology, delay_tier
    from actors.bus.topology import delete as delete_topology

__all__ = [
    "DEFAULT_DELAY_TIERS",
    "DeadLetter",
    "MemoryBus",
    "RabbitBus",
    "RabbitDelivery",
    "Role",
    "Topology",
    "delay_tier",
    "delete_topology",
]

_WHERE = {
    "DEFAULT_DELAY_TIERS": ("topology", "DEFAULT_DELAY_TIERS"),
    "DeadLetter": ("deadletters", "DeadLetter"),
    "MemoryBus": ("memory", "MemoryBus"),
    "RabbitBus": ("rabbitmq", "RabbitBus"),
    "RabbitDelivery": ("rabbitmq", "RabbitDelivery"),
    "Role": ("topology", "Role"),
    "Topology": ("topology", "Topology"),
    "delay_tier": ("topology", "delay_tier"),
    "delete_topology": ("topology", "delete"),
}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'actors.bus' has no attribute {name!r}")
    module, attribute = _WHERE[name]
    value = getattr(importlib.import_module(f"actors.bus.{module}"), attribute)
    globals()[name] = value  # once
    return value

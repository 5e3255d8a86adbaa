"""Layer 2, edge: the message bus between the services.

Implements ``actors.domain.edges.Bus``: in memory (embedded) or on RabbitMQ.

Modules:

* ``memory``     The in-process bus of the embedded profile: two bounded Trio channels.
* ``rabbitmq``   The RabbitMQ bus of the distributed profile: aio-pika behind the asyncio edge.
"""

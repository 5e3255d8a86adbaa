"""Webhooks in a process: the queue the profile uses, the listener and the dispatcher actor.

Both run where integration runs (the embedded process; the distributed integration
process): the listener is integration's call after each stored batch, the dispatcher
a child beside integration's tree.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from prometheus_client import CollectorRegistry

from actors.domain.edges import Store
from actors.webhooks.delivery import tls_context
from actors.webhooks.dispatcher import WebhookDispatcher, outcome_counter
from actors.webhooks.events import Routes, WebhookEvents
from actors.webhooks.outbox import SqliteOutbox, WebhookQueue
from config import Config
from runtime import ChildSpec

__all__ = ["Webhooks", "make_queue", "open_webhooks"]


class Webhooks:
    """What a profile wires: ``listener`` for integration, ``spec`` to spawn."""

    def __init__(self, listener: WebhookEvents, spec: ChildSpec, queue: WebhookQueue) -> None:
        self.listener = listener
        self.spec = spec
        self.queue = queue


def make_queue(config: Config, *, consume: bool = True) -> WebhookQueue:
    """The SQLite outbox (memory bus) or the RabbitMQ queues (rabbitmq bus).

    ``consume=False``: only publish and inspect (the CLI), never take deliveries.
    """
    w = config.webhooks
    if config.bus.kind == "memory":
        return SqliteOutbox(w.outbox_path, w.max_age_s)
    from actors.webhooks.rabbit import RabbitWebhookQueue

    return RabbitWebhookQueue(
        config.bus.resolved_url(),
        w.queue_prefix,
        {e.name: e.concurrency for e in w.endpoints},
        consume=consume,
        publish_timeout_s=config.bus.publish_timeout_s,
    )


@asynccontextmanager
async def open_webhooks(
    config: Config, store: Store, registry: CollectorRegistry | None = None
) -> AsyncIterator[Webhooks | None]:
    """The queue opened for the block; None when ``webhooks.enabled`` is off or has no endpoint."""
    w = config.webhooks
    if not (w.enabled and w.endpoints):
        yield None
        return
    routes = Routes(w.endpoints)  # unknown status names stop start-up here
    for endpoint in w.endpoints:
        endpoint.secret()  # a missing secret stops start-up, naming where it should be
    tls_context(w.ca_file)  # so does a CA file that cannot be loaded
    queue = make_queue(config)
    await queue.open()
    try:
        names = [e.name for e in w.endpoints]
        counter = outcome_counter(registry, names) if registry is not None else None
        spec = ChildSpec("webhooks", WebhookDispatcher, args=(w, queue, counter), shutdown=5.0)
        yield Webhooks(WebhookEvents(routes, store, queue), spec, queue)
    finally:
        await queue.close()

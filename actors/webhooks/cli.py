"""``supervisor.py webhooks list-failed | replay``: deliveries that were given up.

The embedded profile's are rows of the outbox file; the distributed profile's are in
the ``<prefix>.failed`` queue of RabbitMQ (listing leaves them there). Replay queues
them again as new deliveries (tries and age start over), with their webhook-ids, so a
receiver that got one after all drops the copy.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Awaitable, Callable

import trio

from actors.domain.edges import BusUnavailable
from actors.webhooks.outbox import WebhookQueue
from actors.webhooks.service import make_queue
from config import Config, load_config

__all__ = ["register"]


def _with_queue(config: Config, action: Callable[[WebhookQueue], Awaitable[int]]) -> int:
    async def go() -> int:
        queue = make_queue(config, consume=False)
        await queue.open()
        try:
            return await action(queue)
        finally:
            await queue.close()

    if config.bus.kind == "memory":
        return trio.run(go)
    from runtime import open_asyncio_edge

    async def bridged() -> int:
        async with open_asyncio_edge():
            return await go()

    try:
        return trio.run(bridged)
    except BusUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def list_failed(config: Config, limit: int) -> int:
    async def action(queue: WebhookQueue) -> int:
        items = await queue.failed(limit)
        for item in items:
            print(json.dumps({
                "webhookId": item.webhook_id, "endpoint": item.endpoint,
                "eventId": item.event_id, "sequence": item.sequence, "tries": item.attempts,
                "error": item.last_error, "body": json.loads(item.body),
            }))  # fmt: skip
        print(f"{len(items)} failed webhook deliveries shown", file=sys.stderr)
        return 0

    return _with_queue(config, action)


def replay(config: Config, endpoint: str | None, limit: int | None) -> int:
    names = [e.name for e in config.webhooks.endpoints]
    if endpoint is not None and endpoint not in names:
        print(f"--endpoint: no endpoint {endpoint!r}; configured: {names}", file=sys.stderr)
        return 2

    async def action(queue: WebhookQueue) -> int:
        n = await queue.replay(endpoint, limit)
        print(json.dumps({"replayed": n}))
        return 0

    return _with_queue(config, action)


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``webhooks list-failed | replay`` to supervisor.py's subcommands."""
    hooks = commands.add_parser("webhooks", help="webhook deliveries given up: list | replay")
    sub = hooks.add_subparsers(dest="webhooks_action", required=True)
    listing = sub.add_parser("list-failed", help="deliveries given up (JSON lines, left in place)")
    listing.add_argument("--limit", type=int, default=100, help="show at most N (default 100)")
    listing.set_defaults(handler=lambda a: list_failed(load_config(a.profile), a.limit))
    again = sub.add_parser("replay", help="queue given-up deliveries again")
    again.add_argument("--endpoint", default=None, help="only this endpoint's (default: all)")
    again.add_argument("--limit", type=int, default=None, help="at most N (default: all)")
    again.set_defaults(
        handler=lambda a: replay(load_config(a.profile), a.endpoint, a.limit)
    )

"""Webhooks in tests: the receivers (``actors.testing.webhooks``), config sections, a cluster
whose webhooks go to them, and gRPC calls to it."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio

from actors.testing.webhooks import Receiver, delete_webhook_queues, open_receiver
from actors.webhooks import Job, SqliteOutbox, WebhookDispatcher
from config import WebhooksConfig
from runtime import ChildSpec, open_actor_system

__all__ = [
    "Receiver",
    "WatchedOutbox",
    "dispatching",
    "bodies",
    "delete_webhook_queues",
    "email_status",
    "open_receiver",
    "request_email",
    "webhook_cluster",
    "webhook_env",
    "webhook_sections",
]


def bodies(receiver: Receiver) -> str:
    """For assertion messages."""
    return json.dumps(receiver.order, indent=1)[:2000]


def webhook_sections(
    tmp_path: Any, endpoints: list[dict[str, Any]], **settings: Any
) -> dict[str, Any]:
    """A ``[webhooks]`` section for these endpoints (each gets a secret file; fast retries)."""
    out = []
    for e in endpoints:
        secret_file = tmp_path / f"hook-{e['name']}.secret"
        secret_file.write_text(e.pop("secret") + "\n")
        out.append({"secret_file": str(secret_file), **e})
    return {
        "enabled": True,
        "allow_private": True,
        "outbox_path": str(tmp_path / "webhooks.sqlite3"),
        "base_delay_s": 0.05,
        "max_delay_s": 0.2,
        "breaker_failures": 3,
        "breaker_cool_down_s": 0.2,
        "endpoints": out,
        **settings,
    }


def webhook_env(prefix: str, endpoints: list[dict[str, Any]], secret: str) -> dict[str, str]:
    """Environment of a distributed cluster whose webhooks go to ``endpoints`` (secret in env)."""
    return {
        "HOOK_SECRET": secret,
        "MAILACTORS__WEBHOOKS__ENABLED": "true",
        "MAILACTORS__WEBHOOKS__ALLOW_PRIVATE": "true",
        "MAILACTORS__WEBHOOKS__QUEUE_PREFIX": prefix,
        "MAILACTORS__WEBHOOKS__BASE_DELAY_S": "0.1",
        "MAILACTORS__WEBHOOKS__MAX_DELAY_S": "0.5",
        "MAILACTORS__WEBHOOKS__BREAKER_COOL_DOWN_S": "0.3",
        "MAILACTORS__WEBHOOKS__ENDPOINTS": json.dumps(
            [{"secret_env": "HOOK_SECRET", **e} for e in endpoints]
        ),
        "MAILACTORS__EMAIL_SERVER__REPORT_SENDING": "true",
    }


async def request_email(edge: Any, port: int, to: str, category: str = "") -> str:
    """RequestEmail over gRPC to auth on ``port`` (through the asyncio edge): the eventId."""
    from grpclib.client import Channel

    from actors.grpc.convert import variables_to_struct
    from protos import email_grpc, email_pb2

    req = email_pb2.RequestEmailRequest(
        recipient=to,
        template="verification",
        variables=variables_to_struct({"name": "Ada", "code": "1", "expires_minutes": 5}),
        category=category,
    )

    async def go() -> Any:
        channel = Channel("127.0.0.1", port)
        try:
            return await email_grpc.AuthServiceStub(channel).RequestEmail(req, timeout=30)
        finally:
            channel.close()

    return str((await edge.run(go)).event_id)


async def email_status(edge: Any, port: int, event_id: str) -> str:
    """The email's status, by GetEmail over gRPC to integration on ``port``."""
    from grpclib.client import Channel

    from actors.grpc.convert import document_from_proto
    from protos import email_grpc, email_pb2

    async def go() -> Any:
        channel = Channel("127.0.0.1", port)
        try:
            return await email_grpc.IntegrationServiceStub(channel).GetEmail(
                email_pb2.GetEmailRequest(event_id=event_id), timeout=10
            )
        finally:
            channel.close()

    return str(document_from_proto((await edge.run(go)).document).status.value)


@asynccontextmanager
async def webhook_cluster(
    tmp_path: Any, es_url: str, amqp_url: str, edge: Any, endpoints: list[dict[str, Any]],
    secret: str, emails: int,
) -> AsyncIterator[tuple[Any, list[str]]]:  # fmt: skip
    """A distributed cluster whose webhooks go to ``endpoints``, after ``emails`` requests:
    (the cluster, their eventIds). Its webhook queues are deleted afterwards."""
    from tests.support.cluster import Cluster, cluster_env
    from tests.support.smtp_servers import CapturingServer

    prefix = f"test.hooks.{uuid.uuid4().hex[:8]}"
    try:
        with CapturingServer() as smtp:
            env = cluster_env(tmp_path, es_url, amqp_url, smtp.port)
            env |= webhook_env(prefix, endpoints, secret)
            log = tmp_path / "cluster.log"
            async with Cluster(env, workers=1, log=log).running() as cluster:
                ids = [await request_email(edge, cluster.auth_port, f"u{i}@example.com")
                       for i in range(emails)]  # fmt: skip
                yield cluster, ids
    finally:
        await delete_webhook_queues(edge, amqp_url, prefix, [e["name"] for e in endpoints])


class WatchedOutbox(SqliteOutbox):
    """The SQLite outbox, telling when deliveries are settled (events, not polling)."""

    def __init__(self, path: str, max_age_s: float = 86400.0) -> None:
        super().__init__(path, max_age_s)
        self.given_up = trio.Event()
        self.delivered_count = 0
        self._marks: dict[int, trio.Event] = {}

    async def delivered(self, job: Job) -> None:
        await super().delivered(job)
        self.delivered_count += 1
        for k in [k for k in self._marks if k <= self.delivered_count]:
            self._marks.pop(k).set()

    async def give_up(self, job: Job, error: str) -> None:
        await super().give_up(job, error)
        self.given_up.set()

    async def wait_delivered(self, n: int) -> None:
        if self.delivered_count < n:
            await self._marks.setdefault(n, trio.Event()).wait()


@asynccontextmanager
async def dispatching(settings: WebhooksConfig, outbox: SqliteOutbox) -> AsyncIterator[None]:
    """A WebhookDispatcher taking from ``outbox`` for the block, in its own actor system."""
    async with open_actor_system("t", shutdown=5.0) as system:
        await system.spawn(ChildSpec("webhooks", WebhookDispatcher, args=(settings, outbox)))
        yield

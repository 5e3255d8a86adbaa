"""Webhook receivers for tests: real HTTP servers (hypercorn on Trio) on loopback.

A :class:`Receiver` checks every request with the documented ``verify`` helper and
keeps what it accepted, deduplicated by webhook-id as a real receiver would. Its
``mode`` says how it answers: ``ok``, ``fail`` (500), ``slow`` (200 after ``delay``),
``hang`` (never), ``redirect`` (302), ``flood`` (500 with a body that never ends);
tests change it while it runs.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from actors.webhooks import WebhookVerificationError, verify

__all__ = ["Receiver", "open_receiver"]


class Receiver:
    def __init__(self, secret: str, mode: str = "ok", delay: float = 0.0) -> None:
        self.secret = secret
        self.mode = mode
        self.delay = delay
        self.url = ""
        self.requests = 0  # every request that reached the server
        self.bad = 0  # requests whose signature or timestamp did not verify
        self.accepted: dict[str, dict[str, Any]] = {}  # webhook-id -> body (the dedupe)
        self.order: list[dict[str, Any]] = []  # first copies, in the order they came
        self.repeats = 0  # copies of a webhook-id already accepted
        self.arrived_at: dict[str, float] = {}  # webhook-id -> trio.current_time()
        self.changed = trio.Event()

    def events_for(self, event_id: str) -> list[dict[str, Any]]:
        return [body for body in self.order if body["eventId"] == event_id]

    async def wait_for(self, n: int) -> None:
        while len(self.accepted) < n:
            self.changed = trio.Event()
            await self.changed.wait()

    async def wait_requests(self, n: int) -> None:
        """Until ``n`` requests have come in, answered or not (held ones too)."""
        while self.requests < n:
            self.changed = trio.Event()
            await self.changed.wait()

    async def handle(self, request: Request) -> Response:
        self.requests += 1
        self.changed.set()
        body = await request.body()
        try:
            payload = verify(self.secret, dict(request.headers), body)
        except WebhookVerificationError as exc:
            self.bad += 1
            return PlainTextResponse(str(exc), status_code=400)
        if self.mode == "fail":
            return PlainTextResponse("down for maintenance", status_code=500)
        if self.mode == "hang":
            await trio.sleep_forever()
        if self.mode == "flood":  # an answer that never ends
            return StreamingResponse(_endless(), status_code=500)
        if self.mode == "redirect":
            return RedirectResponse("http://127.0.0.1:9/elsewhere", status_code=302)
        if self.mode == "slow":
            await trio.sleep(self.delay)
        msg_id = request.headers["webhook-id"]
        if msg_id in self.accepted:
            self.repeats += 1
        else:
            self.accepted[msg_id] = payload
            self.order.append(payload)
            self.arrived_at[msg_id] = trio.current_time()
        self.changed.set()
        return PlainTextResponse("ok")


async def _endless() -> AsyncIterator[bytes]:
    chunk = b"x" * 65536
    while True:
        yield chunk
        await trio.lowlevel.checkpoint()


@asynccontextmanager
async def open_receiver(
    secret: str, mode: str = "ok", delay: float = 0.0
) -> AsyncIterator[Receiver]:
    receiver = Receiver(secret, mode, delay)
    app = Starlette(routes=[Route("/hook", receiver.handle, methods=["POST"])])
    cfg = HypercornConfig()
    cfg.bind = ["127.0.0.1:0"]
    cfg.accesslog = None
    cfg.graceful_timeout = 0.1
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        bound = await nursery.start(
            lambda task_status: serve(app, cfg, shutdown_trigger=stop.wait, task_status=task_status)  # type: ignore[arg-type]
        )
        receiver.url = f"{bound[0]}/hook"
        try:
            yield receiver
        finally:
            stop.set()
            nursery.cancel_scope.deadline = trio.current_time() + 2.0


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


async def delete_webhook_queues(edge: Any, url: str, prefix: str, endpoints: list[str]) -> None:
    """Delete the RabbitMQ queues a distributed test's webhooks declared (``queue_prefix``)."""
    import aio_pika

    names = [f"{prefix}.failed"] + [f"{prefix}.{e}{s}" for e in endpoints for s in ("", ".retry")]

    async def delete() -> None:
        connection = await aio_pika.connect(url)
        try:
            channel = await connection.channel()
            for name in names:
                await channel.queue_delete(name)
        finally:
            await connection.close()

    await edge.run(delete)


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

"""A webhook receiver for tests and the soak: a real HTTP server (hypercorn on Trio) on loopback.

A :class:`Receiver` checks every request with the documented ``verify`` helper and
keeps what it accepted, deduplicated by webhook-id as a real receiver would. Its
``mode`` says how it answers: ``ok``, ``fail`` (500), ``slow`` (200 after ``delay``),
``hang`` (never), ``redirect`` (302), ``flood`` (500 with a body that never ends);
tests change it while it runs. ``fail_rate`` fails that share of requests at random
(the soak's 10%).
"""

from __future__ import annotations

import random
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

__all__ = ["Receiver", "delete_webhook_queues", "open_receiver"]


class Receiver:
    """One receiver: its URL, what it saw and accepted; ``mode`` may change while it runs."""

    def __init__(
        self, secret: str, mode: str = "ok", delay: float = 0.0, fail_rate: float = 0.0,
        seed: int = 0,
    ) -> None:  # fmt: skip
        self.secret = secret
        self.mode = mode
        self.delay = delay
        self.fail_rate = fail_rate  # this share of requests is answered 500 at random
        self.failed_on_purpose = 0
        self._rng = random.Random(seed)
        self.url = ""
        self.requests = 0  # every request that reached the server
        self.peers: set[tuple[str, int]] = set()  # client (address, port): one per TCP connection
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
        if request.client is not None:
            self.peers.add((request.client.host, request.client.port))
        self.changed.set()
        body = await request.body()
        try:
            payload = verify(self.secret, dict(request.headers), body)
        except WebhookVerificationError as exc:
            self.bad += 1
            return PlainTextResponse(str(exc), status_code=400)
        if self.mode == "fail" or (self.fail_rate and self._rng.random() < self.fail_rate):
            self.failed_on_purpose += 1
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
    secret: str, mode: str = "ok", delay: float = 0.0, fail_rate: float = 0.0, seed: int = 0,
    *, certfile: str = "", keyfile: str = "", host: str = "127.0.0.1",
) -> AsyncIterator[Receiver]:  # fmt: skip
    """A receiver on a free port of ``host`` for the block (``receiver.url``); HTTPS when
    given a certificate and its key."""
    receiver = Receiver(secret, mode, delay, fail_rate, seed)
    app = Starlette(routes=[Route("/hook", receiver.handle, methods=["POST"])])
    cfg = HypercornConfig()
    cfg.bind = [f"[{host}]:0" if ":" in host else f"{host}:0"]
    if certfile:
        cfg.certfile, cfg.keyfile = certfile, keyfile
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

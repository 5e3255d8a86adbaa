"""The HttpServer actor: hypercorn on Trio, one Starlette app, bounded request bodies.

Why hypercorn's Trio worker: it runs inside the actor system's Trio run (no
thread, no asyncio loop), reports the addresses it bound through
``task_status.started()`` and shuts down gracefully when its trigger fires, so it
is an actor like the gRPC server: started in order, stopped in reverse.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from config import HttpConfig
from runtime import Actor

log = logging.getLogger("mailactors.http")

__all__ = ["HttpServer", "RouteFactory", "health_routes", "public_url"]

RouteFactory = Callable[[Actor[Any]], Sequence[BaseRoute]]
"""Builds a package's routes once the server actor runs (refs are looked up by path)."""

DRAIN_BYTES = 64 * 1024  # read past the limit, so that the client gets its 413
GRACE_S = 3.0  # requests in flight get this long to finish when the server stops


def public_url(http: HttpConfig, bound: str | None = None) -> str:
    """The base URL others reach the endpoint at: ``public_url``, else the bound address."""
    if http.public_url:
        return http.public_url.rstrip("/")
    if bound:
        return bound.rstrip("/")
    scheme = "https" if http.tls else "http"
    host = f"[{http.host}]" if ":" in http.host else http.host
    return f"{scheme}://{host}:{http.port}"


class BodyLimit:
    """Refuses a request body over ``limit`` bytes with 413, before the app reads it.

    A declared Content-Length over the limit is refused without passing the body
    to the app; a chunked body is counted as it streams and answered 413 once it
    passes the limit (whatever the app would have answered instead is dropped).
    Up to ``DRAIN_BYTES`` of the rest is read and discarded first: a server that
    closes with the client's bytes unread makes the kernel reset the connection,
    and the client then loses the 413 it was sent. Past that, the reset is cheaper.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await _plain(send, 400, "bad Content-Length")
                    return
                if declared > self.limit:
                    if declared - self.limit <= DRAIN_BYTES:
                        await _drain(receive, DRAIN_BYTES + self.limit)
                    await _plain(send, 413, f"request body over {self.limit} bytes")
                    return
        seen = 0
        refused = False

        async def counted() -> Message:
            nonlocal seen, refused
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    refused = True
                    raise _TooLarge
            return message

        async def guarded(message: Message) -> None:
            if not refused:  # Starlette's own 500 for _TooLarge is dropped: 413 goes instead
                await send(message)

        try:
            await self.app(scope, counted, guarded)
        except _TooLarge:
            await _drain(receive, DRAIN_BYTES)
            await _plain(send, 413, f"request body over {self.limit} bytes")


class _TooLarge(Exception):
    pass


async def _drain(receive: Receive, budget: int) -> None:
    """Read and drop the request body, up to ``budget`` bytes."""
    while budget > 0:
        message = await receive()
        if message["type"] != "http.request":
            return
        budget -= len(message.get("body", b""))
        if not message.get("more_body", False):
            return


async def _plain(send: Send, status: int, text: str) -> None:
    body = text.encode()
    headers = [(b"content-type", b"text/plain; charset=utf-8"),
               (b"content-length", str(len(body)).encode())]  # fmt: skip
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def health_routes(actor: Actor[Any]) -> Sequence[BaseRoute]:
    """``GET /healthz``: 200 while the process's actor system runs (for load balancers)."""

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok", "system": actor.ctx.path.split("/")[0]})

    return [Route("/healthz", healthz, methods=["GET"])]


class HttpServer(Actor[Any]):
    """Serves the routes that ``factories`` give, on ``[http]``'s host and port, while it runs."""

    accepts: ClassVar[tuple[type, ...]] = ()

    def __init__(self, http: HttpConfig, factories: Sequence[RouteFactory]) -> None:
        self.http = http
        self.factories = tuple(factories)
        self.bound: list[str] = []

    async def started(self) -> None:
        routes = [route for make in self.factories for route in make(self)]
        app = BodyLimit(Starlette(routes=routes), self.http.max_body_bytes)
        cfg = HypercornConfig()
        cfg.bind = [f"[{self.http.host}]:{self.http.port}" if ":" in self.http.host
                    else f"{self.http.host}:{self.http.port}"]  # fmt: skip
        if self.http.tls:
            cfg.certfile, cfg.keyfile = self.http.tls_cert_file, self.http.tls_key_file
        cfg.accesslog = None  # the apps log what matters; one line per request is noise
        cfg.errorlog = log
        cfg.graceful_timeout = GRACE_S
        self._stop = trio.Event()
        self._done = trio.Event()
        bound = await self.ctx.start(self._serve, app, cfg)
        self.bound = list(bound) if isinstance(bound, list) else []
        self.url = public_url(self.http, self.bound[0] if self.bound else None)
        log.info("HTTP listening on %s (%s)", ", ".join(self.bound), self.url)
        self.ctx.report(lambda: {"listening": list(self.bound), "url": self.url})

    async def _serve(
        self, app: ASGIApp, cfg: HypercornConfig, task_status: trio.TaskStatus[list[str]]
    ) -> None:
        try:
            await serve(app, cfg, shutdown_trigger=self._stop.wait, task_status=task_status)  # type: ignore[arg-type]
        except* OSError as group:  # hypercorn raises it from a nursery: in a group
            exc: BaseException = group
            while isinstance(exc, BaseExceptionGroup):
                exc = exc.exceptions[0]
            if self.bound or not isinstance(exc, OSError) or exc.errno is None:
                raise
            # hypercorn's bind error names no address: name it, as the other edges do.
            raise OSError(
                exc.errno, f"error while attempting to bind on address "
                f"('{self.http.host}', {self.http.port}): {exc.strerror}",
            ) from exc
        finally:
            self._done.set()

    async def stopping(self) -> None:
        # Graceful first (requests in flight finish), then the actor's scope cancels the rest.
        self._stop.set()
        with trio.move_on_after(GRACE_S + 1.0):
            await self._done.wait()

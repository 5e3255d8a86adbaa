"""One service per OS process: the distributed profile.

``run_service("integration" | "email-server" | "auth", config)`` runs that
service's tree with the edges its profile names, until SIGINT/SIGTERM. When
it is ready it prints ``MAILACTORS_READY <service>`` on stdout, which is what
``supervisor.py up`` waits for before starting the next service.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from ssl import SSLContext
from typing import Any

import trio
from grpclib import GRPCError
from grpclib import Status as GrpcStatus
from grpclib.client import Channel

from config import Config
from protos import email_grpc, email_pb2
from runtime import ActorSystem, ChildSpec, SupervisorSpec, open_actor_system, serve_until_stopped
from runtime._aio import AsyncioEdge, current_edge, open_asyncio_edge

from .auth import auth_tree
from .edges import Bus, SaveResult, StoreUnavailable
from .email_server import email_server_tree
from .grpc_api import AuthService, GrpcServer, IntegrationService
from .grpc_security import bearer_metadata, client_ssl_context, server_ssl_context
from .idempotency import SentLog
from .integration import IntegrationApi, TerminalWatch, integration_tree
from .metrics import EmailMetrics, instrument
from .operations import open_operations, worker_index
from .proto_convert import document_from_proto, document_to_proto
from .safeguards import open_send_guards, throttle_options
from .schema import EmailDocument
from .sweeper import sweeper_settings
from .templates import TemplateRenderer
from .wiring import make_provider, make_store, sender_settings

log = logging.getLogger("mailactors.services")

SERVICES = ("integration", "email-server", "auth")
READY = "MAILACTORS_READY"


def make_bus(config: Config, role: str) -> Bus:
    if config.bus.kind == "memory":
        from .bus_memory import MemoryBus

        return MemoryBus(config.bus.memory_capacity)
    from .bus_rabbitmq import RabbitBus

    return RabbitBus(config.bus, role=role, connection_name=f"mailactors-{role}")  # type: ignore[arg-type]


class GrpcIntegrationClient:
    """auth's way to integration over gRPC: deadlines, retries on UNAVAILABLE."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        token: str | None,
        deadline: float,
        retries: int,
        ssl: SSLContext | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.ssl = ssl  # grpc_security.client_ssl_context(config.grpc): TLS when set
        self.metadata = bearer_metadata(token)
        self.deadline = deadline
        self.retries = retries
        self.channel: Channel | None = None
        self.edge: AsyncioEdge | None = None

    async def open(self) -> None:
        self.edge = current_edge()

        async def make() -> Channel:
            return Channel(self.host, self.port, ssl=self.ssl)

        self.channel = await self.edge.run(make)

    async def close(self) -> None:
        if self.channel is not None and self.edge is not None:
            channel = self.channel

            async def close() -> None:
                channel.close()

            await self.edge.run(close)

    async def _save_once(self, request: Any) -> Any:
        assert self.channel is not None
        stub = email_grpc.IntegrationServiceStub(self.channel)
        return await stub.SaveEmail(request, timeout=self.deadline, metadata=self.metadata)

    async def save(self, document: EmailDocument) -> SaveResult:
        assert self.edge is not None
        request = email_pb2.SaveEmailRequest(document=document_to_proto(document))
        delay = 0.1
        for attempt in range(self.retries + 1):
            try:
                reply = await self.edge.run(self._save_once, request)
                return SaveResult(document_from_proto(reply.document), reply.created)
            except GRPCError as exc:
                if exc.status is not GrpcStatus.UNAVAILABLE or attempt == self.retries:
                    if exc.status is GrpcStatus.UNAVAILABLE:
                        raise StoreUnavailable(f"integration: {exc.message}") from exc
                    raise
            except (OSError, TimeoutError) as exc:
                if attempt == self.retries:
                    raise StoreUnavailable(f"integration unreachable: {exc}") from exc
            log.warning(
                "integration unavailable, retry %d in %.2fs", attempt + 1, delay,
                extra={"event_id": document.event_id},
            )
            await trio.sleep(delay * random.uniform(0.8, 1.2))
            delay = min(2.0, delay * 2)
        raise AssertionError("unreachable")


def _grpc_spec(
    config: Config, port: int, services: Callable[[Any, AsyncioEdge], list[Any]]
) -> ChildSpec:
    ssl = server_ssl_context(config.grpc)  # None: plaintext
    return ChildSpec(
        "api",
        GrpcServer,
        args=(services, config.grpc.host, port, config.grpc.token(), ssl),
        shutdown=5.0,
    )


@asynccontextmanager
async def _opened(*edges: Any) -> AsyncIterator[None]:
    async with AsyncExitStack() as stack:
        for edge in edges:
            await edge.open()
            stack.push_async_callback(edge.close)
        yield


async def _serve(
    service: str,
    config: Config,
    trees: list[SupervisorSpec | ChildSpec],
    ready: Callable[[ActorSystem], object] | None,
    *,
    bus: Any = None,
    metrics: EmailMetrics | None = None,
) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with open_actor_system(service, shutdown=60.0) as system, open_operations(
            system, config, service, bus=bus, metrics=metrics, worker=worker_index()
        ):
            for tree in trees:
                await system.spawn(tree)
            print(f"{READY} {service} pid={os.getpid()}", flush=True)
            log.info("%s ready", service)
            if ready is not None:
                ready(system)
            await serve_until_stopped(system, signals)


async def run_service(
    service: str, config: Config, ready: Callable[[ActorSystem], object] | None = None
) -> None:
    """Run one service of the distributed profile in this process until a signal."""
    if service not in SERVICES:
        raise ValueError(f"unknown service {service!r}; one of {', '.join(SERVICES)}")
    async with open_asyncio_edge():
        metrics = EmailMetrics()  # served on metrics.port; counted by the wrapped edges
        bus = instrument(metrics, make_bus(config, service))
        if service == "integration":
            store = instrument(metrics, make_store(config))
            async with _opened(store, bus):
                watch = TerminalWatch()
                s = config.store
                tree = integration_tree(
                    store,
                    bus,
                    watch,
                    batch_size=s.batch_size,
                    batch_ms=s.batch_ms,
                    sweeper=sweeper_settings(config),  # re-publishes emails left PENDING
                )
                # SaveEmail checks documents as auth checks requests: auth is not its only caller.
                checks = TemplateRenderer(config.templates.dir)

                def integration_api(actor: Any, edge: AsyncioEdge) -> list[Any]:
                    writer = actor.ctx.lookup("integration/writer")
                    api = IntegrationApi(writer, store, watch)
                    return [IntegrationService(api, edge, checks, config.limits)]

                api = _grpc_spec(config, config.grpc.integration_port, integration_api)
                await _serve(service, config, [tree, api], ready, bus=bus, metrics=metrics)
        elif service == "email-server":
            provider = instrument(metrics, make_provider(config))
            sentlog = SentLog(config.email_server.idempotency_path)
            renderer = TemplateRenderer(config.templates.dir)
            t = config.throttle
            async with _opened(bus, provider, sentlog), open_send_guards(config) as guards:
                tree = email_server_tree(
                    bus,
                    provider,
                    renderer,
                    sender_settings(config),
                    concurrency=config.email_server.concurrency,
                    sentlog=sentlog,
                    rate=t.rate,
                    burst=t.burst,
                    per_domain=dict(t.per_domain),
                    limits=config.limits,
                    guards=guards,  # connection slots and the suppression list
                    **throttle_options(config),
                )
                await _serve(service, config, [tree], ready, bus=bus, metrics=metrics)
        else:
            g = config.grpc
            client = GrpcIntegrationClient(
                g.host,
                g.integration_port,
                token=g.token(),
                deadline=g.deadline_s,
                retries=g.retries,
                ssl=client_ssl_context(g),
            )
            renderer = TemplateRenderer(config.templates.dir)
            async with _opened(bus, client):
                tree = auth_tree(client, bus, renderer, config.limits)

                def auth_api(actor: Any, edge: AsyncioEdge) -> list[Any]:
                    return [AuthService(actor.ctx.lookup("auth/requests"), edge, config.limits)]

                api = _grpc_spec(config, g.auth_port, auth_api)
                await _serve(service, config, [tree, api], ready, bus=bus, metrics=metrics)


def main_service(service: str, config: Config) -> None:
    """Entry point of ``supervisor.py run SERVICE``: Trio as a guest of asyncio."""
    from runtime._aio import run_with_asyncio_host

    try:
        run_with_asyncio_host(run_service, service, config)
    except KeyboardInterrupt:
        sys.exit(130)

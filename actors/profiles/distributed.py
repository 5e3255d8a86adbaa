"""One service per OS process: the distributed profile.

``run_service("integration" | "email-server" | "auth", config)`` runs that
service's tree with the edges its profile names, until SIGINT/SIGTERM. When
it is ready it prints ``MAILACTORS_READY <service>`` on stdout, which is what
``supervisor.py up`` waits for before starting the next service.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import trio

from actors.auth.service import auth_tree
from actors.domain.edges import Bus
from actors.domain.templates import TemplateRenderer
from actors.email_server.safeguards import open_send_guards, throttle_options
from actors.email_server.service import email_server_tree
from actors.grpc.api import AuthService, GrpcServer, IntegrationService
from actors.grpc.integration_client import GrpcIntegrationClient
from actors.grpc.security import client_ssl_context, max_request_bytes, server_ssl_context
from actors.integration.service import IntegrationApi, TerminalWatch, integration_tree
from actors.integration.sweeper import sweeper_settings
from actors.profiles.embedded import (
    make_claims,
    make_provider,
    make_store,
    sender_settings,
    settle_heap,
)
from actors.telemetry.metrics import EmailMetrics, instrument
from actors.telemetry.operations import open_operations, worker_index
from config import Config
from runtime import (
    ActorSystem,
    AsyncioEdge,
    ChildSpec,
    SupervisorSpec,
    open_actor_system,
    open_asyncio_edge,
    serve_until_stopped,
)

log = logging.getLogger("mailactors.services")

SERVICES = ("integration", "email-server", "auth")
READY = "MAILACTORS_READY"


def make_bus(config: Config, role: str) -> Bus:
    if config.bus.kind == "memory":
        from actors.bus.memory import MemoryBus

        return MemoryBus(config.bus.memory_capacity)
    from actors.bus.rabbitmq import RabbitBus

    return RabbitBus(config.bus, role=role, connection_name=f"mailactors-{role}")  # type: ignore[arg-type]


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
            settle_heap()
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
            claims = make_claims(config)  # shared with every worker, on every machine
            renderer = TemplateRenderer(config.templates.dir)
            t = config.throttle
            async with _opened(bus, provider, claims), open_send_guards(config) as guards:
                tree = email_server_tree(
                    bus,
                    provider,
                    renderer,
                    sender_settings(config),
                    concurrency=config.email_server.concurrency,
                    claims=claims,
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
                max_batch_bytes=max_request_bytes(config.limits),
            )
            renderer = TemplateRenderer(config.templates.dir)
            async with _opened(bus, client):
                tree = auth_tree(
                    client, bus, renderer, config.limits, pending_repeat_s=config.sweeper.pending_repeat_s
                )

                def auth_api(actor: Any, edge: AsyncioEdge) -> list[Any]:
                    return [AuthService(actor.ctx.lookup("auth/requests"), edge, config.limits)]

                api = _grpc_spec(config, g.auth_port, auth_api)
                await _serve(service, config, [tree, api], ready, bus=bus, metrics=metrics)


def main_service(service: str, config: Config) -> None:
    """Entry point of ``supervisor.py run SERVICE``: Trio as a guest of asyncio."""
    from runtime import run_with_asyncio_host

    try:
        run_with_asyncio_host(run_service, service, config)
    except KeyboardInterrupt:
        sys.exit(130)

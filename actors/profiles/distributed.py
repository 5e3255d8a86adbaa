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

from actors.domain.templates import TemplateRenderer
from actors.email_server.safeguards import open_send_guards
from actors.feedback import open_feedback
from actors.grpc.api import AuthService, IntegrationService
from actors.grpc.integration_client import GrpcIntegrationClient
from actors.grpc.security import client_ssl_context, max_request_bytes
from actors.integration.service import IntegrationApi, TerminalWatch
from actors.profiles import trees
from actors.telemetry.metrics import EmailMetrics, instrument
from actors.telemetry.operations import open_operations, worker_index
from actors.webhooks import open_webhooks
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
    specs: list[SupervisorSpec | ChildSpec],
    ready: Callable[[ActorSystem], object] | None,
    *,
    after: Callable[[ActorSystem], ChildSpec | None] | None = None,
    bus: Any = None,
    metrics: EmailMetrics | None = None,
) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with open_actor_system(service, shutdown=60.0) as system, open_operations(
            system, config, service, bus=bus, metrics=metrics, worker=worker_index()
        ):
            for spec in specs:
                await system.spawn(spec)
            late = after(system) if after is not None else None  # needs what started above
            if late is not None:
                await system.spawn(late)
            trees.settle_heap()
            print(f"{READY} {service} pid={os.getpid()}", flush=True)
            trees.print_web_url(system)  # the process with the HTTP server says where it is
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
        # Served on metrics.port; counted by the wrapped edges; only this service's series.
        metrics = EmailMetrics(components=(service,))
        bus = instrument(metrics, trees.make_bus(config, service))
        if service == "integration":
            store = instrument(metrics, trees.make_store(config))
            async with (
                _opened(store, bus),
                open_feedback(config, metrics=metrics) as feedback,
                open_webhooks(config, store, metrics.registry) as hooks,
            ):
                watch = TerminalWatch()
                listener = hooks.listener if hooks is not None else None
                tree = trees.integration_service(config, store, bus, watch, listener)
                # SaveEmail checks documents as auth checks requests: auth is not its only caller.
                checks = TemplateRenderer(config.templates.dir)

                def integration_api(actor: Any, edge: AsyncioEdge) -> list[Any]:
                    writer = actor.ctx.lookup("integration/writer")
                    api = IntegrationApi(writer, store, watch, listener=listener)
                    return [IntegrationService(api, edge, checks, config.limits)]

                api = trees.grpc_server(config, config.grpc.integration_port, integration_api)
                specs: list[SupervisorSpec | ChildSpec] = [tree, api]
                sink = trees.feedback_service(config, store, bus, feedback)
                if sink is not None:  # feedback is checked against the store it reads
                    specs.append(sink)
                if hooks is not None:  # deliveries out, beside their one producer
                    specs.append(hooks.spec)
                # The HTTP endpoint lives with the store's one writer and reader.
                http = trees.http_server(config, trees.http_routes(config, store, None))
                if http is not None:
                    specs.append(http)
                # Bounces by SMTP come in where the sink runs that applies them.
                inbound = (lambda system: trees.inbound_smtp(config, system)) if sink else None
                await _serve(
                    service, config, specs, ready, after=inbound, bus=bus, metrics=metrics
                )
        elif service == "email-server":
            provider = instrument(metrics, trees.make_provider(config))
            claims = trees.make_claims(config)  # shared with every worker, on every machine
            renderer = TemplateRenderer(config.templates.dir)
            async with _opened(bus, provider, claims), open_send_guards(config) as guards:
                tree = trees.email_server_service(config, bus, provider, renderer, claims, guards)
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
                tree = trees.auth_service(config, client, bus, renderer)

                def auth_api(actor: Any, edge: AsyncioEdge) -> list[Any]:
                    requests = actor.ctx.lookup("auth/requests")
                    return [AuthService(requests, edge, config.limits, config.api)]

                api = trees.grpc_server(config, g.auth_port, auth_api)
                await _serve(service, config, [tree, api], ready, bus=bus, metrics=metrics)


def main_service(service: str, config: Config) -> None:
    """Entry point of ``supervisor.py run SERVICE``: Trio as a guest of asyncio."""
    from runtime import run_with_asyncio_host

    try:
        run_with_asyncio_host(run_service, service, config)
    except KeyboardInterrupt:
        sys.exit(130)

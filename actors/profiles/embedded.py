"""From a config profile to running services: edges chosen by config, trees spawned in order.

The embedded profile runs all three services in one actor system, started in
dependency order (integration, email-server, auth, then the gRPC API) and
stopped in reverse, so intake closes first and the store is written last.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import msgspec
import trio

from actors.auth.service import RequestEmail
from actors.domain.edges import Bus, Provider, Store
from actors.domain.event_checks import CheckedEvents
from actors.domain.schema import EmailDocument, Status
from actors.domain.templates import TemplateRenderer
from actors.email_server.safeguards import open_send_guards
from actors.feedback import open_feedback
from actors.grpc.api import AuthService, IntegrationService
from actors.integration.service import IntegrationApi, TerminalWatch
from actors.profiles.trees import (
    auth_service,
    email_server_service,
    feedback_service,
    grpc_server,
    http_routes,
    http_server,
    inbound_smtp,
    integration_service,
    make_bus,
    make_claims,
    make_provider,
    make_store,
    print_web_url,
    settle_heap,
)
from actors.stores.claims import ClaimStore
from actors.telemetry.metrics import EmailMetrics, instrument
from actors.telemetry.operations import open_operations
from actors.webhooks import open_webhooks
from config import Config
from runtime import (
    ActorSystem,
    AsyncioEdge,
    open_actor_system,
    open_asyncio_edge,
    serve_until_stopped,
)

log = logging.getLogger("mailactors")


class Embedded(msgspec.Struct):
    """Handles on a running embedded system, for the CLI, tests and benchmarks."""

    system: ActorSystem
    config: Config
    store: Store
    bus: Bus
    provider: Provider
    api: IntegrationApi
    edge: AsyncioEdge

    async def request(self, req: RequestEmail, timeout: float = 60.0) -> Any:
        return await self.system.lookup("auth/requests").ask(req, timeout=timeout)

    async def wait_terminal(self, event_id: str, timeout: float = 30.0) -> EmailDocument:
        """Wait until the email has a terminal status (SENT, FAILED, SUPPRESSED)."""
        with trio.fail_after(timeout):
            return await self.api.wait_terminal(event_id)


@asynccontextmanager
async def open_edges(config: Config) -> AsyncIterator[tuple[Store, Bus, Provider, ClaimStore]]:
    """Open the store, bus, provider and claims record; close them in reverse."""
    if config.bus.kind != "memory":
        raise NotImplementedError("the rabbitmq bus comes with the distributed profile")
    store, bus, provider = make_store(config), make_bus(config, "embedded"), make_provider(config)
    claims = make_claims(config)
    async with AsyncExitStack() as stack:
        for edge in (store, bus, provider, claims):
            await edge.open()
            stack.push_async_callback(edge.close)
        yield store, bus, provider, claims


@asynccontextmanager
async def open_embedded(
    config: Config,
    *,
    grpc: bool = True,
    shutdown: float = 30.0,
    metrics: EmailMetrics | None = None,
) -> AsyncIterator[Embedded]:
    """Run the embedded profile for the duration of the block (``metrics``: count into it)."""
    renderer = TemplateRenderer(config.templates.dir)
    async with (
        open_asyncio_edge() as edge,
        open_edges(config) as (store, bus, provider, claims),
        open_send_guards(config) as guards,
        open_feedback(config, guards.suppression, metrics) as feedback,
    ):
        store, bus, provider = (instrument(metrics, e) for e in (store, bus, provider))
        registry = metrics.registry if metrics is not None else None
        async with (
            open_webhooks(config, store, registry) as hooks,
            open_actor_system("mailactors", shutdown=shutdown) as system,
        ):
            watch = TerminalWatch()
            listener = hooks.listener if hooks is not None else None
            await system.spawn(integration_service(config, store, bus, watch, listener))
            if hooks is not None:  # deliveries out, beside their one producer
                await system.spawn(hooks.spec)
            api = IntegrationApi(
                system.lookup("integration/writer"), store, watch, listener=listener
            )
            # Auth's checked renders, taken by the email server of this same process.
            checked = CheckedEvents()
            await system.spawn(
                email_server_service(config, bus, provider, renderer, claims, guards, checked)
            )
            await system.spawn(auth_service(config, api, bus, renderer, checked))
            if grpc:
                # One server for both APIs: SaveEmail checks documents as auth checks requests.
                def services(actor: Any, edge: AsyncioEdge) -> list[Any]:
                    return [
                        IntegrationService(api, edge, renderer, config.limits),
                        AuthService(
                            actor.ctx.lookup("auth/requests"), edge, config.limits, config.api
                        ),
                    ]

                await system.spawn(grpc_server(config, config.grpc.auth_port, services))
            sink = feedback_service(config, store, bus, feedback)
            if sink is not None:  # bounces and complaints; their sources come next
                await system.spawn(sink)
                inbound = inbound_smtp(config, system)
                if inbound is not None:
                    await system.spawn(inbound)
            http = http_server(config, http_routes(config, store, api))
            if http is not None:
                await system.spawn(http)
            yield Embedded(system, config, store, bus, provider, api, edge)


async def run_embedded(
    config: Config, ready: Callable[[Embedded], Awaitable[object]] | None = None
) -> None:
    """Run the embedded profile until SIGINT/SIGTERM (or until ``ready`` returns, if given)."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        metrics = EmailMetrics() if ready is None else None
        async with open_embedded(config, metrics=metrics) as embedded:
            settle_heap()
            log.info("mailactors embedded: running (profile %s)", config.profile)
            if ready is not None:
                await ready(embedded)
                return
            # The control socket (supervisor.py console) and metrics.port, while it runs.
            async with open_operations(
                embedded.system, config, "embedded", bus=embedded.bus, metrics=metrics
            ):
                print_web_url(embedded.system)
                await serve_until_stopped(embedded.system, signals)


__all__ = ["Embedded", "Status", "open_edges", "open_embedded", "run_embedded", "settle_heap"]

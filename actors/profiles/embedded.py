"""From a config profile to running services: edges chosen by config, trees spawned in order.

The embedded profile runs all three services in one actor system, started in
dependency order (integration, email-server, auth, then the gRPC API) and
stopped in reverse, so intake closes first and the store is written last.
"""

from __future__ import annotations

import gc
import logging
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import msgspec
import trio

from actors.auth.service import RequestEmail, auth_tree
from actors.domain.edges import Bus, Provider, Store
from actors.domain.schema import EmailDocument, Status
from actors.domain.templates import TemplateRenderer
from actors.email_server.safeguards import open_send_guards, throttle_options
from actors.email_server.service import RetryPolicy, SenderSettings, email_server_tree
from actors.grpc.api import AuthService, GrpcServer, IntegrationService
from actors.grpc.security import server_ssl_context
from actors.integration.service import IntegrationApi, TerminalWatch, integration_tree
from actors.integration.sweeper import sweeper_settings
from actors.stores.claims import ClaimStore
from actors.telemetry.metrics import EmailMetrics, instrument
from actors.telemetry.operations import open_operations
from config import Config
from runtime import (
    ActorSystem,
    AsyncioEdge,
    ChildSpec,
    open_actor_system,
    open_asyncio_edge,
    serve_until_stopped,
)

log = logging.getLogger("mailactors")


def make_store(config: Config) -> Store:
    if config.store.kind == "sqlite":
        from actors.stores.sqlite import SqliteStore

        return SqliteStore(config.store.sqlite_path)
    from actors.stores.elasticsearch import ElasticsearchStore

    return ElasticsearchStore(
        config.store.resolved_url(), config.store.index, request_timeout=config.store.request_timeout_s
    )


def make_bus(config: Config) -> Bus:
    if config.bus.kind == "memory":
        from actors.bus.memory import MemoryBus

        return MemoryBus(config.bus.memory_capacity)
    raise NotImplementedError("the rabbitmq bus comes with the distributed profile")


def make_provider(config: Config) -> Provider:
    """maildir, smtp, ses or a chain of them: one builder per kind in actors.providers.build."""
    from actors.providers.build import make_provider as build

    return build(config.provider)


def sender_settings(config: Config) -> SenderSettings:
    p = config.provider
    domain = p.message_id_domain or p.sender.rpartition("@")[2] or "localhost"
    r = config.retry
    e = config.email_server
    return SenderSettings(
        root="email-server",
        sender=p.sender,
        message_id_domain=domain,
        retry=RetryPolicy(r.max_attempts, r.base_delay_s, r.max_delay_s, r.max_age_s, r.jitter),
        report_sending=e.report_sending,
        claim_lease_s=e.claim_lease_s,
        claim_recheck_s=e.claim_recheck_s,
        claims_batch_ms=e.claims_batch_ms,
        unknown_outcome=e.unknown_outcome,
        unknown_outcome_by_category=dict(e.unknown_outcome_by_category),
    )


def make_claims(config: Config) -> ClaimStore:
    """The shared claims record: the SQLite file with the embedded store, else an Elasticsearch
    index beside the documents, which every worker on every machine reaches."""
    if config.store.kind == "sqlite":
        from actors.stores.claims_sqlite import SqliteClaims

        return SqliteClaims(config.email_server.idempotency_path)
    from actors.stores.claims_elasticsearch import ElasticsearchClaims

    return ElasticsearchClaims(
        config.store.resolved_url(),
        config.email_server.claims_index,
        request_timeout=config.store.request_timeout_s,
    )


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
    store, bus, provider = make_store(config), make_bus(config), make_provider(config)
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
    ):
        store, bus, provider = (instrument(metrics, e) for e in (store, bus, provider))
        async with open_actor_system("mailactors", shutdown=shutdown) as system:
            s = config.store
            watch = TerminalWatch()
            await system.spawn(
                integration_tree(
                    store,
                    bus,
                    watch,
                    batch_size=s.batch_size,
                    batch_ms=s.batch_ms,
                    sweeper=sweeper_settings(config),
                )
            )
            api = IntegrationApi(system.lookup("integration/writer"), store, watch)
            t = config.throttle
            await system.spawn(
                email_server_tree(
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
            )
            await system.spawn(
                auth_tree(api, bus, renderer, config.limits, pending_repeat_s=config.sweeper.pending_repeat_s)
            )
            if grpc:
                await system.spawn(
                    api_server_spec(config, api, token=config.grpc.token(), renderer=renderer)
                )
            yield Embedded(system, config, store, bus, provider, api, edge)


def api_server_spec(
    config: Config, api: IntegrationApi, token: str | None, renderer: TemplateRenderer | None = None
) -> ChildSpec:
    """The gRPC server; with ``renderer``, SaveEmail checks documents as auth checks requests."""

    def services(actor: Any, edge: AsyncioEdge) -> list[Any]:
        return [
            IntegrationService(api, edge, renderer, config.limits),
            AuthService(actor.ctx.lookup("auth/requests"), edge, config.limits),
        ]

    ssl = server_ssl_context(config.grpc)  # None: plaintext
    return ChildSpec(
        "api",
        GrpcServer,
        args=(services, config.grpc.host, config.grpc.auth_port, token, ssl),
        shutdown=5.0,
    )


def settle_heap() -> None:
    """After start-up: move what start-up made out of the collector's way, collect less often.

    Every full collection walked all the modules, classes and configuration loaded
    at start, and the default gen-0 threshold (700 allocations) ran one about every
    email. Measured in the distributed cluster: the collector was 14% of auth's CPU;
    with the start-up heap frozen and gen 0 at 10,000 the cluster spends ~8% less
    CPU per email. Cycles are still collected, just in larger batches.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)


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
                await serve_until_stopped(embedded.system, signals)


__all__ = ["Embedded", "Status", "open_edges", "open_embedded", "run_embedded", "settle_heap"]

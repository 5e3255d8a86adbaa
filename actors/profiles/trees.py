"""One builder per service tree and per edge, from the config; both profiles call them.

The embedded profile spawns the three service trees in one actor system, the distributed
one each in its own process: what differs is only which edges a tree is handed (auth gets
integration in process or over gRPC; the bus is in memory or RabbitMQ), so the settings
read from the config are read here, once.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Sequence
from email.utils import parseaddr
from typing import Any

from actors.auth.service import IntegrationClient, auth_tree
from actors.domain.edges import Bus, Provider, Store
from actors.domain.event_checks import CheckedEvents
from actors.domain.templates import TemplateRenderer
from actors.email_server.safeguards import SendGuards, throttle_options
from actors.email_server.service import RetryPolicy, SenderSettings, email_server_tree
from actors.feedback import verp_codec
from actors.grpc.api import GrpcServer
from actors.grpc.security import server_ssl_context
from actors.http import HttpServer, RouteFactory, health_routes
from actors.integration.service import (
    IntegrationApi,
    StatusListener,
    TerminalWatch,
    integration_tree,
)
from actors.integration.sweeper import sweeper_settings
from actors.stores.claims import ClaimStore
from actors.web import web_routes
from config import Config
from runtime import ActorSystem, AsyncioEdge, ChildSpec, SupervisorSpec

__all__ = [
    "auth_service",
    "email_server_service",
    "feedback_service",
    "inbound_smtp",
    "grpc_server",
    "integration_service",
    "make_bus",
    "make_claims",
    "make_provider",
    "make_store",
    "print_web_url",
    "sender_settings",
    "settle_heap",
]


# -- edges ------------------------------------------------------------------------------


def make_store(config: Config) -> Store:
    if config.store.kind == "sqlite":
        from actors.stores.sqlite import SqliteStore

        return SqliteStore(config.store.sqlite_path)
    from actors.stores.elasticsearch import ElasticsearchStore

    return ElasticsearchStore(
        config.store.resolved_url(),
        config.store.index,
        request_timeout=config.store.request_timeout_s,
    )


def make_bus(config: Config, role: str) -> Bus:
    """The memory bus, or a RabbitMQ connection for *role* (the service using it)."""
    if config.bus.kind == "memory":
        from actors.bus.memory import MemoryBus

        return MemoryBus(config.bus.memory_capacity)
    from actors.bus.rabbitmq import RabbitBus

    return RabbitBus(config.bus, role=role, connection_name=f"mailactors-{role}")  # type: ignore[arg-type]


def make_provider(config: Config) -> Provider:
    """maildir, smtp, ses or a chain of them: one builder per kind in actors.providers.build;
    each signs with the ``[dkim]`` keys, read here (a bad key stops start-up)."""
    from actors.providers.build import make_provider as build
    from actors.providers.build import make_signer

    return build(config.provider, signer=make_signer(config.dkim))


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


def sender_settings(config: Config) -> SenderSettings:
    p = config.provider
    # provider.sender may be "Name <address>": the domain is the address's.
    sender_domain = parseaddr(p.sender)[1].rpartition("@")[2]
    domain = p.message_id_domain or sender_domain or "localhost"
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
        unsubscribe=unsubscribe_headers(config, sender_domain or domain),
        envelope_from=codec.address if (codec := verp_codec(config.bounces)) else None,
    )


# -- service trees ----------------------------------------------------------------------


def integration_service(
    config: Config,
    store: Store,
    bus: Bus,
    watch: TerminalWatch,
    listener: StatusListener | None = None,
) -> SupervisorSpec:
    """The writer of email documents, and the sweeper that re-publishes those left PENDING;
    ``listener`` (webhooks) is told of every stored batch of statuses."""
    s = config.store
    return integration_tree(
        store,
        bus,
        watch,
        batch_size=s.batch_size,
        batch_ms=s.batch_ms,
        sweeper=sweeper_settings(config),
        listener=listener,
        schedule_interval_s=config.api.schedule_interval_s,
    )


def email_server_service(
    config: Config,
    bus: Bus,
    provider: Provider,
    renderer: TemplateRenderer,
    claims: ClaimStore,
    guards: SendGuards,
    checked: CheckedEvents | None = None,
) -> SupervisorSpec:
    """The senders, the throttle and the claims, as the config sets them; *checked*: the
    renders of an auth in the same process (embedded)."""
    t = config.throttle
    return email_server_tree(
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
        checked=checked,
        **throttle_options(config),
    )


def auth_service(
    config: Config,
    integration: IntegrationClient,
    bus: Bus,
    renderer: TemplateRenderer,
    checked: CheckedEvents | None = None,
) -> SupervisorSpec:
    """Intake: *integration* is the in-process API (embedded) or its gRPC client; *checked*
    takes its renders for an email server in the same process (embedded)."""
    return auth_tree(
        integration,
        bus,
        renderer,
        config.limits,
        pending_repeat_s=config.sweeper.pending_repeat_s,
        api=config.api,
        provider_sender=config.provider.sender,
        checked=checked,
    )


def grpc_server(
    config: Config, port: int, services: Callable[[Any, AsyncioEdge], list[Any]]
) -> ChildSpec:
    """The gRPC server on *port*; *services* makes its servicers once the actor runs."""
    ssl = server_ssl_context(config.grpc)  # None: plaintext
    return ChildSpec(
        "api",
        GrpcServer,
        args=(services, config.grpc.host, port, config.grpc.token(), ssl),
        shutdown=5.0,
    )


def inbound_smtp(config: Config, system: ActorSystem) -> ChildSpec | None:
    """The inbound SMTP endpoint for bounces and complaints (``[bounces]``), reporting to the
    feedback sink already running in ``system``; None when bounces are off."""
    if not config.bounces.enabled:
        return None
    from actors.feedback import SinkRef, inbound_smtp_server

    unsubscribe = unsubscribe_mail(config)  # unsubscribe+TOKEN@, when a category has links
    handlers = {"unsubscribe": unsubscribe} if unsubscribe is not None else None
    return inbound_smtp_server(config, SinkRef(system.lookup("feedback/sink")), handlers)


def http_routes(config: Config, store: Store, api: IntegrationApi | None) -> list[RouteFactory]:
    """The route factories of the packages that answer HTTP in this process.

    ``api`` is the in-process integration API where there is one (embedded; in
    the distributed profile each factory looks up ``integration/writer``).
    """
    from actors.email_server.safeguards import open_suppression
    from actors.webhooks import unsubscribe_routes

    factories: list[RouteFactory] = [
        web_routes(config, store),
        unsubscribe_routes(config, lambda: open_suppression(config)),
    ]
    if config.feedback.ses.enabled:  # SES events over SNS, to the feedback sink
        from actors.feedback import ses_routes

        factories.append(ses_routes(config))
    return factories


def feedback_service(
    config: Config, store: Store, bus: Bus, resources: Any
) -> SupervisorSpec | None:
    """The feedback sink (``actors.feedback``), where ``open_feedback`` gave resources."""
    if resources is None:
        return None
    from actors.feedback import feedback_tree

    return feedback_tree(config, store, bus, resources)


def http_server(config: Config, factories: Sequence[RouteFactory]) -> ChildSpec | None:
    """The process's HTTP endpoint with ``/healthz`` and the given routes; None when off.

    Packages that answer HTTP (web view, SES feedback, unsubscribe) add their
    route factory to ``factories`` in the profile that runs them.
    """
    if not config.http.enabled:
        return None
    return ChildSpec(
        "http", HttpServer, args=(config.http, [health_routes, *factories]), shutdown=5.0
    )


def print_web_url(system: ActorSystem) -> None:
    """Say on stdout where the web view is, once the HTTP server has bound (``up`` shows it)."""
    http = system.snapshot().by_path().get("http")
    url = (http.extra or {}).get("url") if http is not None else None
    if isinstance(url, str):
        print(f"mailactors web view: {url}/web/", flush=True)


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


def unsubscribe_headers(
    config: Config, sender_domain: str
) -> Callable[[str, str], tuple[str, str] | None] | None:
    """What the senders put in List-Unsubscribe, for ``[unsubscribe] categories`` (issue 19)."""
    from functools import partial

    from actors.http import public_url
    from actors.webhooks import UnsubscribeTokens, list_unsubscribe

    tokens = UnsubscribeTokens.from_config(config.unsubscribe)
    if tokens is None:
        return None
    # The mailto goes where the inbound SMTP endpoint takes mail: the bounces domain, when on.
    b = config.bounces
    domain = config.unsubscribe.mailto_domain or (b.domain if b.enabled else "") or sender_domain
    return partial(list_unsubscribe, tokens, public_url(config.http), domain)


def unsubscribe_mail(config: Config) -> Any:
    """The inbound SMTP endpoint's handler for ``unsubscribe+TOKEN@...`` local parts
    (``actors.webhooks.UnsubscribeMail``), or None when no category is unsubscribable."""
    from actors.email_server.safeguards import open_suppression
    from actors.webhooks import UnsubscribeMail, UnsubscribeTokens

    tokens = UnsubscribeTokens.from_config(config.unsubscribe)
    if tokens is None:
        return None
    return UnsubscribeMail(tokens, lambda: open_suppression(config))

"""The typed shape of a configuration: one frozen msgspec Struct per TOML section.

Every section forbids unknown fields, so a typo in a profile or in an environment
variable stops start-up instead of being silently ignored. Constraints live in the
annotations (``Meta(ge=1)``) so the loader can describe them in error messages.

Secrets are never fields: a section names *where* a secret lives (``*_env`` holds
an environment variable name, ``*_file`` a path) and a helper method fetches it
when it is needed. The one exception is a password embedded in a URL (the
default RabbitMQ URL carries ``guest:guest``); ``repr`` and ``redacted()`` hide it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal
from urllib.parse import quote, urlsplit, urlunsplit

import msgspec
from msgspec import Meta

from ._errors import ConfigError
from ._exposure import exposure_problem
from ._secrets import redact_url, resolve_secret
from ._types import (
    DataPathStr,
    EnvName,
    Fraction,
    LogLevel,
    NonEmptyStr,
    NonNegFloat,
    NonNegInt,
    PathStr,
    Port,
    PosFloat,
    PosInt,
)
from ._types import Section as _Section
from ._types import redact_value as _redact_value
from ._webhooks import UnsubscribeConfig, WebhooksConfig


class ServiceConfig(_Section, frozen=True):
    """Process-wide settings."""

    root: PathStr = ""  # "" = the project root (the directory holding config/)
    run_dir: DataPathStr = "run"  # relative to data_dir, as every path the services write
    data_dir: PathStr = "var"
    log_format: Literal["text", "json"] = "text"
    log_level: LogLevel = "INFO"


class GrpcConfig(_Section, frozen=True):
    host: NonEmptyStr = "127.0.0.1"
    auth_port: Port = 50051
    integration_port: Port = 50052
    token_env: EnvName = ""  # name of the env var holding the bearer token; "" = no auth
    token_file: PathStr = ""  # or a file holding it
    tls_cert_file: PathStr = ""
    tls_key_file: PathStr = ""
    tls_ca_file: PathStr = ""  # clients: CA bundle that signs the servers' certificate
    allow_insecure: bool = False  # allow a non-loopback host without token and TLS
    deadline_s: PosFloat = 5.0
    retries: NonNegInt = 3

    def __post_init__(self) -> None:
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ValueError("tls_cert_file and tls_key_file must be set together")
        if self.auth_port and self.auth_port == self.integration_port:
            raise ValueError("auth_port and integration_port must differ")
        problem = exposure_problem(
            self.host,
            token=bool(self.token_env or self.token_file),
            tls=self.tls,
            allow_insecure=self.allow_insecure,
        )
        if problem:
            raise ValueError(problem)

    @property
    def tls(self) -> bool:
        return bool(self.tls_cert_file)

    def token(self, env: Mapping[str, str] | None = None) -> str | None:
        """The bearer token, or None when auth is off. Raises ConfigError if it is missing."""
        return resolve_secret(
            env_var=self.token_env, file=self.token_file, env=env, key="grpc.token"
        )


class BusConfig(_Section, frozen=True):
    kind: Literal["memory", "rabbitmq"] = "memory"
    url: NonEmptyStr = "amqp://guest:guest@127.0.0.1:5672/"
    url_env: EnvName = ""  # env var holding the whole URL; wins over `url` when set
    password_env: EnvName = ""  # env var holding the broker password; replaces the URL's
    password_file: PathStr = ""
    send_exchange: NonEmptyStr = "email.send.exchange"
    status_exchange: NonEmptyStr = "email.status.exchange"
    send_queue: NonEmptyStr = "email.send"
    status_queue: NonEmptyStr = "email.status"
    dead_letter_exchange: NonEmptyStr = "email.dead.exchange"
    dead_letter_queue: NonEmptyStr = "email.dead"
    prefetch: PosInt = 64
    # The status consumer's: the status updater acks a whole batch once it is stored,
    # so this bounds its batch (a prefetch below batch_ms' worth of statuses stalls it).
    status_prefetch: PosInt = 512
    quorum: bool = True
    max_deliveries: PosInt = 5
    reconnect_max_s: PosFloat = 30.0
    publish_timeout_s: PosFloat = 10.0
    memory_capacity: PosInt = 1024  # buffer of each in-process queue (memory bus)

    def __post_init__(self) -> None:
        _require_scheme("url", self.url, "amqp", "amqps")

    def resolved_url(self, env: Mapping[str, str] | None = None) -> str:
        """The broker URL with its password filled in from the environment or a file."""
        url = self.url
        if self.url_env:
            url = resolve_secret(env_var=self.url_env, env=env, key="bus.url") or url
        password = resolve_secret(
            env_var=self.password_env, file=self.password_file, env=env, key="bus.password"
        )
        return url if password is None else _with_password(url, password)


class StoreConfig(_Section, frozen=True):
    kind: Literal["sqlite", "elasticsearch"] = "sqlite"
    sqlite_path: DataPathStr = "emails.sqlite3"
    url: NonEmptyStr = "http://127.0.0.1:9200"
    url_env: EnvName = ""
    username: str = ""
    password_env: EnvName = ""
    password_file: PathStr = ""
    api_key_env: EnvName = ""
    index: Annotated[str, Meta(pattern=r"^[a-z0-9][a-z0-9_.-]{0,200}$")] = "emails"
    batch_size: PosInt = 500
    batch_ms: NonNegFloat = 20.0
    request_timeout_s: PosFloat = 10.0

    def __post_init__(self) -> None:
        _require_scheme("url", self.url, "http", "https")

    def resolved_url(self, env: Mapping[str, str] | None = None) -> str:
        if self.url_env:
            return resolve_secret(env_var=self.url_env, env=env, key="store.url") or self.url
        return self.url

    def password(self, env: Mapping[str, str] | None = None) -> str | None:
        return resolve_secret(
            env_var=self.password_env, file=self.password_file, env=env, key="store.password"
        )

    def api_key(self, env: Mapping[str, str] | None = None) -> str | None:
        return resolve_secret(env_var=self.api_key_env, env=env, key="store.api_key")


class SmtpConfig(_Section, frozen=True):
    host: NonEmptyStr = "localhost"
    port: Port = 1025
    username: str = ""
    password_env: EnvName = ""
    password_file: PathStr = ""
    starttls: bool = False  # upgrade a plain connection with STARTTLS
    use_tls: bool = False  # implicit TLS from the first byte (port 465)
    timeout_s: PosFloat = 30.0
    pool_size: PosInt = 8

    def __post_init__(self) -> None:
        if self.starttls and self.use_tls:
            raise ValueError("starttls and use_tls are exclusive: choose one")

    def password(self, env: Mapping[str, str] | None = None) -> str | None:
        return resolve_secret(
            env_var=self.password_env,
            file=self.password_file,
            env=env,
            key="provider.smtp.password",
        )


class SesConfig(_Section, frozen=True):
    """Amazon SES (API v2). Credentials come from the AWS environment, never from here."""

    region: str = ""  # "" = AWS_REGION, AWS_DEFAULT_REGION or the profile's region
    profile: str = ""  # AWS profile name (~/.aws/config); "" = AWS_PROFILE or the default
    endpoint_url: str = ""  # "" = the region's SES endpoint; else e.g. a moto server
    configuration_set: str = ""  # SES configuration set for every email; "" = none
    timeout_s: PosFloat = 30.0
    pool_size: PosInt = 10

    def __post_init__(self) -> None:
        if self.endpoint_url:
            _require_scheme("endpoint_url", self.endpoint_url, "http", "https")


class BreakerConfig(_Section, frozen=True):
    """The circuit breaker of every provider in a chain."""

    failures: PosInt = 5  # consecutive transient failures that open it
    cool_down_s: NonNegFloat = 30.0  # seconds it stays open before one probe email


ProviderName = Annotated[str, Meta(pattern=r"^([A-Za-z0-9][A-Za-z0-9_.-]{0,63})?$")]


class ChainEntryConfig(_Section, frozen=True):
    """One provider of a chain; its settings default to the [provider.<kind>] section."""

    kind: Literal["maildir", "smtp", "ses"]
    name: ProviderName = ""  # recorded as the provider of what it sends; "" = kind
    smtp: SmtpConfig | None = None  # own SMTP settings; unset = [provider.smtp]
    ses: SesConfig | None = None  # own SES settings; unset = [provider.ses]

    @property
    def label(self) -> str:
        return self.name or self.kind


class ProviderConfig(_Section, frozen=True):
    kind: Literal["maildir", "smtp", "ses", "chain"] = "maildir"
    sender: NonEmptyStr = "mailactors@localhost"  # From: address, for every provider
    message_id_domain: str = ""  # right side of Message-ID; "" = the sender's domain
    maildir_path: DataPathStr = "maildir"
    smtp: SmtpConfig = msgspec.field(default_factory=SmtpConfig)
    ses: SesConfig = msgspec.field(default_factory=SesConfig)
    chain: tuple[ChainEntryConfig, ...] = ()  # kind = "chain": the providers, in order
    breaker: BreakerConfig = msgspec.field(default_factory=BreakerConfig)

    def __post_init__(self) -> None:
        if self.kind == "chain" and not self.chain:
            raise ValueError(
                "kind 'chain' needs at least one [[provider.chain]] table; provider.chain is empty"
            )
        labels = [entry.label for entry in self.chain]
        repeated = sorted({label for label in labels if labels.count(label) > 1})
        if repeated:
            raise ValueError(
                "provider.chain names must be unique (set name = ...); repeated: "
                + ", ".join(repeated)
            )


# Checked in full (labels, hyphens) when the key is loaded; here only the characters.
DkimDomain = Annotated[str, Meta(pattern=r"^[a-z0-9][a-z0-9.-]*$")]
DkimSelector = Annotated[str, Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9.-]*$")]


class DkimDomainConfig(_Section, frozen=True):
    """One signing domain: its selector, algorithm and where its private key is (never here)."""

    selector: DkimSelector
    algorithm: Literal["rsa-sha256", "ed25519-sha256"] = "rsa-sha256"
    key_file: PathStr = ""  # a PEM file (mode 0600), e.g. from `supervisor.py dkim keygen`
    key_env: EnvName = ""  # or an env var holding the PEM text; wins over key_file when set

    def private_key(self, domain: str, env: Mapping[str, str] | None = None) -> str:
        """The key's text (PEM); ConfigError naming this domain's key field when it is missing.

        (Checked here, not in ``__post_init__``: msgspec's error path hides a table's key, and
        the error must say which domain.)
        """
        where = f'dkim.domains."{domain}".'
        if not (self.key_file or self.key_env):
            raise ConfigError(where + "key_file", "missing key: set key_file or key_env")
        key = resolve_secret(
            env_var=self.key_env,
            file=self.key_file,
            env=env,
            key=where + ("key_env" if self.key_env else "key_file"),
        )
        assert key is not None  # one of the two is set
        return key


class DkimConfig(_Section, frozen=True):
    """DKIM signing of every message, with the key of its From domain."""

    require: bool = False  # a From domain without a key: FAILED, instead of sent unsigned
    domains: dict[DkimDomain, DkimDomainConfig] = {}


class EmailServerConfig(_Section, frozen=True):
    workers: PosInt = 1
    concurrency: PosInt = 16
    idempotency_path: DataPathStr = "sent.sqlite3"
    report_sending: bool = False  # publish SENDING when a sender hands an email to the provider
    claims_index: Annotated[str, Meta(pattern=r"^[a-z0-9][a-z0-9_.-]{0,200}$")] = "email-claims"
    claim_lease_s: PosFloat = 60.0  # a dead owner's claim is taken over after this
    claim_recheck_s: PosFloat = 1.0  # a copy of an email claimed elsewhere looks again after this
    claims_batch_ms: NonNegFloat = 5.0
    # Elasticsearch store: each worker reloads the shared suppression list this often
    suppression_refresh_s: PosFloat = 2.0
    unknown_outcome: Literal["resend", "fail"] = "resend"
    unknown_outcome_by_category: dict[str, Literal["resend", "fail"]] = {}


class RetryConfig(_Section, frozen=True):
    max_attempts: PosInt = 5
    base_delay_s: NonNegFloat = 2.0
    max_delay_s: NonNegFloat = 300.0
    max_age_s: PosFloat = 86400.0
    jitter: Fraction = 0.2

    def __post_init__(self) -> None:
        if self.base_delay_s > self.max_delay_s:
            raise ValueError("base_delay_s must not exceed max_delay_s")


DomainName = Annotated[str, Meta(pattern=r"^[a-z0-9.-]+$")]


class ThrottleConfig(_Section, frozen=True):
    rate: NonNegFloat = 0.0  # emails per second for the provider; 0 = unlimited
    burst: PosInt = 20
    max_connections: NonNegInt = 0  # concurrent sends; 0 = provider.smtp.pool_size
    per_domain: dict[DomainName, PosFloat] = {}  # emails/s per recipient domain
    adaptive: bool = True  # a "slow down" reply halves the provider rate; it recovers slowly
    min_rate: PosFloat = 1.0  # the adaptive rate never goes below this (emails/s)
    recover_per_s: PosFloat = 1.0  # emails/s given back per second without a "slow down"


class SweeperConfig(_Section, frozen=True):
    pending_age_s: PosFloat = 300.0
    rate: PosFloat = 50.0
    interval_s: PosFloat = 30.0
    enabled: bool = True
    stuck_grace_s: PosFloat = 60.0
    pending_repeat_s: NonNegFloat = 10.0


MIB = 1024 * 1024

DEFAULT_ATTACHMENT_TYPES = (
    "application/pdf",
    "image/png",
    "image/jpeg",
    "text/plain",
    "text/csv",
    "text/calendar",
)

MimeType = Annotated[str, Meta(pattern=r"^[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*$")]


class LimitsConfig(_Section, frozen=True):
    max_subject_chars: PosInt = 255
    max_variables_bytes: PosInt = 32768
    max_attachments: NonNegInt = 10
    max_attachment_bytes: PosInt = 5 * MIB
    max_message_bytes: PosInt = 10 * MIB
    allowed_attachment_types: tuple[MimeType, ...] = DEFAULT_ATTACHMENT_TYPES

    def __post_init__(self) -> None:
        if self.max_attachment_bytes > self.max_message_bytes:
            raise ValueError("max_attachment_bytes must not exceed max_message_bytes")


class ApiConfig(_Section, frozen=True):
    """What callers of the public API may ask for beyond a recipient (issue 17)."""

    # Who may be the From of an email besides provider.sender: addresses
    # ("billing@example.com") or domains ("example.com": every address at it).
    senders: tuple[str, ...] = ()
    # category -> its default sender, "address" or "Name <address>" (allowed as a sender).
    default_senders: dict[str, str] = {}
    max_batch: Annotated[int, Meta(ge=1, le=10_000)] = 1000  # requests per RequestEmails
    schedule_horizon_s: PosFloat = 30 * 86400.0  # send_at at most this far ahead
    # The due-scanner looks at the store at least this often (and at once when a
    # scheduled email falls due earlier than its next look).
    schedule_interval_s: PosFloat = 30.0


class TemplatesConfig(_Section, frozen=True):
    dir: PathStr = "templates"


class MetricsConfig(_Section, frozen=True):
    host: NonEmptyStr = "127.0.0.1"
    port: Port = 0  # 0 = no metrics endpoint


class HttpConfig(_Section, frozen=True):
    """The HTTP endpoint of a process: web view, SES feedback, unsubscribe links.

    One server per process that has any of them (the embedded process; the
    integration service in the distributed profile). It follows the gRPC API's
    bind rules: off loopback it needs TLS and the gRPC token (its login secret).
    """

    enabled: bool = False
    host: NonEmptyStr = "127.0.0.1"
    port: Port = 8025  # 0 = any free port (tests)
    public_url: str = ""  # how mail clients and AWS reach it; "" = http(s)://host:port
    tls_cert_file: PathStr = ""
    tls_key_file: PathStr = ""
    allow_insecure: bool = False  # allow a non-loopback host without TLS and a token
    max_body_bytes: PosInt = 1 * MIB  # a larger request body is refused (413) unread

    def __post_init__(self) -> None:
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ValueError("tls_cert_file and tls_key_file must be set together")
        if self.public_url:
            _require_scheme("public_url", self.public_url, "http", "https")

    @property
    def tls(self) -> bool:
        return bool(self.tls_cert_file)


class BouncesConfig(_Section, frozen=True):
    """Bounces and complaints by SMTP: the VERP return path and the inbound endpoint.

    Every outgoing email's envelope sender becomes
    ``<local_prefix>+<eventId>.<hmac>@<domain>``; the domain's MX points at the
    inbound SMTP endpoint (``host``:``port``), which takes DSNs and ARF reports
    sent there. The HMAC key comes from ``secret_env`` or ``secret_file`` only.
    """

    enabled: bool = False
    domain: str = ""  # right side of the return path; its MX is the inbound endpoint
    local_prefix: Annotated[str, Meta(pattern=r"^[a-z0-9][a-z0-9-]{0,15}$")] = "bounces"
    secret_env: EnvName = ""  # env var holding the HMAC key of the return paths
    secret_file: PathStr = ""  # or a file holding it
    # The key before a rotation: its return paths are still accepted, none is made with it.
    previous_secret_env: EnvName = ""
    previous_secret_file: PathStr = ""
    host: NonEmptyStr = "127.0.0.1"  # the inbound SMTP endpoint (an MX: 0.0.0.0 and port 25)
    port: Port = 2525  # 0 = any free port (tests)
    max_message_bytes: PosInt = 1 * MIB  # a larger report is refused at DATA (552), unread
    max_parts: PosInt = 256  # MIME parts a report may have; more is refused (554), unparsed
    max_multiparts: PosInt = 32  # multipart containers (so nesting depth) a report may have
    parse_timeout_s: PosFloat = 5.0  # a report that takes longer to parse is refused (451)
    max_connections: PosInt = 64  # concurrent SMTP connections; more are told 421
    max_commands: PosInt = 100  # commands of one kind per connection (a flood is cut off)
    idle_timeout_s: PosFloat = 60.0  # a connection silent this long is closed

    def __post_init__(self) -> None:
        if self.enabled:
            if not self.domain:
                raise ValueError("enabled: needs a domain (the return path's right side)")
            if not (self.secret_env or self.secret_file):
                raise ValueError("enabled: needs the HMAC key: set secret_env or secret_file")
        if self.domain and ("@" in self.domain or "." not in self.domain.strip(".")):
            raise ValueError(f"domain: not a domain name: {self.domain!r}")

    def secret(self, env: Mapping[str, str] | None = None) -> str | None:
        """The HMAC key of the return paths, or None when none is configured."""
        return resolve_secret(
            env_var=self.secret_env, file=self.secret_file, env=env, key="bounces.secret"
        )

    def previous_secret(self, env: Mapping[str, str] | None = None) -> str | None:
        """The key before the last rotation, or None."""
        return resolve_secret(
            env_var=self.previous_secret_env,
            file=self.previous_secret_file,
            env=env,
            key="bounces.previous_secret",
        )


class SnsConfig(_Section, frozen=True):
    """SES event notifications over SNS HTTP(S): ``POST <path>`` on the HTTP endpoint."""

    enabled: bool = False
    path: NonEmptyStr = "/feedback/ses"
    topic_arns: tuple[str, ...] = ()  # the SNS topics accepted; empty = any topic
    # Hosts (host[:port], fully matched) the signing certificate and the SubscribeURL may
    # be fetched from, always over https. Tests add their local server here, nowhere else.
    host_pattern: NonEmptyStr = r"sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?"
    ca_file: PathStr = ""  # CA bundle for those fetches; "" = the system's
    max_age_s: PosFloat = 3600.0  # older messages (SNS Timestamp) are refused: replays
    confirm_subscriptions: bool = True  # fetch the SubscribeURL of a SubscriptionConfirmation
    fetch_timeout_s: PosFloat = 10.0

    def __post_init__(self) -> None:
        import re

        try:
            re.compile(self.host_pattern)
        except re.error as exc:
            raise ValueError(f"host_pattern: not a regular expression: {exc}") from None


class FeedbackConfig(_Section, frozen=True):
    """What bounces, complaints and deliveries do (actors.feedback); the sink runs with the
    HTTP endpoint (embedded: the process; distributed: integration)."""

    ledger_path: PathStr = "var/feedback.sqlite3"  # embedded: repeats seen, soft bounces
    ledger_index: Annotated[str, Meta(pattern=r"^[a-z0-9][a-z0-9_.-]{0,200}$")] = (
        "email-feedback"  # distributed: the same, in Elasticsearch
    )
    complaint_scope: Literal["category", "all"] = "category"  # what a complaint suppresses
    soft_bounce_limit: PosInt = 3  # soft bounces of one address within the window: suppressed
    soft_bounce_window_s: PosFloat = 7 * 86400.0
    rate_window_s: PosFloat = 86400.0  # bounce and complaint rates over this window
    rate_check_s: NonNegFloat = 60.0  # at most one rate check per category this often
    rate_min_emails: PosInt = 1000  # fewer emails in the window: no threshold applies
    complaint_rate_threshold: Fraction = 0.003  # Gmail and Yahoo's 0.3%
    bounce_rate_threshold: Fraction = 0.05
    pause_on_threshold: bool = False  # crossing a threshold pauses the category (else: warns)
    ses: SnsConfig = msgspec.field(default_factory=SnsConfig)


class ControlConfig(_Section, frozen=True):
    """The control endpoint of each service process (``supervisor.py console``)."""

    socket: bool = True  # a Unix socket (mode 0600) <service.run_dir>/<service>.sock
    host: NonEmptyStr = "127.0.0.1"  # TCP address, when port is set
    port: Port = 0  # TCP port (a token is then required); 0 = no TCP endpoint
    token_env: EnvName = ""  # env var holding the TCP endpoint's token
    token_file: PathStr = ""  # or a file holding it

    def __post_init__(self) -> None:
        if self.port and not (self.token_env or self.token_file):
            raise ValueError("a TCP control port needs a token: set token_env or token_file")

    def token(self, env: Mapping[str, str] | None = None) -> str | None:
        return resolve_secret(
            env_var=self.token_env, file=self.token_file, env=env, key="control.token"
        )


class Config(_Section, frozen=True):
    """A whole configuration. Build it with ``load_config``; it is immutable."""

    service: ServiceConfig = msgspec.field(default_factory=ServiceConfig)
    grpc: GrpcConfig = msgspec.field(default_factory=GrpcConfig)
    bus: BusConfig = msgspec.field(default_factory=BusConfig)
    store: StoreConfig = msgspec.field(default_factory=StoreConfig)
    provider: ProviderConfig = msgspec.field(default_factory=ProviderConfig)
    email_server: EmailServerConfig = msgspec.field(default_factory=EmailServerConfig)
    retry: RetryConfig = msgspec.field(default_factory=RetryConfig)
    throttle: ThrottleConfig = msgspec.field(default_factory=ThrottleConfig)
    sweeper: SweeperConfig = msgspec.field(default_factory=SweeperConfig)
    limits: LimitsConfig = msgspec.field(default_factory=LimitsConfig)
    api: ApiConfig = msgspec.field(default_factory=ApiConfig)
    templates: TemplatesConfig = msgspec.field(default_factory=TemplatesConfig)
    metrics: MetricsConfig = msgspec.field(default_factory=MetricsConfig)
    control: ControlConfig = msgspec.field(default_factory=ControlConfig)
    http: HttpConfig = msgspec.field(default_factory=HttpConfig)
    webhooks: WebhooksConfig = msgspec.field(default_factory=WebhooksConfig)
    unsubscribe: UnsubscribeConfig = msgspec.field(default_factory=UnsubscribeConfig)
    bounces: BouncesConfig = msgspec.field(default_factory=BouncesConfig)
    dkim: DkimConfig = msgspec.field(default_factory=DkimConfig)
    feedback: FeedbackConfig = msgspec.field(default_factory=FeedbackConfig)
    # Set by the loader (the profile file it read); not accepted from TOML or env.
    profile: str = ""

    def __post_init__(self) -> None:
        # Across sections: the HTTP endpoint's login secret is the gRPC token.
        http = self.http
        if http.enabled:
            grpc = self.grpc
            problem = exposure_problem(
                http.host,
                token=bool(grpc.token_env or grpc.token_file),
                tls=http.tls,
                allow_insecure=http.allow_insecure,
                what="the HTTP endpoint (http.host)",
                token_keys="grpc.token_env or grpc.token_file",
            )
            if problem:
                raise ValueError(problem)
        if self.feedback.ses.enabled and not http.enabled:
            raise ValueError("feedback.ses.enabled needs the HTTP endpoint: set http.enabled")

    def redacted(self) -> dict[str, Any]:
        """The whole config as plain data, safe to log or print (no secret values)."""
        tree: dict[str, Any] = _redact_tree(msgspec.to_builtins(self))
        return tree


LOADER_ONLY_FIELDS = frozenset({"profile"})


def _require_scheme(field: str, url: str, *schemes: str) -> None:
    """A URL setting must name its protocol; the message never shows a password in it."""
    if urlsplit(url).scheme not in schemes:
        allowed = " or ".join(f"{scheme}://" for scheme in schemes)
        raise ValueError(f"{field} must start with {allowed}, got {redact_url(url)!r}")


def _redact_tree(node: Any, name: str = "") -> Any:
    if isinstance(node, dict):
        return {k: _redact_tree(v, k) for k, v in node.items()}
    if isinstance(node, list | tuple):
        return [_redact_tree(v, name) for v in node]
    return _redact_value(name, node)


def _with_password(url: str, password: str) -> str:
    parts = urlsplit(url)
    if parts.hostname is None:
        raise ConfigError("bus.url", "has no host to attach a password to")
    userinfo, _, host = parts.netloc.rpartition("@")
    user = userinfo.partition(":")[0]  # kept as written (already percent-encoded)
    netloc = f"{user}:{quote(password, safe='')}@{host}"
    return urlunsplit(parts._replace(netloc=netloc))

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

# Marks a string field as a filesystem path: the loader resolves a relative
# value against the project root (never the current directory).
PATH_MARK = "mailactors_path"

PosInt = Annotated[int, Meta(ge=1)]
NonNegInt = Annotated[int, Meta(ge=0)]
Port = Annotated[int, Meta(ge=0, le=65535)]
PosFloat = Annotated[float, Meta(gt=0)]
NonNegFloat = Annotated[float, Meta(ge=0)]
Fraction = Annotated[float, Meta(ge=0, le=1)]
PathStr = Annotated[str, Meta(extra={PATH_MARK: True})]
# A path the services write: a relative value is resolved against service.data_dir, so
# that moving data_dir moves everything they write.
DataPathStr = Annotated[str, Meta(extra={PATH_MARK: "data"})]
EnvName = Annotated[str, Meta(pattern=r"^([A-Za-z_][A-Za-z0-9_]*)?$")]
NonEmptyStr = Annotated[str, Meta(min_length=1)]

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]

_SECRET_NAMES = ("password", "token", "secret", "api_key")


def _redact_value(name: str, value: Any) -> Any:
    """Hide what could be a secret in a field called ``name`` (for display only)."""
    if isinstance(value, str):
        if name == "url" or name.endswith("_url"):
            return redact_url(value)
        if name in _SECRET_NAMES and value:
            return "***"
    return value


class _Section(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Base of every section: frozen, strict, and a repr that never shows secrets."""

    def __repr__(self) -> str:
        parts = ", ".join(
            f"{name}={_redact_value(name, getattr(self, name))!r}"
            for name in self.__struct_fields__
        )
        return f"{type(self).__name__}({parts})"

    def __rich_repr__(self) -> list[tuple[str, Any]]:
        return [(name, _redact_value(name, getattr(self, name))) for name in self.__struct_fields__]


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


class EmailServerConfig(_Section, frozen=True):
    workers: PosInt = 1
    concurrency: PosInt = 16
    idempotency_path: DataPathStr = "sent.sqlite3"
    report_sending: bool = False  # publish SENDING when a sender hands an email to the provider
    claims_index: Annotated[str, Meta(pattern=r"^[a-z0-9][a-z0-9_.-]{0,200}$")] = "email-claims"
    claim_lease_s: PosFloat = 60.0  # a dead owner's claim is taken over after this
    claim_recheck_s: PosFloat = 1.0  # a copy of an email claimed elsewhere looks again after this
    claims_batch_ms: NonNegFloat = 5.0
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


class TemplatesConfig(_Section, frozen=True):
    dir: PathStr = "templates"


class MetricsConfig(_Section, frozen=True):
    host: NonEmptyStr = "127.0.0.1"
    port: Port = 0  # 0 = no metrics endpoint


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
    templates: TemplatesConfig = msgspec.field(default_factory=TemplatesConfig)
    metrics: MetricsConfig = msgspec.field(default_factory=MetricsConfig)
    control: ControlConfig = msgspec.field(default_factory=ControlConfig)
    # Set by the loader (the profile file it read); not accepted from TOML or env.
    profile: str = ""

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

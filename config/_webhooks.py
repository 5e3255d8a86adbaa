"""The ``[webhooks]`` and ``[unsubscribe]`` sections: events out to the user's systems.

Secrets (each endpoint's signing secret, the unsubscribe token key) are named by
``*_env`` / ``*_file`` like every other secret, and fetched when needed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated
from urllib.parse import urlsplit

from msgspec import Meta

from ._errors import ConfigError
from ._secrets import resolve_secret
from ._types import EnvName, Fraction, NonNegFloat, PathStr, PosFloat, PosInt, Section

_EndpointName = Annotated[str, Meta(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")]
_QueueName = Annotated[str, Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,100}$")]


class WebhookEndpointConfig(Section, frozen=True):
    """One receiver: where, which events, and the secret its deliveries are signed with."""

    name: _EndpointName  # in metrics, logs, the CLI and queue names
    url: str
    statuses: tuple[str, ...] = ()  # status names (SENT, BOUNCED, ...); () = every status
    categories: tuple[str, ...] = ()  # () = every category
    secret_env: EnvName = ""
    secret_file: PathStr = ""
    timeout_s: PosFloat = 10.0
    concurrency: PosInt = 4

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"url must be an http(s):// URL with a host, got {self.url!r}")
        if parts.username or parts.password:
            raise ValueError("url must not carry a user or password (the signature authenticates)")
        if not (self.secret_env or self.secret_file):
            raise ValueError(f"endpoint {self.name!r} needs secret_env or secret_file")

    def secret(self, env: Mapping[str, str] | None = None) -> str:
        value = resolve_secret(
            env_var=self.secret_env, file=self.secret_file, env=env,
            key=f"webhooks.endpoints[{self.name}].secret",
        )  # fmt: skip
        if value is None:  # __post_init__ requires a source; resolve_secret raises if empty
            raise ConfigError(f"webhooks.endpoints[{self.name}].secret", "not configured")
        return value


class WebhooksConfig(Section, frozen=True):
    enabled: bool = False
    endpoints: tuple[WebhookEndpointConfig, ...] = ()
    allow_private: bool = False  # deliver to loopback/private/link-local addresses (tests, LANs)
    ca_file: PathStr = ""  # CA bundle the endpoints' certificates are checked with; "" = certifi's
    max_age_s: PosFloat = 86400.0  # a delivery still failing after this is given up (failed)
    base_delay_s: PosFloat = 1.0  # first retry after about this; doubles each time
    max_delay_s: PosFloat = 3600.0
    jitter: Fraction = 0.5  # each delay is shortened by up to this fraction, at random
    breaker_failures: PosInt = 5  # consecutive failures of one endpoint that open its breaker
    breaker_cool_down_s: NonNegFloat = 30.0
    outbox_path: PathStr = "var/webhooks.sqlite3"  # embedded: the outbox table lives here
    queue_prefix: _QueueName = "webhooks"  # distributed: RabbitMQ queues <prefix>.<endpoint>...

    def __post_init__(self) -> None:
        names = [e.name for e in self.endpoints]
        if len(set(names)) != len(names):
            raise ValueError(f"endpoint names must be unique, got {names}")
        if self.base_delay_s > self.max_delay_s:
            raise ValueError("base_delay_s must not be larger than max_delay_s")


class UnsubscribeConfig(Section, frozen=True):
    """RFC 8058 one-click unsubscribe for the categories that are not transactional."""

    categories: tuple[str, ...] = ()  # categories whose emails carry List-Unsubscribe
    secret_env: EnvName = ""  # HMAC key of the tokens
    secret_file: PathStr = ""
    token_ttl_s: PosFloat = 90 * 86400.0  # a link works this long after the email was sent
    mailto_domain: str = ""  # unsubscribe+TOKEN@<this>; "" = the sender's domain

    def __post_init__(self) -> None:
        if self.categories and not (self.secret_env or self.secret_file):
            raise ValueError("unsubscribe.categories needs secret_env or secret_file")

    def secret(self, env: Mapping[str, str] | None = None) -> str | None:
        return resolve_secret(
            env_var=self.secret_env, file=self.secret_file, env=env, key="unsubscribe.secret"
        )

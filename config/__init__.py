"""Typed configuration: TOML profiles, environment overrides, secrets kept out of values.

``load_config("embedded")`` reads ``config/embedded.toml``, applies the
``MAILACTORS__SECTION__KEY`` environment variables, checks every key and returns
a frozen ``Config`` (``cfg.store.batch_size``...). Secrets are fetched when needed
(``cfg.provider.smtp.password()``), and ``repr(cfg)`` shows URLs as ``user:***@host``.
"""

from ._errors import ConfigError
from ._exposure import is_loopback
from ._load import ENV_PREFIX, PROFILE_DIR, PROJECT_ROOT, load_config, profile_names, profile_path
from ._model import (
    DEFAULT_ATTACHMENT_TYPES,
    ApiConfig,
    BouncesConfig,
    BreakerConfig,
    BusConfig,
    ChainEntryConfig,
    Config,
    ControlConfig,
    DkimConfig,
    DkimDomainConfig,
    EmailServerConfig,
    FeedbackConfig,
    GrpcConfig,
    HttpConfig,
    LimitsConfig,
    MetricsConfig,
    ProviderConfig,
    RetryConfig,
    ServiceConfig,
    SesConfig,
    SmtpConfig,
    SnsConfig,
    StoreConfig,
    SweeperConfig,
    TemplatesConfig,
    ThrottleConfig,
)
from ._secrets import redact_url, resolve_secret
from ._webhooks import UnsubscribeConfig, WebhookEndpointConfig, WebhooksConfig

__all__ = [
    "DEFAULT_ATTACHMENT_TYPES",
    "ENV_PREFIX",
    "PROFILE_DIR",
    "PROJECT_ROOT",
    "BouncesConfig",
    "ApiConfig",
    "BreakerConfig",
    "BusConfig",
    "ChainEntryConfig",
    "Config",
    "ConfigError",
    "ControlConfig",
    "DkimConfig",
    "DkimDomainConfig",
    "EmailServerConfig",
    "FeedbackConfig",
    "GrpcConfig",
    "HttpConfig",
    "LimitsConfig",
    "MetricsConfig",
    "ProviderConfig",
    "RetryConfig",
    "ServiceConfig",
    "SesConfig",
    "SnsConfig",
    "SmtpConfig",
    "StoreConfig",
    "SweeperConfig",
    "TemplatesConfig",
    "ThrottleConfig",
    "UnsubscribeConfig",
    "WebhookEndpointConfig",
    "WebhooksConfig",
    "load_config",
    "profile_names",
    "profile_path",
    "redact_url",
    "resolve_secret",
    "is_loopback",
]

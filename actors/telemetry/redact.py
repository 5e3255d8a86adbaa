"""Secrets never reach a log line, whatever code wrote it.

Our own code never logs a secret, but a library's exception can carry one
(a broker URL with its password in a connection error, an ``Authorization``
header in a repr). So the log handler's formatter passes every finished line
(message, ``extra`` fields, traceback) through :func:`redact`, which hides:

* the password of any ``scheme://user:password@host`` URL;
* any ``Bearer <token>``;
* every secret value this process resolved from its configuration
  (:func:`register_config_secrets`: SMTP, store and broker passwords, the
  gRPC and control tokens, an Elasticsearch API key).
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Iterable
from urllib.parse import unquote, urlsplit

from config import Config, ConfigError

__all__ = ["RedactingFormatter", "add_secrets", "redact", "register_config_secrets"]

MASK = "***"
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s\"']*):[^@/\s\"']+@")
_BEARER = re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=-]+")
_MIN_SECRET = 4  # shorter values would mask ordinary words

_lock = threading.Lock()
_secrets: set[str] = set()
_pattern: re.Pattern[str] | None = None


def add_secrets(values: Iterable[str | None]) -> None:
    """Hide these values from every log line from now on."""
    global _pattern
    with _lock:
        for value in values:
            if value and len(value) >= _MIN_SECRET:
                _secrets.add(value)
                escaped = json.dumps(value)[1:-1]  # as it appears in a JSON log line
                if escaped != value:
                    _secrets.add(escaped)
        if _secrets:
            alternatives = sorted(_secrets, key=len, reverse=True)
            _pattern = re.compile("|".join(re.escape(v) for v in alternatives))


def redact(text: str) -> str:
    text = _URL_PASSWORD.sub(rf"\g<head>:{MASK}@", text)
    text = _BEARER.sub(rf"\g<1>{MASK}", text)
    pattern = _pattern
    if pattern is not None:
        text = pattern.sub(MASK, text)
    return text


def _try(fn: object) -> str | None:
    try:
        value = fn()  # type: ignore[operator]
    except (ConfigError, OSError):
        return None
    return value if isinstance(value, str) else None


def _url_password(url: str | None) -> str | None:
    if not url:
        return None
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.password is None or parts.password == parts.username:
        return None  # guest:guest: masking "guest" everywhere would hide the user too
    return unquote(parts.password)


def register_config_secrets(config: Config) -> None:
    """Register every secret ``config`` can resolve in this process (missing ones are skipped)."""
    values = [
        _try(config.provider.smtp.password),
        _try(config.grpc.token),
        _try(config.store.password),
        _try(config.store.api_key),
        _try(config.bounces.secret),  # the VERP key (actors.feedback.verp)
        _try(config.bounces.previous_secret),
        _url_password(_try(config.bus.resolved_url)),
        _url_password(_try(config.store.resolved_url)),
    ]
    control = getattr(config, "control", None)
    if control is not None:
        values.append(_try(control.token))
    # Webhook signing secrets and the unsubscribe token key (issue 19).
    values += [_try(e.secret) for e in config.webhooks.endpoints]
    values.append(_try(config.unsubscribe.secret))
    add_secrets(values)


class RedactingFormatter(logging.Formatter):
    """Formats with ``inner``, then hides secrets in the finished line."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        return redact(self.inner.format(record))

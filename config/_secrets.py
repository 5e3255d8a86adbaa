"""Secrets come from the environment or from files, never from a profile's values."""

from __future__ import annotations

import os
from collections.abc import Mapping
from urllib.parse import urlsplit, urlunsplit

from ._errors import ConfigError


def resolve_secret(
    *,
    env_var: str = "",
    file: str | os.PathLike[str] = "",
    env: Mapping[str, str] | None = None,
    key: str = "secret",
) -> str | None:
    """Fetch a secret from the variable ``env_var`` of ``env`` or, failing that, ``file``.

    Returns None when neither source is configured (the secret is optional and
    off). A source that is configured but empty or missing is a ConfigError rather
    than a silent None, so that "auth on, token missing" never becomes "auth off".
    The error names the variable or file, never a value.
    """
    environ = os.environ if env is None else env
    if env_var:
        value = environ.get(env_var)
        if value:
            return value
        if not file:
            raise ConfigError(key, f"environment variable {env_var} is not set")
    if file:
        try:
            with open(file, encoding="utf-8") as f:
                value = f.read().rstrip("\r\n")
        except OSError as exc:
            raise ConfigError(
                key, f"cannot read secret file {os.fspath(file)!r}: {exc.strerror}"
            ) from None
        if not value:
            raise ConfigError(key, f"secret file {os.fspath(file)!r} is empty")
        return value
    return None


def redact_url(url: str) -> str:
    """``amqp://guest:guest@host/`` -> ``amqp://guest:***@host/``; other URLs unchanged."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "***"
    userinfo, at, host = parts.netloc.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    user = userinfo.partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))

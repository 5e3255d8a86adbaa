"""Reaching a running system's HTTP endpoint from tests."""

from __future__ import annotations

from typing import Any

__all__ = ["http_config", "http_url"]


def http_config(**fields: Any) -> dict[str, Any]:
    """An ``[http]`` section that is on, on loopback, on a free port (port 0)."""
    return {"enabled": True, "host": "127.0.0.1", "port": 0, **fields}


def http_url(app: Any) -> str:
    """The base URL the embedded system's HTTP server reports (``[http]`` port 0 picks one)."""
    extra = app.system.snapshot().by_path()["http"].extra or {}
    url = extra["url"]
    assert isinstance(url, str)
    return url

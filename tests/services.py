"""Find or start the real services the integration tests need.

The finding and starting lives in ``actors/localservices.py`` (``supervisor.py
soak`` uses it too); this module adds what only tests need: :func:`missing`,
which the pytest fixtures in ``conftest.py`` use to turn a
:class:`ServiceMissing` into a skip, or into a failure when
``REQUIRE_SERVICES=1`` (CI).
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

from actors.localservices import (
    Service,
    ServiceMissing,
    docker_available,
    elasticsearch_service,
    free_port,
    http_ok,
    rabbitmq_service,
    start_noida_elasticsearch,
    tcp_open,
)

__all__ = [
    "Service",
    "ServiceMissing",
    "docker_available",
    "elasticsearch_service",
    "free_port",
    "http_ok",
    "missing",
    "rabbitmq_service",
    "start_noida_elasticsearch",
    "tcp_open",
]


def missing(reason: str) -> NoReturn:
    """Skip the test, or fail it when REQUIRE_SERVICES=1 (so CI never skips silently)."""
    if os.environ.get("REQUIRE_SERVICES") == "1":
        pytest.fail(f"REQUIRE_SERVICES=1 but {reason}", pytrace=False)
    pytest.skip(reason)

"""Find or start the real services the integration tests need.

The finding and starting lives in ``actors/testing/localservices.py`` (``supervisor.py
soak`` uses it too); this module adds what only tests need: :func:`missing`,
which the pytest fixtures in ``conftest.py`` use to turn a
:class:`ServiceMissing` into a skip, or into a failure when
``REQUIRE_SERVICES=1`` (CI).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import NoReturn
from urllib.parse import urlsplit

import pytest

from actors.testing.localservices import (
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
    "close_connections_of",
    "docker_available",
    "elasticsearch_service",
    "free_port",
    "http_ok",
    "local_broker_ctl",
    "missing",
    "rabbitmq_service",
    "rabbitmqctl",
    "start_noida_elasticsearch",
    "tcp_open",
]


def missing(reason: str) -> NoReturn:
    """Skip the test, or fail it when REQUIRE_SERVICES=1 (so CI never skips silently)."""
    if os.environ.get("REQUIRE_SERVICES") == "1":
        pytest.fail(f"REQUIRE_SERVICES=1 but {reason}", pytrace=False)
    pytest.skip(reason)


LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def local_broker_ctl(amqp_url: str, why: str) -> str:
    """The path of ``rabbitmqctl`` for the broker behind ``amqp_url``, or :func:`missing`.

    Some tests act on the broker itself (a user of their own, a restart, a
    connection closed under a worker): they need the broker on this machine and
    its ``rabbitmqctl``. The URL is parsed, not compared as a string, so
    ``amqp://guest:guest@localhost:5672/`` counts as local like ``127.0.0.1``.
    """
    host = urlsplit(amqp_url).hostname or ""
    if host not in LOOPBACK:
        missing(f"{why}: needs this machine's broker, not {host!r}")
    ctl = shutil.which("rabbitmqctl") or (
        "/usr/sbin/rabbitmqctl" if Path("/usr/sbin/rabbitmqctl").exists() else None
    )
    if ctl is None:
        missing(f"{why}: rabbitmqctl is not installed")
    return ctl


def rabbitmqctl(ctl: str, *args: str, timeout: float = 60.0) -> str:
    """Run ``rabbitmqctl -q ARGS`` (blocking: call it from a thread in async tests)."""
    done = subprocess.run(
        [ctl, "-q", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if done.returncode != 0:
        raise AssertionError(f"rabbitmqctl {' '.join(args)}: {done.returncode} {done.stderr}")
    return done.stdout


def close_connections_of(ctl: str, pid: int) -> int:
    """Close, from the broker side, every AMQP connection that process ``pid`` opened.

    Others may be using the broker (and the services all name their connections
    ``mailactors-<role>``), so a connection is matched by its client port, one of
    the ports ``pid`` holds now. Returns how many were closed.
    """
    from tests.support.processes import tcp_local_ports

    ports = tcp_local_ports(pid)
    closed = 0
    for line in rabbitmqctl(ctl, "-s", "list_connections", "pid", "peer_port").splitlines():
        erlang_pid, _, peer_port = line.partition("\t")
        if peer_port.strip().isdigit() and int(peer_port) in ports:
            rabbitmqctl(ctl, "close_connection", erlang_pid, "test: connection dropped during DATA")
            closed += 1
    return closed

"""Shared fixtures: the runtime's test kit, and the real services the edges need."""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from runtime import AsyncioEdge, open_asyncio_edge
from runtime.testing import actor_system  # noqa: F401  (fixture)
from tests.support.services import (
    Service,
    ServiceMissing,
    elasticsearch_service,
    missing,
    rabbitmq_service,
)
from tests.support.ses_servers import _moto_server, aws_env, moto_ses  # noqa: F401  (fixtures)

# REQUIRE_SERVICES=1 fails a run that skips anything (tests/support/require_services.py).
pytest_plugins = ["tests.support.require_services"]


# -- real services (tests/support/services.py finds or starts them) -----------------------


def _service_url(start: Callable[[], Service]) -> Iterator[str]:
    """The URL of the service *start* finds or starts (missing: a skip, or a failure in
    CI), stopped again after the session."""
    try:
        service = start()
    except ServiceMissing as exc:
        missing(str(exc))
    try:
        yield service.url
    finally:
        service.stop()


@pytest.fixture(scope="session")
def elasticsearch_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An Elasticsearch API for the session: $ELASTICSEARCH_URL, Docker, or noida-db."""
    yield from _service_url(lambda: elasticsearch_service(tmp_path_factory.mktemp("elasticsearch")))


@pytest.fixture
def elasticsearch_index() -> str:
    """A fresh index name per test, so tests never see each other's documents."""
    return f"test-emails-{uuid.uuid4().hex}"


@pytest.fixture(scope="session")
def rabbitmq_url() -> Iterator[str]:
    """A RabbitMQ broker for the session: $RABBITMQ_URL, local, rabbitmq-server, or Docker."""
    yield from _service_url(rabbitmq_service)


@pytest.fixture
async def edge() -> AsyncIterator[AsyncioEdge]:
    async with open_asyncio_edge() as e:
        yield e


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory with a short path, for Unix sockets (a socket path must stay under 108
    bytes; pytest's tmp_path can be longer)."""
    path = Path(tempfile.mkdtemp(prefix="ma-"))
    try:
        yield path
    finally:
        shutil.rmtree(path)

"""Find or start the real servers the distributed profile needs on this machine.

Used by the tests (``tests/support/services.py``, ``tests/conftest.py``) and by
``supervisor.py soak``. Each ``*_service()`` function tries, in order: an address
given in the environment; something already listening on this machine
(RabbitMQ); a container when a Docker engine answers (testcontainers); a local
server started for the purpose. It returns a :class:`Service` whose ``stop()``
undoes only what it started, or raises :class:`ServiceMissing` saying what it
tried.

These helpers are synchronous: call them before a Trio loop, or in a thread.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

__all__ = [
    "Service",
    "ServiceMissing",
    "docker_available",
    "elasticsearch_service",
    "free_port",
    "http_ok",
    "noida_argv",
    "port_taken",
    "rabbitmq_service",
    "start_noida_elasticsearch",
    "tcp_open",
]

ELASTICSEARCH_IMAGE = os.environ.get("ELASTICSEARCH_IMAGE", "elasticsearch:9.1.0")
RABBITMQ_IMAGE = os.environ.get("RABBITMQ_IMAGE", "rabbitmq:3.13")
DEFAULT_RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672/"


class ServiceMissing(Exception):
    """No way to reach or start the service here; the message says what was tried."""


@dataclass
class Service:
    url: str
    how: str  # "env", "local", "docker", "noida-db", "rabbitmq-server": for reports
    stop: Callable[[], None] = field(default=lambda: None)


# -- probes ----------------------------------------------------------------------


def free_port() -> int:
    """A TCP port nothing listens on right now (the usual small race applies)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def port_taken(port: int = 0) -> Iterator[int]:
    """A loopback ``port`` (0: a free one) that something listens on for the block: its
    number, for tests of what a server does when its port is in use."""
    with socket.socket() as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # even in TIME_WAIT
        holder.bind(("127.0.0.1", port))
        holder.listen()
        yield int(holder.getsockname()[1])


def tcp_open(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def http_ok(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            status: int = resp.status
            return status == 200
    except (OSError, urllib.error.URLError):
        return False


def docker_available() -> bool:
    """True when ``docker info`` reaches an engine (a client alone is not enough)."""
    docker = shutil.which("docker")
    if docker is None:
        return False
    try:
        done = subprocess.run([docker, "info"], capture_output=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def _wait(ready: Callable[[], bool], timeout: float, alive: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return True
        if not alive():
            return False
        time.sleep(0.2)
    return ready()


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# -- Elasticsearch ---------------------------------------------------------------


def elasticsearch_service(work_dir: Path) -> Service:
    """ELASTICSEARCH_URL, else a real Elasticsearch in Docker, else noida-db."""
    url = os.environ.get("ELASTICSEARCH_URL")
    if url:
        return Service(url.rstrip("/"), "env")
    tried: list[str] = []
    if docker_available():
        try:
            return _elasticsearch_container()
        except Exception as exc:  # any failure here means: try the next way
            tried.append(f"docker ({ELASTICSEARCH_IMAGE}): {exc}")
    else:
        tried.append("docker: no engine answers `docker info`")
    try:
        return start_noida_elasticsearch(work_dir)
    except ServiceMissing as exc:
        tried.append(str(exc))
    raise ServiceMissing("no Elasticsearch API: " + "; ".join(tried))


def _elasticsearch_container() -> Service:
    from testcontainers.community.elasticsearch import ElasticSearchContainer

    container = ElasticSearchContainer(ELASTICSEARCH_IMAGE, mem_limit="2G")
    container.with_env("ES_JAVA_OPTS", "-Xms512m -Xmx512m")
    container.start()
    host = container.get_container_host_ip()
    port = container.get_exposed_port(container.port)
    return Service(f"http://{host}:{port}", "docker", container.stop)


def _noida_executable() -> str | None:
    beside = Path(sys.executable).parent / "noida-db"
    if beside.is_file():
        return str(beside)
    return shutil.which("noida-db")


def noida_argv(exe: str, port: int, data_dir: Path) -> list[str]:
    """The command line of noida-db serving only its Elasticsearch API on 127.0.0.1:``port``."""
    return [exe, "start", "--only", "elasticsearch", "--host", "127.0.0.1",
            "--elasticsearch-port", str(port), "--data-dir", str(data_dir)]  # fmt: skip


def start_noida_elasticsearch(
    work_dir: Path, timeout: float = 30.0, port: int | None = None
) -> Service:
    """Run ``noida-db start --only elasticsearch`` in the foreground as a child.

    noida-db's ``start`` is a Python wrapper that runs the real binary as its own
    child, so it gets a new session (process group): the fallback stop signals
    the whole group. The normal stop is ``noida-db down --data-dir DIR``, which
    shuts the server down cleanly (it also works on a foreground ``start``).
    The "GLIBC_2.39 not found" line the binary prints on stderr is harmless.
    """
    exe = _noida_executable()
    if exe is None:
        raise ServiceMissing("noida-db: not installed (pip install noida-db)")
    data_dir = work_dir / "noida-data"
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = work_dir / "noida.out"
    log: IO[Any] = open(log_path, "ab")  # closed in stop(); appended to across restarts
    port = port or free_port()
    proc = subprocess.Popen(
        noida_argv(exe, port, data_dir),
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"

    def stop() -> None:
        try:
            if proc.poll() is None:
                with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                    subprocess.run(
                        [exe, "down", "--data-dir", str(data_dir)],
                        capture_output=True,
                        timeout=15,
                        check=False,
                    )
                _end_group(proc)
        finally:
            log.close()

    if not _wait(lambda: http_ok(url + "/"), timeout, lambda: proc.poll() is None):
        stop()
        raise ServiceMissing(
            f"noida-db did not answer on {url} within {timeout:.0f}s"
            f" (exit code {proc.returncode}); its output:\n{_tail(log_path)}"
        )
    return Service(url, "noida-db", stop)


def _end_group(proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """Wait for ``proc``; then Ctrl-C its process group; then kill it."""
    for sig in (None, signal.SIGINT, signal.SIGKILL):
        if sig is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


# -- RabbitMQ --------------------------------------------------------------------


def rabbitmq_service(timeout: float = 60.0) -> Service:
    """RABBITMQ_URL, else the broker on 127.0.0.1:5672, else ``rabbitmq-server
    -detached``, else a container when a Docker engine answers."""
    url = os.environ.get("RABBITMQ_URL")
    if url:
        return Service(url, "env")
    if tcp_open("127.0.0.1", 5672):
        return Service(DEFAULT_RABBITMQ_URL, "local")
    tried = ["nothing listens on 127.0.0.1:5672"]
    server = shutil.which("rabbitmq-server") or (
        "/usr/sbin/rabbitmq-server" if Path("/usr/sbin/rabbitmq-server").is_file() else None
    )
    if server is not None:
        try:
            return _start_rabbitmq_server(server, timeout)
        except ServiceMissing as exc:
            tried.append(str(exc))
    else:
        tried.append("rabbitmq-server: not installed")
    if docker_available():
        try:
            return _rabbitmq_container(timeout)
        except Exception as exc:  # any failure here means: report what was tried
            tried.append(f"docker ({RABBITMQ_IMAGE}): {exc}")
    else:
        tried.append("docker: no engine answers `docker info`")
    raise ServiceMissing("no RabbitMQ: " + "; ".join(tried))


def _start_rabbitmq_server(server: str, timeout: float) -> Service:
    try:
        subprocess.run([server, "-detached"], capture_output=True, timeout=30, check=True)
    except (OSError, subprocess.SubprocessError) as exc:
        raise ServiceMissing(f"rabbitmq-server -detached: {exc}") from exc
    if not _wait(lambda: tcp_open("127.0.0.1", 5672), timeout, lambda: True):
        raise ServiceMissing(f"rabbitmq-server -detached: no listener on 5672 after {timeout}s")
    ctl = shutil.which("rabbitmqctl") or str(Path(server).with_name("rabbitmqctl"))
    # The port opens a moment before the broker accepts logins; wait for it properly.
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        subprocess.run(
            [ctl, "await_startup", "--timeout", str(int(timeout))],
            capture_output=True,
            timeout=timeout + 5,
            check=False,
        )

    # Left running on purpose: on these machines the broker is a shared service that
    # other runs (and restart tests, which briefly close its port) rely on.
    return Service(DEFAULT_RABBITMQ_URL, "rabbitmq-server")


def _rabbitmq_container(timeout: float) -> Service:
    # testcontainers' RabbitMqContainer needs pika for its probe; a generic
    # container and a log line need nothing.
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.waiting_utils import wait_for_logs

    container = DockerContainer(RABBITMQ_IMAGE).with_exposed_ports(5672)
    container.start()
    try:
        wait_for_logs(container, "Server startup complete", timeout=timeout)
    except BaseException:
        container.stop()
        raise
    host = container.get_container_host_ip()
    port = container.get_exposed_port(5672)
    return Service(f"amqp://guest:guest@{host}:{port}/", "docker", container.stop)

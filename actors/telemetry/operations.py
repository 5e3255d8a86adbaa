"""Operating a running service: its control endpoint and its metrics endpoint.

``open_operations(system, config, "email-server", bus=bus, metrics=metrics)``
runs, for as long as the block lasts:

* the control endpoint (``runtime.ControlEndpoint``) on a Unix socket
  ``<service.run_dir>/<instance>.sock`` (mode 0600) and, if ``control.port``
  is set, on TCP with a token. Its snapshot answer carries what the console
  shows beyond the runtime's tree: the broker's queue depths, the metrics URL;
  its dead letters include the broker's dead-letter queue; ``metrics`` answers the
  chart's samples (``EmailMetrics.chart_samples``);
* the Prometheus endpoint (``metrics.port``; 0 = off), served by
  prometheus-client in its own thread.

An *instance* is one process of a service: ``integration``, ``auth``,
``email-server-0`` .. ``email-server-N`` (the launcher gives each worker its
index in ``MAILACTORS_WORKER``), or ``embedded``. Several instances of one
service on one machine need distinct ports: each listens on the configured
port plus :data:`PORT_OFFSETS` of its service plus its worker index.
"""

from __future__ import annotations

import errno
import json
import logging
import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import msgspec
import trio
from prometheus_client import start_http_server
from prometheus_client.core import CollectorRegistry
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from actors.telemetry.metrics import EmailMetrics, Observation, SystemCollector
from config import Config, ConfigError
from runtime import ActorSystem, ControlEndpoint, serve_control_tcp, serve_control_unix

log = logging.getLogger("mailactors.operations")

WORKER_ENV = "MAILACTORS_WORKER"
# Added to metrics.port and control.port, so that the processes of the
# distributed profile never collide: integration, auth, email-server-0, -1, ...
PORT_OFFSETS = {"embedded": 0, "integration": 0, "auth": 1, "email-server": 2}
# The one process of a deployment that exports the broker's queue depths as metrics.
QUEUE_DEPTH_EXPORTERS = ("embedded", "integration")
QUEUE_DEPTHS_MAX_AGE = 1.0  # seconds a queue-depth reading is reused
QUEUE_DEPTHS_TIMEOUT = 3.0
QUEUE_DEPTHS_RETRY = 5.0  # after a failed reading

__all__ = [
    "PORT_OFFSETS",
    "WORKER_ENV",
    "Operations",
    "instance_name",
    "instance_port",
    "open_operations",
    "worker_index",
]


def worker_index(env: Mapping[str, str] | None = None) -> int | None:
    """This process's worker index (``MAILACTORS_WORKER``), None when not a numbered worker."""
    value = (os.environ if env is None else env).get(WORKER_ENV, "")
    if not value:
        return None
    try:
        index = int(value)
    except ValueError:
        raise ConfigError(WORKER_ENV, f"expected an integer >= 0, got {value!r}") from None
    if index < 0:
        raise ConfigError(WORKER_ENV, f"expected an integer >= 0, got {value!r}")
    return index


def instance_name(service: str, worker: int | None) -> str:
    return service if worker is None else f"{service}-{worker}"


def instance_port(base: int, service: str, worker: int | None) -> int:
    """The port this instance listens on, given the configured one (0 stays 0: off)."""
    if base == 0:
        return 0
    port = base + PORT_OFFSETS.get(service, 0) + (worker or 0)
    if port > 65535:
        raise ConfigError("metrics.port", f"{base} + offset for {service} exceeds 65535")
    return port


class Operations:
    """What the operations endpoints of one service instance know and serve."""

    def __init__(
        self,
        system: ActorSystem,
        config: Config,
        service: str,
        *,
        bus: Any = None,
        metrics: EmailMetrics | None = None,
        worker: int | None = None,
    ) -> None:
        self.system = system
        self.config = config
        self.service = service
        self.worker = worker
        self.instance = instance_name(service, worker)
        self.bus = bus
        self.metrics = metrics
        self.socket_path: str | None = None
        self.control_port: int | None = None
        self.metrics_port: int | None = None
        self._queues: dict[str, int] | None = None
        self._queues_error: str | None = None
        self._queues_at = -float("inf")
        self._queues_lock = trio.Lock()
        self.endpoint = ControlEndpoint(
            system, name=self.instance, info=self.info, dead_letters=self.bus_dead_letters,
            commands={"metrics": metrics.chart_samples} if metrics is not None else None,
        )

    # -- what the bus can tell ----------------------------------------------------

    @property
    def dead_letter_queue(self) -> str | None:
        if self.bus is None:
            return None
        if callable(getattr(self.bus, "queue_depths", None)):
            return str(self.config.bus.dead_letter_queue)
        return "dead" if hasattr(self.bus, "depths") else None

    async def queue_depths(self) -> dict[str, int] | None:
        """Ready messages per bus queue, read at most once a second; None without a bus.

        RabbitMQ: one passive declare per queue (``RabbitBus.queue_depths``).
        The in-process bus: its two channels and its dead letters (as ``dead``).
        """
        bus = self.bus
        if bus is None:
            await trio.lowlevel.checkpoint()
            return None
        async with self._queues_lock:
            if trio.current_time() - self._queues_at < QUEUE_DEPTHS_MAX_AGE:
                return self._queues
            try:
                if callable(getattr(bus, "queue_depths", None)):
                    with trio.fail_after(QUEUE_DEPTHS_TIMEOUT):
                        depths = dict(await bus.queue_depths())
                elif callable(getattr(bus, "depths", None)):
                    depths = dict(bus.depths())
                    depths["dead"] = len(getattr(bus, "dead_letters", ()))
                else:
                    depths = None
                self._queues, self._queues_error = depths, None
                self._queues_at = trio.current_time()
            except Exception as exc:  # the broker is down: say so, keep serving
                self._queues, self._queues_error = None, f"{type(exc).__name__}: {exc}"
                # Ask again in a few seconds, not at every refresh or scrape.
                self._queues_at = trio.current_time() + QUEUE_DEPTHS_RETRY - QUEUE_DEPTHS_MAX_AGE
            return self._queues

    async def bus_dead_letters(self, limit: int) -> list[dict[str, object]] | None:
        """Up to ``limit`` messages of the bus's dead-letter queue (left in place)."""
        bus = self.bus
        if bus is None or limit == 0:
            await trio.lowlevel.checkpoint()
            return None
        source = getattr(bus, "dead_letters", None)
        if callable(source):
            letters = [(d.queue, d.body, d.reason) for d in await source(limit)]
        elif isinstance(source, list):
            await trio.lowlevel.checkpoint()
            letters = list(source[-limit:])
        else:
            await trio.lowlevel.checkpoint()
            return None
        return [
            {"queue": q, "reason": reason, "eventId": _event_id_of(body), "body": _preview(body)}
            for q, body, reason in letters
        ]

    # -- answers ------------------------------------------------------------------

    async def info(self) -> dict[str, object]:
        queues = await self.queue_depths()
        host = self.config.metrics.host
        out: dict[str, object] = {
            "service": self.service,
            "worker": self.worker,
            "profile": self.config.profile,
            "control": {"socket": self.socket_path, "tcp_port": self.control_port},
            "metrics": f"http://{host}:{self.metrics_port}/metrics" if self.metrics_port else None,
            "queues": queues,
            "dead_letter_queue": self.dead_letter_queue,
        }
        if self._queues_error is not None:
            out["queues_error"] = self._queues_error
        statistics = getattr(self.bus, "statistics", None)
        if callable(statistics):
            out["bus"] = msgspec.to_builtins(statistics(), enc_hook=repr)
        return out

    async def observe(self) -> Observation:
        """Everything one metrics scrape needs (runs in the Trio thread).

        The broker's queue depths are the same seen from every process: one process
        exports them (QUEUE_DEPTH_EXPORTERS), so that sum() over processes is right."""
        queues = await self.queue_depths() if self.service in QUEUE_DEPTH_EXPORTERS else None
        return Observation(
            self.system.snapshot(), self.system.intake.statistics(), queues, self.dead_letter_queue
        )

    # -- serving ------------------------------------------------------------------

    def _socket_dir(self) -> Path:
        run_dir = Path(self.config.service.run_dir)
        run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        return run_dir

    async def _serve_unix(self, nursery: trio.Nursery) -> None:
        run_dir = self._socket_dir()
        candidates = [
            run_dir / f"{self.instance}.sock",
            run_dir / f"{self.instance}-{os.getpid()}.sock",
        ]
        for i, path in enumerate(candidates):
            try:
                self.socket_path = await nursery.start(serve_control_unix, self.endpoint, path)
                return
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE or i == len(candidates) - 1:
                    raise
                log.warning("%s is in use by another process; using %s", path, candidates[i + 1])

    async def _serve_tcp(self, nursery: trio.Nursery) -> None:
        c = self.config.control
        port = instance_port(c.port, self.service, self.worker)
        if not port:
            return
        token = c.token()
        if not token:
            raise ConfigError("control.token", "a TCP control endpoint needs a token")
        self.control_port = await nursery.start(
            serve_control_tcp, self.endpoint, c.host, port, token
        )

    def _start_metrics(self, token: trio.lowlevel.TrioToken) -> Any:
        m = self.config.metrics
        port = instance_port(m.port, self.service, self.worker)
        if not port:
            return None
        metrics = self.metrics or EmailMetrics()
        registry: CollectorRegistry = metrics.registry
        registry.register(SystemCollector(self.instance, self.observe, token))
        for collector in (ProcessCollector, PlatformCollector, GCCollector):
            try:
                collector(registry=registry)
            except ValueError:
                pass  # registered already (a second endpoint on one registry)
        try:
            server, _thread = start_http_server(port, addr=m.host, registry=registry)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:  # told as every port in use is (ops.exits)
                raise OSError(
                    errno.EADDRINUSE,
                    f"error while attempting to bind on address ('{m.host}', {port}): "
                    "address already in use",
                ) from None
            raise ConfigError(
                "metrics.port",
                f"cannot listen on {m.host}:{port} for {self.instance}: {exc.strerror}",
            ) from None
        self.metrics_port = port
        log.info("%s: Prometheus metrics at http://%s:%d/metrics", self.instance, m.host, port)
        return server

    # -- async with: serving for the block's duration ---------------------------

    async def __aenter__(self) -> Operations:
        """Serve the control and metrics endpoints of this process for the block's duration."""
        self._serving = self._serve()
        return await self._serving.__aenter__()

    async def __aexit__(self, *exc_info: Any) -> bool | None:
        return await self._serving.__aexit__(*exc_info)

    @asynccontextmanager
    async def _serve(self) -> AsyncIterator[Operations]:
        # What this process runs with, secrets left out (Config.redacted), for whoever debugs it.
        redacted = json.dumps(self.config.redacted(), default=str)
        log.debug("%s: configuration %s", self.instance, redacted)
        server = None
        try:
            async with trio.open_nursery() as nursery:
                if self.config.control.socket:
                    await self._serve_unix(nursery)
                await self._serve_tcp(nursery)
                server = self._start_metrics(trio.lowlevel.current_trio_token())
                try:
                    yield self
                finally:
                    nursery.cancel_scope.cancel()
        finally:
            if server is not None:
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(server.shutdown)
                server.server_close()


# ``async with open_operations(system, config, service, ...) as ops``: the instance serves
# its endpoints for the block's duration (Operations.__aenter__).
open_operations = Operations


def _event_id_of(body: bytes) -> str | None:
    try:
        data = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return None
    value = data.get("eventId") if isinstance(data, dict) else None
    return value if isinstance(value, str) else None


def _preview(body: bytes, limit: int = 300) -> str:
    text = body[:limit].decode("utf-8", errors="replace")
    return text + ("..." if len(body) > limit else "")

"""Email-server worker processes for the exactly-once tests: each its own state dir.

Each worker is ``supervisor.py --profile distributed run email-server`` with its
own data directory and SQLite file, sharing nothing with the others but
RabbitMQ and the Elasticsearch claims index. A killed worker is started
again (as systemd would) until the harness stops. The test itself plays
integration: it consumes the status queue and publishes send events with a
plain bus client.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import uuid
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path
from typing import Any

import trio

from actors.bus import RabbitBus
from actors.domain.schema import EmailStatusEvent, status_event_decoder
from actors.testing.cluster import (
    Changes,
    ProcessOutput,
    cluster_env,
    delete_topology,
    start,
    stop,
    supervisor_argv,
)
from config import load_config
from tests.support.cluster import event_ids_received as received

__all__ = ["StatusSink", "Workers", "received", "workers_env"]

_READY = re.compile(r"MAILACTORS_READY email-server pid=(\d+)")


def workers_env(
    tmp_path: Path, es_url: str, amqp_url: str, smtp_port: int, **extra: str
) -> dict[str, str]:
    """Names of their own; the claims index too. Each worker's state dir is set per worker."""
    p = f"test.once.{uuid.uuid4().hex[:10]}"
    return cluster_env(
        tmp_path,
        es_url,
        amqp_url,
        smtp_port,
        prefix="test.once",
        extra={
            "MAILACTORS__SERVICE__LOG_LEVEL": "WARNING",
            "MAILACTORS__EMAIL_SERVER__CLAIMS_INDEX": f"claims-{p.replace('.', '-')}",
            **extra,
        },
    )


class Workers(ProcessOutput):
    """N email-server processes; ``kill(i)`` SIGKILLs one, and it is started again."""

    def __init__(
        self,
        env: dict[str, str],
        n: int,
        tmp_path: Path,
        per_worker: dict[int, dict[str, str]] | None = None,
    ) -> None:
        super().__init__()
        self.env = env
        self.n = n
        self.tmp = tmp_path
        self.per_worker = per_worker or {}
        self.pids: dict[int, int] = {}  # worker -> the pid it said it was ready with
        self.procs: dict[int, trio.Process] = {}
        self.stopping = False
        self.restart = True
        self.exits: list[tuple[int, int]] = []

    def worker_env(self, i: int) -> dict[str, str]:
        state = self.tmp / f"worker-{i}"  # its own state: nothing shared on disk
        return {
            **self.env,
            "MAILACTORS__SERVICE__DATA_DIR": str(state),
            "MAILACTORS__SERVICE__RUN_DIR": str(state / "run"),
            "MAILACTORS__EMAIL_SERVER__IDEMPOTENCY_PATH": str(state / "sent.sqlite3"),
            "MAILACTORS_WORKER": str(i),
            **self.per_worker.get(i, {}),
        }

    async def _run_one(self, i: int, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        started = False
        while not self.stopping:
            proc = await start(supervisor_argv("run", "email-server"), self.worker_env(i))
            self.procs[i] = proc
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(
                        self.pump,
                        proc,
                        self.tmp / f"worker-{i}.log",
                        f"[{i}] ",
                        partial(self._note_pid, i),
                    )
                    nursery.start_soon(self.reap, proc)
                    await self.wait_for(
                        lambda p=proc: self.pids.get(i) == p.pid or p.returncode is not None, 60
                    )
                    if not started:
                        started = True
                        task_status.started()
                    await proc.wait()
                self.exits.append((i, proc.returncode))
            finally:
                await stop(proc, 20)
            if not self.restart:
                return

    def _note_pid(self, i: int, line: str) -> None:
        if m := _READY.search(line):
            self.pids[i] = int(m.group(1))

    def kill(self, i: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pids[i], signal.SIGKILL)

    async def _stop_all(self) -> None:
        """Every worker at once: a worker stuck in its stop (a broker restarted by other
        work on the machine) must not hang the test."""
        async with trio.open_nursery() as nursery:
            for proc in self.procs.values():
                nursery.start_soon(stop, proc, 30)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Workers]:
        try:
            async with trio.open_nursery() as nursery:
                for i in range(self.n):
                    await nursery.start(self._run_one, i)
                try:
                    yield self
                finally:
                    self.stopping = True
                    with trio.CancelScope(shield=True):
                        await self._stop_all()
        finally:
            with trio.CancelScope(shield=True), contextlib.suppress(Exception):
                await trio.to_thread.run_sync(delete_topology, self.env)


class StatusSink(Changes):
    """Plays integration: consumes every status event; one per send delivery, in the end."""

    def __init__(self, env: dict[str, str]) -> None:
        super().__init__()
        self.config = load_config("distributed", env=env).bus
        self.bus = RabbitBus(self.config, role="integration", connection_name="test-status-sink")
        self.statuses: list[EmailStatusEvent] = []

    async def run(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            delivery = await self.bus.next_status()
            self.statuses.append(status_event_decoder.decode(delivery.body))
            await delivery.ack()
            self.poke()

    def final(self) -> dict[str, EmailStatusEvent]:
        """The terminal status of each eventId (the first one seen; a repeat says the same)."""
        out: dict[str, EmailStatusEvent] = {}
        for s in self.statuses:
            if s.status.terminal:
                out.setdefault(s.event_id, s)
        return out

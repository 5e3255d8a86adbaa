"""Email-server worker processes for the exactly-once tests: each its own state dir.

Each worker is ``supervisor.py --profile distributed run email-server`` with its
own data directory and SQLite file, sharing nothing with the others but
RabbitMQ and the Elasticsearch claims index. A killed worker is started
again (as systemd would) until the harness stops. The test itself plays
integration: it consumes the status queue and publishes send events with a
plain bus client.
"""

from __future__ import annotations

import collections
import contextlib
import os
import re
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import trio

from actors.bus.rabbitmq import RabbitBus
from actors.domain.schema import EmailStatusEvent, status_event_decoder
from config import load_config
from tests.support.cluster import delete_topology
from tests.support.services import free_port

ROOT = Path(__file__).resolve().parent.parent.parent
_READY = re.compile(r"MAILACTORS_READY email-server pid=(\d+)")


def workers_env(tmp_path: Path, es_url: str, amqp_url: str, smtp_port: int, **extra: str) -> dict[str, str]:
    p = f"test.once.{uuid.uuid4().hex[:10]}"
    env = dict(os.environ)
    env.pop("MAILACTORS_PROFILE", None)
    env.update(
        {
            "MAILACTORS__SERVICE__LOG_FORMAT": "text",
            "MAILACTORS__SERVICE__LOG_LEVEL": "WARNING",
            "MAILACTORS__STORE__URL": es_url,
            "MAILACTORS__EMAIL_SERVER__CLAIMS_INDEX": f"claims-{p.replace('.', '-')}",
            "MAILACTORS__BUS__URL": amqp_url,
            "MAILACTORS__BUS__SEND_EXCHANGE": f"{p}.send.exchange",
            "MAILACTORS__BUS__STATUS_EXCHANGE": f"{p}.status.exchange",
            "MAILACTORS__BUS__SEND_QUEUE": f"{p}.send",
            "MAILACTORS__BUS__STATUS_QUEUE": f"{p}.status",
            "MAILACTORS__BUS__DEAD_LETTER_EXCHANGE": f"{p}.dead.exchange",
            "MAILACTORS__BUS__DEAD_LETTER_QUEUE": f"{p}.dead",
            "MAILACTORS__BUS__RECONNECT_MAX_S": "2",
            "MAILACTORS__BUS__PUBLISH_TIMEOUT_S": "60",
            "MAILACTORS__PROVIDER__KIND": "smtp",
            "MAILACTORS__PROVIDER__SMTP__HOST": "127.0.0.1",
            "MAILACTORS__PROVIDER__SMTP__PORT": str(smtp_port),
            "MAILACTORS__PROVIDER__SENDER": "noreply@mailactors.test",
            "MAILACTORS__RETRY__BASE_DELAY_S": "0.5",
            "MAILACTORS__GRPC__AUTH_PORT": str(free_port()),
            "MAILACTORS__GRPC__INTEGRATION_PORT": str(free_port()),
            **extra,
        }
    )
    return env


class Workers:
    """N email-server processes; ``kill(i)`` SIGKILLs one, and it is started again."""

    def __init__(self, env: dict[str, str], n: int, tmp_path: Path, per_worker: dict[int, dict[str, str]] | None = None) -> None:
        self.env = env
        self.n = n
        self.tmp = tmp_path
        self.per_worker = per_worker or {}
        self.pids: dict[int, int] = {}
        self.procs: dict[int, trio.Process] = {}
        self.lines: list[str] = []
        self.changed = trio.Event()
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
            argv = [sys.executable, "-u", str(ROOT / "supervisor.py"), "--profile", "distributed", "run", "email-server"]
            proc = await trio.lowlevel.open_process(
                argv, env=self.worker_env(i), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
            )
            self.procs[i] = proc
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._pump, i, proc)
                    nursery.start_soon(self._reap, proc)
                    await self.wait_for(lambda p=proc: self.pids.get(i) == p.pid or p.returncode is not None, 60)
                    if not started:
                        started = True
                        task_status.started()
                    await proc.wait()
                self.exits.append((i, proc.returncode))
            finally:
                if proc.returncode is None:
                    with trio.CancelScope(shield=True):
                        proc.send_signal(signal.SIGINT)
                        with trio.move_on_after(20):
                            await proc.wait()
                        if proc.returncode is None:
                            proc.kill()
                            await proc.wait()
            if not self.restart:
                return

    async def _reap(self, proc: trio.Process) -> None:
        """Wake the waiters when a process ends without a word (killed, or failed to start:
        the broker being restarted by other work on the machine)."""
        await proc.wait()
        self._poke()

    def _poke(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    async def _pump(self, i: int, proc: trio.Process) -> None:
        assert proc.stdout is not None
        buffer = b""
        async with await trio.open_file(self.tmp / f"worker-{i}.log", "ab") as out:
            async for chunk in proc.stdout:
                await out.write(chunk)
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for raw in lines:
                    line = raw.decode(errors="replace")
                    self.lines.append(f"[{i}] {line}")
                    if m := _READY.search(line):
                        self.pids[i] = int(m.group(1))
                self.changed.set()
                self.changed = trio.Event()

    async def wait_for(self, predicate: Callable[[], bool], timeout: float) -> None:
        with trio.fail_after(timeout):
            while not predicate():
                await self.changed.wait()

    def kill(self, i: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pids[i], signal.SIGKILL)

    def count(self, text: str) -> int:
        return sum(1 for line in self.lines if text in line)

    async def _stop_all(self) -> None:
        """SIGINT, a bounded wait, then SIGKILL: a worker stuck in its stop (a broker
        restarted by other work on the machine) must not hang the test."""
        live = [p for p in self.procs.values() if p.returncode is None]
        for proc in live:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGINT)
        with trio.move_on_after(30):
            for proc in live:
                await proc.wait()
        for proc in live:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()

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
            with trio.CancelScope(shield=True):
                url = load_config("distributed", env=self.env).bus.resolved_url(self.env)
                with contextlib.suppress(Exception):
                    await trio.to_thread.run_sync(delete_topology, url, self.env)


class StatusSink:
    """Plays integration: consumes every status event; one per send delivery, in the end."""

    def __init__(self, env: dict[str, str]) -> None:
        self.config = load_config("distributed", env=env).bus
        self.bus = RabbitBus(self.config, role="integration", connection_name="test-status-sink")
        self.statuses: list[EmailStatusEvent] = []
        self.changed = trio.Event()

    async def run(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            delivery = await self.bus.next_status()
            self.statuses.append(status_event_decoder.decode(delivery.body))
            await delivery.ack()
            self.changed.set()
            self.changed = trio.Event()

    async def wait_for(self, predicate: Callable[[], bool], timeout: float) -> None:
        with trio.fail_after(timeout):
            while not predicate():
                await self.changed.wait()

    def final(self) -> dict[str, EmailStatusEvent]:
        """The terminal status of each eventId (the first one seen; a repeat says the same)."""
        out: dict[str, EmailStatusEvent] = {}
        for s in self.statuses:
            if s.status.terminal:
                out.setdefault(s.event_id, s)
        return out


def received(server: Any) -> collections.Counter[str]:
    ids: collections.Counter[str] = collections.Counter()
    for m in server.messages():
        ids[message_from_bytes(m.data, policy=policy.default)["X-Mailactors-Event-Id"]] += 1
    return ids

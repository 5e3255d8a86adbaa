"""The distributed profile as child processes: for tests, ``supervisor.py soak`` and bench/.

``supervisor.py --profile distributed up`` (:class:`Cluster`) or ``... run <service>``
(:class:`ProcessOutput` with :func:`start` and :func:`stop`, for a harness that runs
the services one by one), each with its output in a log file and in ``lines``;
:func:`cluster_env` gives a cluster names of its own (queues, exchanges, index, ports)
and :func:`delete_topology` removes its queues and exchanges afterwards.

One harness, because its copies drifted apart: one guarded the process-group kill
against a group already gone and one did not, and their start-up waits differed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import trio

from actors.testing.localservices import free_port

__all__ = [
    "READY",
    "ROOT",
    "Changes",
    "Cluster",
    "ProcessOutput",
    "cluster_env",
    "delete_topology",
    "start",
    "stop",
    "supervisor_argv",
]

ROOT = Path(__file__).resolve().parent.parent.parent
# What a service prints once it serves; ``up`` prefixes it with ``[<process name>] ``.
READY = re.compile(r"MAILACTORS_READY (\S+) pid=(\d+)")
START_TIMEOUT_S = 120.0  # a cold start on 2 shared cores with the broker busy takes a while
STOP_TIMEOUT_S = 60.0


def cluster_env(
    work: Path,
    es_url: str,
    amqp_url: str | None,
    smtp_port: int,
    *,
    prefix: str = "test.dist",
    sender: str = "noreply@mailactors.test",
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """os.environ plus the settings of a cluster with names of its own under *prefix*.

    *amqp_url* None keeps the configured broker URL. *extra* comes last (a caller's own
    settings win). The profile comes from the command line and the metrics port from
    *extra* only: one inherited from the environment would collide between clusters.
    """
    p = f"{prefix}.{uuid.uuid4().hex[:10]}"
    env = dict(os.environ)
    for name in ("MAILACTORS_PROFILE", "MAILACTORS__METRICS__PORT"):
        env.pop(name, None)
    env.update(
        {
            "MAILACTORS__SERVICE__LOG_FORMAT": "text",
            "MAILACTORS__SERVICE__DATA_DIR": str(work),
            "MAILACTORS__STORE__URL": es_url,
            "MAILACTORS__STORE__INDEX": f"emails-{p.replace('.', '-')}",
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
            "MAILACTORS__PROVIDER__SENDER": sender,
            "MAILACTORS__EMAIL_SERVER__IDEMPOTENCY_PATH": str(work / "sent.sqlite3"),
            "MAILACTORS__GRPC__AUTH_PORT": str(free_port()),
            "MAILACTORS__GRPC__INTEGRATION_PORT": str(free_port()),
            "MAILACTORS__RETRY__BASE_DELAY_S": "0.5",
        }
    )
    if amqp_url is not None:
        env["MAILACTORS__BUS__URL"] = amqp_url
    env.update(extra or {})
    return env


def delete_topology(
    env: Mapping[str, str], *, url: str | None = None, timeout: float = 60.0
) -> None:
    """Delete the queues and exchanges that the bus settings in *env* name (blocking).

    Every cluster declares its own (quorum) queues; left behind they hold file handles
    in the broker and make each later broker start slower. The URL is the one the
    services used (its password may come from password_env), or *url*. Runs its own asyncio loop:
    call it from a thread (``trio.to_thread.run_sync``); a plain selector loop, because
    the loop policy in force may be trio-asyncio's.
    """
    from actors.bus.topology import delete
    from config import load_config

    bus = load_config("distributed", env=env).bus
    loop = asyncio.SelectorEventLoop()
    try:
        loop.run_until_complete(
            asyncio.wait_for(delete(bus, url=url or bus.resolved_url(env)), timeout)
        )
    finally:
        loop.close()


def supervisor_argv(*args: str) -> list[str]:
    """``python -u supervisor.py --profile distributed ARGS`` (unbuffered: lines as they come)."""
    return [sys.executable, "-u", str(ROOT / "supervisor.py"), "--profile", "distributed", *args]


async def start(argv: list[str], env: Mapping[str, str]) -> trio.Process:
    """The process in a session of its own, so that :func:`stop` can kill what it started."""
    return await trio.lowlevel.open_process(
        argv, env=dict(env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        start_new_session=True,
    )


async def stop(proc: trio.Process, timeout: float = STOP_TIMEOUT_S) -> None:
    """SIGINT (the supervisor drains), *timeout* to finish, then SIGKILL to its process group.

    Shielded: it runs in cleanups. A process stuck in its stop (a broker restarted by
    other work on the machine) must not hang the caller, and a group already gone is
    no error.
    """
    with trio.CancelScope(shield=True):
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGINT)
            with trio.move_on_after(timeout):
                await proc.wait()
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # it and whatever it started
        await proc.wait()


class Changes:
    """Something that changes (lines come, events arrive) and waiters on it."""

    def __init__(self) -> None:
        self.changed = trio.Event()

    def poke(self) -> None:
        """Wake the waiters: a line came, or a process ended without a word."""
        self.changed.set()
        self.changed = trio.Event()

    async def wait_for(self, predicate: Callable[[], bool], timeout: float) -> None:
        """Until *predicate* holds (checked at each change); trio.TooSlowError after *timeout*."""
        with trio.fail_after(timeout):
            while not predicate():
                await self.changed.wait()


class ProcessOutput(Changes):
    """The lines of one or more child processes, in log files and in memory; waits on them."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def ready_lines(self, service: str) -> list[str]:
        return [line for line in self.lines if f"MAILACTORS_READY {service}" in line]

    def ready(self, service: str) -> bool:
        return bool(self.ready_lines(service))

    def count(self, text: str) -> int:
        return sum(1 for line in self.lines if text in line)

    async def pump(
        self,
        proc: trio.Process,
        log: Path,
        prefix: str = "",
        on_line: Callable[[str], None] | None = None,
    ) -> None:
        """Copy *proc*'s output to *log* and to ``lines`` (each with *prefix*) until it ends;
        *on_line* sees each line first (as the process wrote it)."""
        assert proc.stdout is not None
        buffer = b""
        async with await trio.open_file(log, "ab") as out:
            async for chunk in proc.stdout:
                await out.write(chunk)
                await out.flush()
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for raw in lines:
                    line = raw.decode(errors="replace")
                    if on_line is not None:
                        on_line(line)
                    self.lines.append(prefix + line)
                self.poke()

    async def reap(self, proc: trio.Process) -> None:
        """Wake the waiters when *proc* ends, whether or not it said anything."""
        await proc.wait()
        self.poke()


@dataclass(eq=False)
class Cluster(ProcessOutput):
    """``supervisor.py --profile distributed up`` as a child process, its output in *log*.

    *start_timeout*: for auth's ready line (it starts last). *keep_topology*: leave the
    queues and exchanges for the caller to read and delete (the soak reads its dead letters
    after the stop).
    """

    env: dict[str, str]
    workers: int
    log: Path
    start_timeout: float = START_TIMEOUT_S
    drain_s: float = 10.0
    keep_topology: bool = False
    proc: trio.Process | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        ProcessOutput.__init__(self)

    @property
    def auth_port(self) -> int:
        return int(self.env["MAILACTORS__GRPC__AUTH_PORT"])

    @property
    def integration_port(self) -> int:
        return int(self.env["MAILACTORS__GRPC__INTEGRATION_PORT"])

    def pids(self, service: str) -> list[int]:
        """The pids that *service* processes said they were ready with, in order."""
        return [int(m.group(2)) for line in self.ready_lines(service) if (m := READY.search(line))]

    def worker_pids(self) -> dict[str, int]:
        """The latest pid of each email-server worker (by process name) that said it was ready."""
        pids: dict[str, int] = {}
        for line in self.ready_lines("email-server"):
            if (m := READY.search(line)) and (name := re.match(r"\[([^\]]+)\]", line)):
                pids[name.group(1)] = int(m.group(2))
        return pids

    def service_pids(self) -> dict[str, int]:
        """The latest pid of every process (by name: auth, integration, email-server-0, ...)."""
        pids: dict[str, int] = {}
        for line in self.lines:
            if (m := READY.search(line)) and (name := re.match(r"\[([^\]]+)\]", line)):
                pids[name.group(1)] = int(m.group(2))
        return pids

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Cluster]:
        """Started and ready (auth last); stopped, and its topology deleted unless kept, on the
        way out."""
        argv = supervisor_argv("up", "--workers", str(self.workers), "--drain", f"{self.drain_s:g}")
        proc = self.proc = await start(argv, self.env)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self.pump, proc, self.log)
                nursery.start_soon(self.reap, proc)
                try:
                    await self.wait_for(
                        lambda: self.ready("auth") or proc.returncode is not None,
                        self.start_timeout,
                    )
                    if not self.ready("auth"):
                        raise RuntimeError(
                            "the cluster did not start:\n" + "\n".join(self.lines[-40:])
                        )
                    yield self
                finally:
                    await stop(proc)
                    nursery.cancel_scope.cancel()
        finally:
            await stop(proc)
            if not self.keep_topology:
                with trio.CancelScope(shield=True):
                    await self._delete_topology()

    async def _delete_topology(self) -> None:
        try:
            await trio.to_thread.run_sync(delete_topology, self.env)
        except Exception as exc:  # cleanup must not hide the run's own outcome
            import warnings

            warnings.warn(f"could not delete the cluster's queues: {exc!r}", stacklevel=1)

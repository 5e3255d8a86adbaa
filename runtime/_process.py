"""OS processes as supervised actors: the same restart policy for a process as for a task.

A :class:`ProcessActor` starts a command, forwards its output line by line
with a prefix (so several children's logs merge readably), and reports ready
only when the child prints a ready marker. If the child exits on its own the
actor fails, and its supervisor restarts it with backoff within its intensity.
A graceful stop sends SIGTERM and waits for the child; if the supervisor's
shutdown timeout runs out first the actor is cancelled and the child killed,
so no child outlives its supervisor. The child runs in a session of its own, and
its whole process group is killed once it is gone or cancelled, so nothing it
started is orphaned either.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, TextIO

import trio

from ._actor import Actor


class ProcessExited(Exception):
    """The child process ended without being asked to."""


class ProcessActor(Actor[Any]):
    """Runs one OS process for as long as the actor runs."""

    accepts: ClassVar[tuple[type, ...]] = ()

    def __init__(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        ready_marker: str | None = None,
        ready_timeout: float = 60.0,
        prefix: str = "",
        output: TextIO | None = None,
    ) -> None:
        self.argv = list(argv)
        self.env = dict(env) if env is not None else None
        self.ready_marker = ready_marker
        self.ready_timeout = ready_timeout
        self.prefix = prefix
        self.output = output or sys.stderr
        self.tail: deque[str] = deque(maxlen=20)
        self.stopping_now = False
        self.proc: trio.Process | None = None

    async def started(self) -> None:
        ready = trio.Event()
        # A session of its own: a terminal's Ctrl-C reaches only the supervisor,
        # which then stops the children itself, in reverse order.
        proc = await trio.lowlevel.open_process(
            self.argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=self.env,
            start_new_session=True,
        )
        self.proc = proc
        self.ctx.report(lambda: {"pid": proc.pid, "returncode": proc.returncode})
        self.ctx.start_soon(self._pump, ready)
        self.ctx.start_soon(self._watch)
        if self.ready_marker is None:
            return
        with trio.move_on_after(self.ready_timeout):
            await ready.wait()
        if not ready.is_set():
            raise ProcessExited(
                f"{self.ctx.path}: not ready within {self.ready_timeout:g}s"
                f" (pid {proc.pid}, exit {proc.returncode}); last output:\n" + "\n".join(self.tail)
            )

    async def _pump(self, ready: trio.Event) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        buffer = b""
        async for chunk in self.proc.stdout:
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for raw in lines:
                line = raw.decode(errors="replace")
                self.tail.append(line)
                if self.ready_marker is not None and self.ready_marker in line:
                    ready.set()
                print(f"{self.prefix}{line}", file=self.output, flush=True)
        # The pipe closed: the child is gone; let the watcher report why.
        await trio.sleep_forever()

    async def _watch(self) -> None:
        proc = self.proc
        assert proc is not None
        try:
            code = await proc.wait()
        finally:
            if proc.returncode is None:
                # Cancelled (hard stop or our own failure): never leave the child behind.
                with trio.CancelScope(shield=True):
                    _kill_group(proc.pid)
                    proc.kill()
                    await proc.wait()
            # Whatever the child started and left in its session would be orphaned now.
            _kill_group(proc.pid)
        if not self.stopping_now:
            raise ProcessExited(
                f"{self.ctx.path}: process {proc.pid} exited with {code}; last output:\n"
                + "\n".join(self.tail)
            )
        await trio.sleep_forever()  # stopped on purpose: the actor's stop ends us

    async def stopping(self) -> None:
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        self.stopping_now = True
        proc.send_signal(signal.SIGTERM)
        await proc.wait()


def _kill_group(pgid: int) -> None:
    """SIGKILL the child's process group (its own session: pgid == its pid)."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass  # the group is already empty


def python_argv(*args: str) -> list[str]:
    """argv to run this interpreter with ``args`` (unbuffered, so logs stream)."""
    return [sys.executable, "-u", *args]


def child_env(extra: Mapping[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    env.update(extra)
    return env

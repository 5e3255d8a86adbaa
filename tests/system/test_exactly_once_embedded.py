"""The embedded profile under SIGKILLs: Maildir, SQLite, requests repeated with their keys.

``supervisor.py up`` (embedded) runs as a child; it is SIGKILLed at random
moments while emails are requested through its gRPC API and started again
each time. A request that fails because the process is down is asked again
with the same key. In the end every email is SENT, none is stuck, and the
Maildir holds exactly one message per email: after a restart the claims of
the killed process are taken over at once (its pid is gone) and Maildir is
asked whether it already delivered each one.
"""

from __future__ import annotations

import collections
import contextlib
import os
import random
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from actors.auth.service import event_id_for
from actors.ops.soak import Client
from runtime import open_asyncio_edge
from tests.support.services import free_port

ROOT = Path(__file__).resolve().parent.parent.parent
pytestmark = [pytest.mark.slow]


class Embedded:
    """The embedded profile as a child process, started again after each kill."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env = env
        self.log = log
        self.proc: trio.Process | None = None
        self.up = trio.Event()
        self.kills = 0
        self.stopping = False

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        started = False
        while not self.stopping:
            argv = [
                sys.executable,
                "-u",
                str(ROOT / "supervisor.py"),
                "--profile",
                "embedded",
                "up",
            ]
            proc = await trio.lowlevel.open_process(
                argv, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
            )
            self.proc = proc
            assert proc.stdout is not None
            with self.log.open("ab") as out:
                async for chunk in proc.stdout:
                    out.write(chunk)
                    if b"mailactors embedded: running" in chunk:
                        self.up.set()
                        if not started:
                            started = True
                            task_status.started()
            await proc.wait()
            self.up = trio.Event()

    def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGKILL)
                self.kills += 1

    async def stop(self) -> None:
        self.stopping = True
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGINT)
            with trio.move_on_after(30):
                await self.proc.wait()
            self.kill()


def _not_terminal(db: Path, ids: set[str]) -> set[str]:
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as conn:
        rows = conn.execute("SELECT event_id, status FROM emails").fetchall()
    done = {e for e, s in rows if s in ("SENT", "FAILED", "SUPPRESSED")}
    return ids - done


async def test_sigkills_lose_nothing_and_send_nothing_twice_with_maildir(tmp_path: Path) -> None:
    n, kills = 3000, 5
    auth_port = free_port()
    env = {
        **os.environ,
        "MAILACTORS__SERVICE__DATA_DIR": str(tmp_path),
        "MAILACTORS__SERVICE__RUN_DIR": str(tmp_path / "run"),
        "MAILACTORS__STORE__SQLITE_PATH": str(tmp_path / "emails.sqlite3"),
        "MAILACTORS__EMAIL_SERVER__IDEMPOTENCY_PATH": str(tmp_path / "sent.sqlite3"),
        "MAILACTORS__PROVIDER__MAILDIR_PATH": str(tmp_path / "maildir"),
        "MAILACTORS__GRPC__AUTH_PORT": str(auth_port),
        "MAILACTORS__GRPC__INTEGRATION_PORT": str(free_port()),
        "MAILACTORS__EMAIL_SERVER__UNKNOWN_OUTCOME": "resend",  # Maildir answers instead
    }
    env.pop("MAILACTORS_PROFILE", None)
    app = Embedded(env, tmp_path / "embedded.log")
    rng = random.Random(5)
    keys = [f"emb-{i}" for i in range(n)]
    ids = {event_id_for(k) for k in keys}
    async with open_asyncio_edge() as edge, trio.open_nursery() as nursery:
        await nursery.start(app.run)
        client = Client(edge, auth_port)
        slots = trio.Semaphore(32)

        async def one(key: str) -> None:
            try:
                while True:
                    try:
                        await client.request(f"{key}@example.com", key)
                        return
                    except Exception:  # the process is down: the same key, once it is up
                        await app.up.wait()
                        await trio.sleep(0.05)
            finally:
                slots.release()

        async def kill_loop() -> None:
            for _ in range(kills):
                await trio.sleep(rng.uniform(0.8, 2.0))
                await app.up.wait()
                await trio.sleep(rng.uniform(0.1, 0.6))
                app.kill()

        async with trio.open_nursery() as work:
            work.start_soon(kill_loop)
            for key in keys:
                await slots.acquire()
                work.start_soon(one, key)
        await app.up.wait()
        with trio.fail_after(90):  # nothing stuck: all terminal without another restart
            while _not_terminal(tmp_path / "emails.sqlite3", ids):  # noqa: ASYNC110 (another process's file)
                await trio.sleep(0.25)
        await client.close()
        await app.stop()
        nursery.cancel_scope.cancel()
    assert app.kills == kills
    names = [p.name for p in (tmp_path / "maildir" / "new").iterdir()]
    per_event = collections.Counter(name.split(",")[1] for name in names)
    assert set(per_event) == ids  # nothing lost
    assert [e for e, c in per_event.items() if c > 1] == []  # nothing twice
    with contextlib.closing(sqlite3.connect(tmp_path / "emails.sqlite3")) as conn:
        statuses = collections.Counter(s for (s,) in conn.execute("SELECT status FROM emails"))
    assert statuses == {"SENT": n}

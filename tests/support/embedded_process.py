"""``supervisor.py up`` (embedded, Maildir) as a child process, and the CLI run against it.

For tests of the command line as a user runs it: real processes, real gRPC.
"""

from __future__ import annotations

import mailbox
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path

import trio

from actors.testing.localservices import free_port, tcp_open

ROOT = Path(__file__).resolve().parent.parent.parent
SUPERVISOR = str(ROOT / "supervisor.py")


def embedded_env(tmp: Path, **extra: str) -> dict[str, str]:
    """Environment for an embedded ``up`` of its own: free port, files under ``tmp``."""
    return {
        **os.environ,
        "MAILACTORS__SERVICE__RUN_DIR": str(tmp / "run"),
        "MAILACTORS__SERVICE__DATA_DIR": str(tmp),
        "MAILACTORS__STORE__SQLITE_PATH": str(tmp / "emails.sqlite3"),
        "MAILACTORS__EMAIL_SERVER__IDEMPOTENCY_PATH": str(tmp / "sent.sqlite3"),
        "MAILACTORS__PROVIDER__KIND": "maildir",
        "MAILACTORS__PROVIDER__MAILDIR_PATH": str(tmp / "maildir"),
        "MAILACTORS__GRPC__AUTH_PORT": str(free_port()),
        "MAILACTORS__HTTP__PORT": "0",
        **extra,
    }


async def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[bytes]:
    """``supervisor.py --profile embedded ARGS``, its output captured."""
    argv = [sys.executable, SUPERVISOR, "--profile", "embedded", *args]
    with trio.fail_after(60):
        return await trio.run_process(
            argv, env=env, capture_stdout=True, capture_stderr=True, check=False
        )


@asynccontextmanager
async def running_embedded(env: dict[str, str], log: Path) -> AsyncIterator[trio.Process]:
    """Run ``up`` until the block ends (SIGINT, then SIGKILL after 30 s)."""
    argv = [sys.executable, "-u", SUPERVISOR, "--profile", "embedded", "up"]
    port = int(env["MAILACTORS__GRPC__AUTH_PORT"])
    with log.open("ab") as out:
        proc = await trio.lowlevel.open_process(
            argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        with trio.fail_after(60):
            while not tcp_open("127.0.0.1", port, timeout=0.2):
                assert proc.returncode is None, _tail(log)
                await trio.sleep(0.1)
        yield proc
    finally:
        with trio.CancelScope(shield=True):
            if proc.returncode is None:
                proc.send_signal(signal.SIGINT)
                with trio.move_on_after(30):
                    await proc.wait()
            if proc.returncode is None:
                os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:]


def read_maildir(path: Path) -> list[EmailMessage]:
    """Every message in the Maildir at ``path`` (none if it does not exist yet)."""
    if not path.exists():
        return []
    box = mailbox.Maildir(str(path), create=False)
    parser = BytesParser(policy=policy.default)
    out = []
    for key in box.keys():
        msg = parser.parsebytes(box.get_bytes(key))
        assert isinstance(msg, EmailMessage)
        out.append(msg)
    return out


async def wait_maildir(path: Path, count: int, timeout: float = 60) -> list[EmailMessage]:
    """The messages in the Maildir at ``path`` once it holds ``count`` of them.

    Delivery happens in another process, so this polls, within ``timeout``.
    """
    with trio.fail_after(timeout):
        while True:
            messages = read_maildir(path)
            if len(messages) >= count:
                return messages
            await trio.sleep(0.1)

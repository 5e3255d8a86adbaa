"""The distributed profile as real processes for tests (``supervisor.py up --profile distributed``)."""

from __future__ import annotations

import collections
import os
import re
import signal
import subprocess
import sys
import uuid
import warnings
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import trio

from tests.support.services import free_port

ROOT = Path(__file__).resolve().parent.parent.parent


class Cluster:
    """supervisor.py up --profile distributed, as a child process of the test."""

    def __init__(self, env: dict[str, str], workers: int, log: Path) -> None:
        self.env = env
        self.workers = workers
        self.log_path = log
        self.lines: list[str] = []
        self.changed = trio.Event()
        self.auth_port = int(env["MAILACTORS__GRPC__AUTH_PORT"])
        self.integration_port = int(env["MAILACTORS__GRPC__INTEGRATION_PORT"])

    def ready_lines(self, service: str) -> list[str]:
        return [line for line in self.lines if f"MAILACTORS_READY {service}" in line]

    def pids(self, service: str) -> list[int]:
        return [int(m.group(1)) for line in self.ready_lines(service) if (m := re.search(r"pid=(\d+)", line))]

    async def wait_for(self, predicate: Callable[[], bool], timeout: float) -> None:
        with trio.fail_after(timeout):
            while not predicate():
                await self.changed.wait()

    async def _pump(self, proc: trio.Process) -> None:
        assert proc.stdout is not None
        buffer = b""
        async with await trio.open_file(self.log_path, "ab") as out:
            async for chunk in proc.stdout:
                await out.write(chunk)
                await out.flush()
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                self.lines.extend(line.decode(errors="replace") for line in lines)
                self.changed.set()
                self.changed = trio.Event()

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Cluster]:
        argv = [sys.executable, "-u", str(ROOT / "supervisor.py"), "--profile", "distributed",
                "up", "--workers", str(self.workers), "--drain", "10"]
        proc = await trio.lowlevel.open_process(
            argv, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._pump, proc)
                try:
                    await self.wait_for(lambda: bool(self.ready_lines("auth")) or proc.returncode is not None, 90)
                    assert self.ready_lines("auth"), "cluster did not start:\n" + "\n".join(self.lines[-40:])
                    yield self
                finally:
                    with trio.CancelScope(shield=True):
                        proc.send_signal(signal.SIGINT)
                        with trio.move_on_after(60):
                            await proc.wait()
                        nursery.cancel_scope.cancel()
        finally:
            if proc.returncode is None:
                os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
            # Quorum queues left behind hold file handles in the broker until it runs out.
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(self._delete_topology)

    def _delete_topology(self) -> None:
        from config import load_config

        # The URL the services used: its password may come from password_env.
        url = load_config("distributed", env=self.env).bus.resolved_url(self.env)
        try:
            delete_topology(url, self.env)
        except Exception as exc:  # cleanup must not hide the test's own outcome
            warnings.warn(f"could not delete the test's queues: {exc!r}", stacklevel=1)


def delete_topology(amqp_url: str, env: dict[str, str]) -> None:
    """Delete the queues and exchanges of this test's cluster.

    Every test declares its own (quorum) queues; left behind they pile up in the
    broker, and each holds file handles of its own there.
    """
    import asyncio

    import aio_pika

    from actors.bus.rabbitmq import RabbitBus
    from config import load_config

    bus = load_config("distributed", env=env).bus
    queues = RabbitBus(bus, url=amqp_url, role="tool").queue_names()
    exchanges = [bus.send_exchange, bus.status_exchange, bus.dead_letter_exchange]

    async def go() -> None:
        connection = await aio_pika.connect(amqp_url, timeout=10)
        try:
            for name in queues + exchanges:
                channel = await connection.channel()
                try:
                    if name in queues:
                        await channel.queue_delete(name)
                    else:
                        await channel.exchange_delete(name)
                except aio_pika.exceptions.ChannelClosed:
                    pass  # never declared
                finally:
                    if not channel.is_closed:
                        await channel.close()
        finally:
            await connection.close()

    asyncio.run(go())


def cluster_env(tmp_path: Path, es_url: str, amqp_url: str, smtp_port: int) -> dict[str, str]:
    p = f"test.dist.{uuid.uuid4().hex[:10]}"
    env = dict(os.environ)
    env.update(
        {
            "MAILACTORS__SERVICE__LOG_FORMAT": "text",
            "MAILACTORS__SERVICE__DATA_DIR": str(tmp_path),
            "MAILACTORS__STORE__URL": es_url,
            "MAILACTORS__STORE__INDEX": f"emails-{uuid.uuid4().hex[:10]}",
            "MAILACTORS__BUS__URL": amqp_url,
            "MAILACTORS__BUS__SEND_EXCHANGE": f"{p}.send.exchange",
            "MAILACTORS__BUS__STATUS_EXCHANGE": f"{p}.status.exchange",
            "MAILACTORS__BUS__SEND_QUEUE": f"{p}.send",
            "MAILACTORS__BUS__STATUS_QUEUE": f"{p}.status",
            "MAILACTORS__BUS__DEAD_LETTER_EXCHANGE": f"{p}.dead.exchange",
            "MAILACTORS__BUS__DEAD_LETTER_QUEUE": f"{p}.dead",
            "MAILACTORS__BUS__RECONNECT_MAX_S": "2",
            "MAILACTORS__BUS__PUBLISH_TIMEOUT_S": "60",
            "MAILACTORS__PROVIDER__SMTP__HOST": "127.0.0.1",
            "MAILACTORS__PROVIDER__SMTP__PORT": str(smtp_port),
            "MAILACTORS__PROVIDER__SENDER": "noreply@mailactors.test",
            "MAILACTORS__EMAIL_SERVER__IDEMPOTENCY_PATH": str(tmp_path / "sent.sqlite3"),
            "MAILACTORS__GRPC__AUTH_PORT": str(free_port()),
            "MAILACTORS__GRPC__INTEGRATION_PORT": str(free_port()),
            "MAILACTORS__RETRY__BASE_DELAY_S": "0.5",
        }
    )
    return env


def event_ids_received(server: Any) -> collections.Counter[str]:
    ids: collections.Counter[str] = collections.Counter()
    for m in server.messages():
        ids[message_from_bytes(m.data, policy=policy.default)["X-Mailactors-Event-Id"]] += 1
    return ids

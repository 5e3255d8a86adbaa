"""Webhook delivery: CPU per delivery of the dispatcher, with a real receiver in another process.

The deliveries are queued in a SQLite outbox before the dispatcher starts (queueing is
integration's cost, not delivery's); the first ``WARM`` are a warm-up, the next ``n``
are timed. CPU is this process's (every thread: the outbox writer's too), so the
receiver's work, in its own process, is not in it; the receiver counts the TCP
connections it saw (the client's address and port of each request), which shows
whether the dispatcher keeps its connections alive.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

from actors.webhooks.dispatcher import WebhookDispatcher
from actors.webhooks.events import WebhookItem
from actors.webhooks.outbox import Job, SqliteOutbox
from config import WebhookEndpointConfig, WebhooksConfig
from runtime import ChildSpec, open_actor_system

SECRET = "whsec_" + "YmVuY2gtd2ViaG9vay1zZWNyZXQtMDEyMzQ1Njc4OQ=="
WARM = 200
ROOT = Path(__file__).resolve().parent.parent

# A delivery's body as integration queues it (about the size of a SENT event's).
_BODY = {
    "status": "SENT", "emailStatus": "SENT", "time": "2026-12-01T17:25:12.41+00:00",
    "recipient": "ada@example.com", "category": "transactional", "attempt": 1,
    "provider": "maildir", "providerMessageId": "<1764609912.410123@example.com>",
    "smtpCode": 250, "reply": "250 2.0.0 Ok: queued", "error": None,
}  # fmt: skip


class _Counted(SqliteOutbox):
    """The outbox, telling when the ``k``-th delivery has been settled."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.settled = 0
        self.marks: dict[int, trio.Event] = {}

    async def delivered(self, job: Job) -> None:
        await super().delivered(job)
        self.settled += 1
        if self.settled in self.marks:
            self.marks[self.settled].set()

    async def reached(self, k: int) -> tuple[float, float, float]:
        """Once ``k`` deliveries are settled: the clocks then (wall, process CPU, this thread's)."""
        if self.settled < k:
            await self.marks.setdefault(k, trio.Event()).wait()
        return time.perf_counter(), time.process_time(), time.thread_time()


def _items(n: int) -> list[WebhookItem]:
    now = time.time()
    run = os.urandom(4).hex()  # every run's webhook-ids are new to the receiver
    out = []
    for i in range(n):  # two statuses per email, as SENDING and SENT: the order rule applies
        event_id = f"bench-{run}-{i // 2:08d}"
        body = json.dumps({"eventId": event_id, "sequence": i, **_BODY}).encode()
        out.append(WebhookItem(
            webhook_id=f"msg_bench{run}{i:08d}", endpoint="bench", event_id=event_id, sequence=i,
            body=body, created_at=now,
        ))  # fmt: skip
    return out


async def _deliver(
    n: int, url: str, directory: str, concurrency: int, chunk: int | None
) -> dict[str, Any]:
    """``chunk``: queue the timed deliveries that many at a time, the next ones once those
    are delivered (a short queue, as when delivery keeps up; the queueing writes are then
    in the timed part); None: all of them at once, before."""
    os.environ["MAILACTORS_BENCH_HOOK_SECRET"] = SECRET
    endpoint = WebhookEndpointConfig(
        name="bench", url=url, secret_env="MAILACTORS_BENCH_HOOK_SECRET", concurrency=concurrency
    )
    settings = WebhooksConfig(enabled=True, allow_private=True, endpoints=(endpoint,))
    items = _items(WARM + n)
    outbox = _Counted(f"{directory}/webhooks.sqlite3")
    async with outbox:
        await outbox.add_many(items[: WARM + n if chunk is None else WARM])
        async with open_actor_system("bench", shutdown=5.0) as system:
            await system.spawn(ChildSpec("webhooks", WebhookDispatcher, args=(settings, outbox)))
            with trio.fail_after(600):
                t0, cpu0, main0 = await outbox.reached(WARM)
                for start in range(WARM, WARM + n, chunk or n):
                    if chunk is not None:
                        await outbox.add_many(items[start : start + chunk])
                    await outbox.reached(min(start + (chunk or n), WARM + n))
                t1, cpu1, main1 = await outbox.reached(WARM + n)
    return {
        "deliveries_per_s": round(n / (t1 - t0)),
        "cpu_ms_per_delivery": round((cpu1 - cpu0) * 1000 / n, 3),
        "main_thread_cpu_ms_per_delivery": round((main1 - main0) * 1000 / n, 3),
    }


def webhook_delivery(quick: bool = False, runs: int | None = None) -> dict[str, Any]:
    """CPU per delivery and deliveries/s to a live receiver (hypercorn, another process)."""
    n = 1000 if quick else 3000
    runs = runs or (1 if quick else 3)
    receiver = subprocess.Popen(
        [sys.executable, "-m", "bench.webhooks", "receiver"],
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert receiver.stdin is not None and receiver.stdout is not None
    try:
        url = json.loads(receiver.stdout.readline())["url"]
        results: dict[str, list[dict[str, Any]]] = {"backlog": [], "short_queue": []}
        for _ in range(runs):
            for name, chunk in (("backlog", None), ("short_queue", 32)):
                with tempfile.TemporaryDirectory(prefix="bench-hooks-") as directory:
                    results[name].append(trio.run(_deliver, n, url, directory, 4, chunk))
        receiver.stdin.write("stats\n")
        receiver.stdin.flush()
        seen = json.loads(receiver.stdout.readline())
    finally:
        receiver.stdin.close()
        receiver.wait(10)
    def median(name: str) -> float:
        cpu = sorted(float(r["cpu_ms_per_delivery"]) for r in results[name])
        return cpu[len(cpu) // 2]

    return {
        # All queued at once (a backlog, n pending rows), and 32 at a time (a short queue).
        "cpu_ms_per_delivery": median("backlog"),
        "cpu_ms_per_delivery_short_queue": median("short_queue"),
        "runs": results,
        "n": n,
        "receiver": seen,  # requests, accepted, tcp_connections over every run
        "receiver_cpu_ms_per_request": round(seen["cpu_s"] * 1000 / max(seen["requests"], 1), 3),
    }


async def _embedded(n: int, url: str | None, directory: str) -> dict[str, Any]:
    """Embedded end to end (Maildir), ``n`` emails; with ``url``: one webhook each (SENT) to
    it. Emails/s to SENT, and CPU per email until every webhook is delivered too."""
    from actors.profiles.embedded import open_embedded, settle_heap
    from bench.embedded import _drive
    from config import load_config

    os.environ["MAILACTORS_BENCH_HOOK_SECRET"] = SECRET
    hooks: dict[str, Any] = {"enabled": False}
    if url is not None:
        hooks = {
            "enabled": True, "allow_private": True, "outbox_path": f"{directory}/hooks.sqlite3",
            "endpoints": [{"name": "bench", "url": url, "statuses": ["SENT"],
                           "secret_env": "MAILACTORS_BENCH_HOOK_SECRET"}],
        }  # fmt: skip
    config = load_config("embedded", env={}, overrides={
        "store": {"sqlite_path": f"{directory}/emails.sqlite3"},
        "provider": {"maildir_path": f"{directory}/maildir"},
        "email_server": {"idempotency_path": f"{directory}/sent.sqlite3"},
        "http": {"port": 0}, "webhooks": hooks,
    })  # fmt: skip

    async def delivered(app: Any, n: int) -> None:
        """Until the dispatcher has delivered ``n``: its snapshot is all there is to read."""
        while url is not None:
            extra = app.system.snapshot().by_path()["webhooks"].extra or {}
            if int(extra["bench"]["delivered"]) >= n:
                return
            await trio.sleep(0.1)  # a snapshot of the whole tree: not too often (it is CPU)

    async with open_embedded(config, grpc=False) as app:
        settle_heap()
        await _drive(app, 200, 64)  # warm up
        await delivered(app, 200)
        t0, cpu0 = time.perf_counter(), time.process_time()
        await _drive(app, n, 64)
        sent_s = time.perf_counter() - t0
        await delivered(app, 200 + n)
        cpu = time.process_time() - cpu0
    return {"emails_per_s": round(n / sent_s), "cpu_ms_per_email": round(cpu * 1000 / n, 3)}


def embedded_cost(n: int = 1000, runs: int = 3) -> dict[str, Any]:
    """``_embedded`` without and with webhooks, interleaved, against one live receiver."""
    receiver = subprocess.Popen(
        [sys.executable, "-m", "bench.webhooks", "receiver"],
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert receiver.stdin is not None and receiver.stdout is not None
    out: dict[str, list[dict[str, Any]]] = {"without": [], "with": []}
    try:
        url = json.loads(receiver.stdout.readline())["url"]
        for _ in range(runs):
            for name, target in (("without", None), ("with", url)):
                with tempfile.TemporaryDirectory(prefix="bench-hooks-") as directory:
                    out[name].append(trio.run(_embedded, n, target, directory))
    finally:
        receiver.stdin.close()
        receiver.wait(10)
    return out


async def _receiver() -> None:
    """Serve a receiver; on each "stats" line of stdin print what it saw; stop at EOF."""
    from actors.testing.webhooks import open_receiver

    async with open_receiver(SECRET) as receiver:
        print(json.dumps({"url": receiver.url}), flush=True)
        stdin = trio.wrap_file(sys.stdin)
        while await stdin.readline() == "stats\n":
            print(json.dumps({
                "requests": receiver.requests, "accepted": len(receiver.accepted),
                "bad": receiver.bad, "tcp_connections": len(receiver.peers),
                "cpu_s": round(time.process_time(), 3),
            }), flush=True)  # fmt: skip


if __name__ == "__main__":
    if sys.argv[1:] == ["receiver"]:
        trio.run(_receiver)
    elif sys.argv[1:2] == ["embedded"]:  # python -m bench.webhooks embedded [runs]
        print(json.dumps(embedded_cost(runs=int(sys.argv[2]) if sys.argv[2:] else 3)))
    else:  # python -m bench.webhooks [runs]: the figures as JSON
        print(json.dumps(webhook_delivery(runs=int(sys.argv[1]) if sys.argv[1:] else None)))

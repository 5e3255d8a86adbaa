"""Embedded end to end: emails/s from RequestEmail to SENT, Maildir provider, one process."""

from __future__ import annotations

import tempfile
import time
from typing import Any

import trio

from actors.auth.service import RequestEmail
from actors.domain.schema import Status
from actors.profiles.embedded import Embedded, open_embedded, settle_heap
from config import load_config
from runtime import run_with_asyncio_host


async def _run(n: int, directory: str, concurrency: int) -> dict[str, Any]:
    config = load_config(
        "embedded",
        env={},
        overrides={
            "store": {"sqlite_path": f"{directory}/emails.sqlite3"},
            "provider": {"maildir_path": f"{directory}/maildir"},
            "email_server": {"idempotency_path": f"{directory}/sent.sqlite3"},
            "http": {"port": 0},  # the web view serves, idle, as in `up`
        },
    )
    async with open_embedded(config, grpc=False) as app:
        settle_heap()  # as run_embedded does once started
        await _drive(app, 200, concurrency)  # warm up: imports, caches, first batches
        t0 = time.perf_counter()
        ids = await _drive(app, n, concurrency)
        elapsed = time.perf_counter() - t0
        latencies = []
        sent = 0
        for event_id in ids:
            doc = await app.store.get(event_id)
            sent += doc is not None and doc.status is Status.SENT
            if doc is not None and doc.latency_ms is not None:
                latencies.append(doc.latency_ms)
    latencies.sort()
    return {
        "emails_per_s": round(n / elapsed),
        "sent": sent,
        "p50_ms": round(latencies[len(latencies) // 2], 1) if latencies else None,
        "n": n,
        "seconds": round(elapsed, 2),
    }


async def _drive(app: Embedded, n: int, concurrency: int) -> list[str]:
    """Request ``n`` emails from ``concurrency`` callers; return once all are terminal."""
    ids: list[str] = []
    limiter = trio.Semaphore(concurrency)
    goal = app.api.watch.terminal + n

    async def one(i: int) -> None:
        async with limiter:
            accepted = await app.request(
                RequestEmail(
                    recipient=f"user{i}@example.com",
                    template="verification",
                    variables={"name": "Ada", "code": f"{i:06d}", "expires_minutes": 10},
                )
            )
            ids.append(accepted.event_id)

    async with trio.open_nursery() as nursery:
        for i in range(n):
            nursery.start_soon(one, i)
    await app.api.watch.wait_count(goal)
    return ids


def embedded_e2e(quick: bool = False) -> dict[str, Any]:
    n = 3000 if quick else 20_000
    concurrency = 512
    with tempfile.TemporaryDirectory() as directory:
        result = run_with_asyncio_host(_run, n, directory, concurrency)
    return {
        **result,
        "target": ">= 2000/s",
        "conditions": (
            f"{n} emails, {concurrency} concurrent callers, SQLite store, Maildir, 16 senders"
        ),
    }


if __name__ == "__main__":
    print(embedded_e2e(quick=True))

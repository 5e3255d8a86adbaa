"""The web view: its email log over 100,000 stored documents, and what it costs when idle.

``web_log``: 100,000 documents in the embedded SQLite store, the log page asked over HTTP
(httpx on loopback, logged in) the ways an operator does: the first page, twenty keyset
pages deep, filtered by status, by recipient, by template, oldest first. Each answer is
the whole page: the search, the counts per status, the HTML. Target: p95 < 200 ms.

``idle_cost``: embedded end to end with the HTTP server and the web view on, nobody
looking, against the same with them off, alternated, best of each.
"""

from __future__ import annotations

import re
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from actors.domain.schema import EmailDocument, Status
from actors.profiles.embedded import open_embedded, settle_heap
from config import load_config
from runtime import run_with_asyncio_host

from .embedded import _drive

STATUSES = [Status.SENT] * 8 + [Status.FAILED, Status.RETRYING]


def _config(directory: str, http: bool) -> Any:
    return load_config(
        "embedded",
        env={},
        overrides={
            "store": {"sqlite_path": f"{directory}/emails.sqlite3"},
            "provider": {"maildir_path": f"{directory}/maildir"},
            "email_server": {"idempotency_path": f"{directory}/sent.sqlite3"},
            "service": {"run_dir": f"{directory}/run"},
            "http": {"enabled": http, "port": 0},
        },
    )


async def _seed(app: Any, n: int) -> None:
    start = datetime.now(UTC) - timedelta(days=2)
    for first in range(0, n, 1000):
        docs = [
            EmailDocument(
                event_id=f"bench-{i:07d}",
                recipient=f"user{i % 5000}@example.com",
                template=("welcome", "verification", "password-reset")[i % 3],
                variables={"name": f"User {i}"},
                subject=f"Hello {i}",
                status=STATUSES[i % len(STATUSES)],
                created_at=start + timedelta(milliseconds=i),
            )
            for i in range(first, min(first + 1000, n))
        ]
        await app.store.save_many(docs)


async def _log_pages(n: int, rounds: int, directory: str) -> dict[str, Any]:
    async with open_embedded(_config(directory, http=True), grpc=False) as app:
        t0 = time.perf_counter()
        await _seed(app, n)
        seeded_s = time.perf_counter() - t0
        url = app.system.snapshot().by_path()["http"].extra["url"]  # type: ignore[index]
        async with httpx.AsyncClient(base_url=f"{url}/web", timeout=30) as client:
            page = await client.get("/login")
            csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
            assert csrf is not None
            await client.post("/login", data={"csrf": csrf.group(1)})
            timings: list[float] = []
            slowest: dict[str, float] = {}

            async def timed(path: str, kind: str = "keyset pages") -> str:
                t = time.perf_counter()
                reply = await client.get(path)
                ms = (time.perf_counter() - t) * 1000
                timings.append(ms)
                slowest[kind] = round(max(ms, slowest.get(kind, 0.0)), 1)
                assert reply.status_code == 200, reply.text[:300]
                return reply.text

            for _ in range(rounds):
                path = "/emails?size=50"
                for _ in range(20):  # keyset pages, deeper and deeper
                    html = await timed(path)
                    found = re.search(r'href="[^"]*(/web/emails\?[^"]+)" id="next-page"', html)
                    assert found is not None
                    path = found.group(1).replace("&amp;", "&").removeprefix("/web")
                await timed("/emails?status=FAILED", "status")
                await timed("/emails?recipient=user42@example.com", "recipient")
                await timed("/emails?template=welcome", "template (a scan of the JSON)")
                await timed("/emails?order=oldest&size=100", "oldest first, 100")
    timings.sort()
    return {
        "documents": n,
        "requests": len(timings),
        "p50_ms": round(statistics.median(timings), 1),
        "p95_ms": round(timings[int(len(timings) * 0.95) - 1], 1),
        "max_ms": round(timings[-1], 1),
        "slowest_ms_by_kind": slowest,
        "seed_s": round(seeded_s, 1),
    }


async def _e2e(n: int, directory: str, http: bool) -> float:
    async with open_embedded(_config(directory, http), grpc=False) as app:
        settle_heap()
        await _drive(app, 200, 512)
        t0 = time.perf_counter()
        await _drive(app, n, 512)
        return n / (time.perf_counter() - t0)


def web_log(quick: bool = False) -> dict[str, Any]:
    n = 100_000
    with tempfile.TemporaryDirectory() as directory:
        result = run_with_asyncio_host(_log_pages, n, 1 if quick else 3, directory)
    rates: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(1 if quick else 3):
        for http in (False, True):
            with tempfile.TemporaryDirectory() as directory:
                rates[http].append(
                    run_with_asyncio_host(_e2e, 3000 if quick else 10_000, directory, http)
                )
    on, off = max(rates[True]), max(rates[False])
    return {
        **result,
        "idle_cost": {"web_on_per_s": round(on), "web_off_per_s": round(off),
                      "ratio": round(on / off, 3)},  # fmt: skip
        "target": "log page p95 < 200 ms over 100,000 documents",
        "conditions": "SQLite store, embedded, httpx on loopback, pages of 50 (and 100)",
    }


if __name__ == "__main__":
    print(web_log(quick=True))

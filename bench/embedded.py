"""Embedded end to end: emails/s from RequestEmail to SENT, Maildir provider, one process.

Beside it, in the same run and interleaved with it, the same work done by a plain
script (:func:`plain_script`): no actors, no bus, no claims, one loop.
"""

from __future__ import annotations

import cProfile
import os
import socket
import tempfile
import time
import uuid
from typing import Any

import trio

from actors.auth.service import RequestEmail
from actors.domain.edges import OutgoingEmail
from actors.domain.mime import build_message, message_id_for, render_bytes
from actors.domain.schema import EmailDocument, EmailStatusEvent, Status
from actors.domain.templates import TemplateRenderer
from actors.domain.validation import validate_request_rendered
from actors.profiles.embedded import Embedded, open_embedded, settle_heap
from actors.stores.sqlite import SqliteStore
from config import load_config
from runtime import run_with_asyncio_host


async def _run(
    n: int, directory: str, concurrency: int, profiler: cProfile.Profile | None = None
) -> dict[str, Any]:
    """The pipeline's run; ``profiler``, if given, is on for the timed part only."""
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
        cpu0, main0 = time.process_time(), time.thread_time()
        if profiler is not None:
            profiler.enable()
        ids = await _drive(app, n, concurrency)
        if profiler is not None:
            profiler.disable()
        elapsed = time.perf_counter() - t0
        cpu, main = time.process_time() - cpu0, time.thread_time() - main0
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
        # CPU is steadier than the rate on a shared machine: the whole process (worker
        # threads and the kernel's work for them included), and the event loop's thread.
        "cpu_ms_per_email": round(cpu * 1000 / n, 3),
        "main_thread_cpu_ms_per_email": round(main * 1000 / n, 3),
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


async def plain_script(n: int, directory: str, batch: int = 500) -> dict[str, Any]:
    """The pipeline's work per email without the pipeline: what a plain program would do.

    For each batch of ``batch`` requests: validate and render each one (as auth does),
    insert their documents into SQLite in one transaction, build each MIME message and
    write it into the Maildir (tmp/, then renamed into new/, in this thread), then
    record them all SENT in one more transaction. Same store, same templates, same
    MIME code as the pipeline; no actors, no bus, no claims record, no thread per email.
    """
    config = load_config("embedded", env={})
    renderer = TemplateRenderer(config.templates.dir)
    store = SqliteStore(f"{directory}/plain.sqlite3")
    maildir = f"{directory}/plain-maildir"
    for sub in ("tmp", "new", "cur"):
        os.makedirs(f"{maildir}/{sub}", exist_ok=True)
    host = socket.gethostname().replace("/", r"\057").replace(":", r"\072")
    sender = config.provider.sender
    domain = config.provider.message_id_domain or sender.rpartition("@")[2]
    await store.open()
    try:
        t0 = time.perf_counter()
        cpu0 = time.process_time()
        for start in range(0, n, batch):
            docs: list[EmailDocument] = []
            rendered = []
            for i in range(start, min(n, start + batch)):
                variables = {"name": "Ada", "code": f"{i:06d}", "expires_minutes": 10}
                recipient, email = validate_request_rendered(
                    f"user{i}@example.com", "verification", variables, "transactional",
                    None, [], config.limits, renderer,
                )
                docs.append(
                    EmailDocument(
                        event_id=str(uuid.uuid4()), recipient=recipient,
                        template="verification", variables=variables,
                    )
                )
                rendered.append(email)
            await store.save_many(docs)
            events = []
            for j, (doc, email) in enumerate(zip(docs, rendered, strict=True)):
                data = render_bytes(
                    build_message(
                        OutgoingEmail(
                            event_id=doc.event_id, sender=sender, recipient=doc.recipient,
                            subject=email.subject, text=email.text, html=email.html,
                            message_id=message_id_for(doc.event_id, domain),
                        )
                    )
                )
                key = f"{int(time.time())}.M{start + j}P{os.getpid()},{doc.event_id},.{host}"
                fd = os.open(f"{maildir}/tmp/{key}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                try:
                    os.write(fd, data)
                finally:
                    os.close(fd)
                os.rename(f"{maildir}/tmp/{key}", f"{maildir}/new/{key}")
                events.append(
                    EmailStatusEvent(
                        event_id=doc.event_id, status=Status.SENT, provider="maildir",
                        provider_message_id=key, requested_at=doc.created_at,
                    )
                )
            await store.apply_status_many(events)
        elapsed = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
    finally:
        await store.close()
    return {
        "emails_per_s": round(n / elapsed),
        "cpu_ms_per_email": round(cpu * 1000 / n, 3),
        "n": n,
        "seconds": round(elapsed, 2),
    }


def embedded_e2e(quick: bool = False) -> dict[str, Any]:
    """The pipeline and the plain script, alternating, best of each (the same machine noise)."""
    n = 3000 if quick else 20_000
    rounds = 2 if quick else 3
    concurrency = 512
    pipeline: list[dict[str, Any]] = []
    plain: list[dict[str, Any]] = []
    for _ in range(rounds):
        with tempfile.TemporaryDirectory() as directory:
            plain.append(trio.run(plain_script, n, directory))
        with tempfile.TemporaryDirectory() as directory:
            pipeline.append(run_with_asyncio_host(_run, n, directory, concurrency))
    best = max(pipeline, key=lambda r: r["emails_per_s"])
    script = max(r["emails_per_s"] for r in plain)
    script_cpu = min(r["cpu_ms_per_email"] for r in plain)
    pipeline_cpu = min(r["cpu_ms_per_email"] for r in pipeline)
    return {
        **best,
        "plain_script_per_s": script,
        "ratio": round(best["emails_per_s"] / script, 3),
        # The same comparison in CPU per email (script / pipeline: 1.0 = costs the same).
        "plain_cpu_ms_per_email": script_cpu,
        "cpu_ratio": round(script_cpu / pipeline_cpu, 3),
        "runs_cpu_ms_per_email": [r["cpu_ms_per_email"] for r in pipeline],
        "runs_per_s": [r["emails_per_s"] for r in pipeline],
        "by_concurrency": by_concurrency(quick),
        "plain_runs_per_s": [r["emails_per_s"] for r in plain],
        "target": ">= 2000/s; ratio >= 0.8",
        "conditions": (
            f"{n} emails, {concurrency} concurrent callers, SQLite store, Maildir, 16 senders "
            "taking up to 16 jobs a turn (one claims ask, one Maildir write, one outcomes ask "
            "per turn); "
            f"plain script: the same validation, rendering, MIME, SQLite batches of 500 and "
            f"Maildir files in one loop; best of {rounds} alternating runs of each"
        ),
    }


async def _open_loop(rate: float, seconds: float, directory: str) -> list[float]:
    """Requests started at ``rate``/s for ``seconds`` whatever the answers (open loop); the
    sorted request-to-send latencies (ms) of all of them once all are terminal."""
    config = load_config(
        "embedded",
        env={},
        overrides={
            "store": {"sqlite_path": f"{directory}/emails.sqlite3"},
            "provider": {"maildir_path": f"{directory}/maildir"},
            "email_server": {"idempotency_path": f"{directory}/sent.sqlite3"},
        },
    )
    n = max(1, int(rate * seconds))
    async with open_embedded(config, grpc=False) as app:
        settle_heap()
        await _drive(app, 200, 64)  # warm up
        goal = app.api.watch.terminal + n
        ids: list[str] = []

        async def one(i: int) -> None:
            accepted = await app.request(
                RequestEmail(
                    recipient=f"user{i}@example.com",
                    template="verification",
                    variables={"name": "Ada", "code": f"{i:06d}", "expires_minutes": 10},
                )
            )
            ids.append(accepted.event_id)

        t0 = trio.current_time()
        async with trio.open_nursery() as nursery:
            for i in range(n):
                await trio.sleep_until(t0 + i / rate)
                nursery.start_soon(one, i)
        await app.api.watch.wait_count(goal)
        latencies = []
        for event_id in ids:
            doc = await app.store.get(event_id)
            if doc is not None and doc.latency_ms is not None:
                latencies.append(doc.latency_ms)
    return sorted(latencies)


def latency_embedded(quick: bool = False, max_rate: float | None = None) -> dict[str, Any]:
    """p50/p99 request-to-send at 25%, 50% and 75% of the embedded maximum rate (the
    embedded_e2e figure of this run, or one measured here)."""
    from .distributed import LOADS, cdf

    if max_rate is None:
        with tempfile.TemporaryDirectory() as directory:
            max_rate = run_with_asyncio_host(_run, 2000, directory, 512)["emails_per_s"]
    assert max_rate is not None
    seconds = 4.0 if quick else 15.0
    loads = []
    for fraction in LOADS:
        with tempfile.TemporaryDirectory() as directory:
            values = run_with_asyncio_host(_open_loop, max_rate * fraction, seconds, directory)
        loads.append(
            {
                "fraction": fraction,
                "rate_per_s": round(max_rate * fraction),
                "p50_ms": round(values[len(values) // 2], 1),
                "p99_ms": round(values[int(len(values) * 0.99) - 1], 1),
                "samples": len(values),
                "cdf_ms": cdf(values),
            }
        )
    middle = loads[1]
    return {
        "p50_ms": middle["p50_ms"],
        "p99_ms": middle["p99_ms"],
        "rate_per_s": middle["rate_per_s"],
        "max_rate_per_s": round(max_rate),
        "loads": loads,
        "target": "p99 <= 100 ms (at 50%)",
        "conditions": (
            f"open loop for {seconds:g} s at each fraction of the embedded maximum rate, "
            "SQLite, Maildir, 16 batching senders, a fresh process state each; latency = request "
            "accepted by auth to provider accept"
        ),
    }


def by_concurrency(quick: bool = False) -> list[dict[str, Any]]:
    """The embedded pipeline's rate against the number of concurrent callers."""
    n = 1500 if quick else 5000
    out = []
    for callers in (4, 16, 64, 256, 1024):
        with tempfile.TemporaryDirectory() as directory:
            r = run_with_asyncio_host(_run, n, directory, callers)
        out.append(
            {"callers": callers, "emails_per_s": r["emails_per_s"], "p50_ms": r["p50_ms"]}
        )
    return out


if __name__ == "__main__":
    print(embedded_e2e(quick=True))

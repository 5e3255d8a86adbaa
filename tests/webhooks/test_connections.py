"""The dispatcher keeps its connections alive: many deliveries, few TCP connections, every
outcome stored (the outbox writes outcomes that end together in one transaction)."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import trio

from actors.webhooks import WebhookItem
from config import WebhookEndpointConfig, WebhooksConfig
from tests.support.webhooks import WatchedOutbox, dispatching, open_receiver

SECRET = "keep-alive-test-secret"


async def test_deliveries_reuse_one_connection_per_slot(tmp_path: Path) -> None:
    emails, concurrency = 30, 2
    (tmp_path / "secret").write_text(SECRET)
    now = time.time()
    items = [
        WebhookItem(
            webhook_id=f"msg_k{i}", endpoint="r", event_id=f"email-{i % emails}", sequence=i,
            body=b'{"n": %d}' % i, created_at=now,
        )  # fmt: skip
        for i in range(2 * emails)  # two per email: the second may go only after the first
    ]
    async with open_receiver(SECRET) as receiver:
        endpoint = WebhookEndpointConfig(
            name="r", url=receiver.url, secret_file=str(tmp_path / "secret"),
            concurrency=concurrency,
        )  # fmt: skip
        settings = WebhooksConfig(enabled=True, allow_private=True, endpoints=(endpoint,))
        async with WatchedOutbox(str(tmp_path / "outbox.sqlite3")) as outbox:
            await outbox.add_many(items)
            async with dispatching(settings, outbox):
                with trio.fail_after(30):
                    await outbox.wait_delivered(len(items))
            counts = await outbox.counts()
    assert counts == {"r": {"delivered": len(items)}}  # every outcome stored
    assert len(receiver.accepted) == len(items) and receiver.repeats == 0 and receiver.bad == 0
    arrived = list(receiver.accepted)  # in the order they came
    for e in range(emails):  # per email, in the order queued
        assert arrived.index(f"msg_k{e}") < arrived.index(f"msg_k{e + emails}")
    # One connection per slot, kept alive between tries (a new one per try would be 60).
    assert len(receiver.peers) <= concurrency, receiver.peers


class _CountingOutbox(WatchedOutbox):
    transactions = 0

    def _write_batch(self, writes: list[tuple[str, tuple[Any, ...]]]) -> None:
        self.transactions += 1
        super()._write_batch(writes)


async def test_outcomes_that_end_together_share_a_transaction(tmp_path: Path) -> None:
    n = 10
    now = time.time()
    async with _CountingOutbox(str(tmp_path / "outbox.sqlite3")) as outbox:
        await outbox.add_many([
            WebhookItem(webhook_id=f"msg_t{i}", endpoint="r", event_id=f"e{i}", sequence=i,
                        body=b"{}", created_at=now)
            for i in range(n)
        ])  # fmt: skip
        jobs = [await outbox.take("r") for _ in range(n)]
        async with trio.open_nursery() as nursery:
            for job in jobs[:-1]:
                nursery.start_soon(outbox.delivered, job)
            nursery.start_soon(outbox.retry, jobs[-1], 60.0, "HTTP 500")
        counts = await outbox.counts()
    with sqlite3.connect(tmp_path / "outbox.sqlite3") as db:
        due_at, error, attempts = db.execute(
            "SELECT due_at, last_error, attempts FROM webhook_outbox WHERE webhook_id = 'msg_t9'"
        ).fetchone()
    assert counts == {"r": {"delivered": n - 1, "pending": 1}}  # each stored, as its own
    assert due_at > now + 30 and error == "HTTP 500" and attempts == 1
    assert outbox.transactions <= 3, outbox.transactions  # not one a delivery
    print(f"{n} outcomes in {outbox.transactions} transactions")

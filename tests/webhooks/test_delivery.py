"""Webhooks from a running embedded system to real HTTP receivers on loopback."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import trio

from actors.domain.edges import ApplyOutcome
from actors.domain.schema import Status
from tests.support.embedded import embedded_config, request, running
from tests.support.webhooks import bodies, open_receiver, webhook_sections

SECRET = "whsec_" + "c2VjcmV0LWZvci10ZXN0cy0xMjM0NTY3ODkw"  # base64 of a test secret
N = 12


def _in_order(events: list[dict[str, object]]) -> bool:
    seqs = [e["sequence"] for e in events]
    return seqs == sorted(seqs) and len(set(seqs)) == len(seqs)  # type: ignore[type-var]


async def test_good_failing_and_slow_receivers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    slow_delay = 2.0
    async with (
        open_receiver(SECRET) as good,
        open_receiver(SECRET, mode="fail") as flaky,
        open_receiver(SECRET, mode="slow", delay=slow_delay) as slow,
    ):
        hooks = webhook_sections(tmp_path, [
            {"name": "good", "url": good.url, "secret": SECRET},
            {"name": "flaky", "url": flaky.url, "secret": SECRET, "statuses": ["SENDING", "SENT"]},
            {"name": "slow", "url": slow.url, "secret": SECRET, "concurrency": 2},
        ])  # fmt: skip
        config = embedded_config(
            tmp_path, webhooks=hooks, email_server={"report_sending": True}
        )
        async with running(config) as app:
            start = trio.current_time()
            ids = [(await app.request(request(to=f"user{i}@example.com"))).event_id
                   for i in range(N)]  # fmt: skip
            for event_id in ids:
                assert (await app.wait_terminal(event_id)).status is Status.SENT
            # SENDING and SENT of every email: at the good receiver, quickly, whatever the
            # slow one (2 s a request) and the failing one do meanwhile.
            with trio.fail_after(10):
                await good.wait_for(2 * N)
            good_took = trio.current_time() - start
            print(f"good receiver had all {2 * N} events {good_took:.2f}s after the first request;"
                  f" the slow one {len(slow.accepted)}")  # fmt: skip
            assert good_took < slow_delay, f"good receiver waited {good_took:.2f}s"
            assert len(slow.accepted) < 2 * N  # still busy: it did not hold the others up
            assert flaky.requests > 0 and not flaky.accepted
            snapshot = app.system.snapshot().by_path()["webhooks"].extra or {}
            assert snapshot["flaky"]["retried"] > 0  # type: ignore[index]
            flaky.mode = "ok"  # recovers: everything queued for it arrives
            with trio.fail_after(20):
                await flaky.wait_for(2 * N)
        for receiver in (good, flaky):
            assert receiver.bad == 0
            assert len(receiver.accepted) == 2 * N
            for event_id in ids:
                events = receiver.events_for(event_id)
                assert [e["status"] for e in events] == ["SENDING", "SENT"], bodies(receiver)
                assert _in_order(events)
        assert SECRET not in caplog.text and SECRET.removeprefix("whsec_") not in caplog.text
        assert "failed (try 1)" in caplog.text  # the flaky one's failures were logged
        assert good.repeats == 0  # exactly once (at-least-once, but nothing failed there)
        sent = good.events_for(ids[0])[1]
        assert sent["recipient"] == "user0@example.com"
        assert sent["category"] == "transactional"
        assert sent["provider"] == "maildir" and sent["providerMessageId"]
        assert sent["time"] and sent["attempt"] == 1


async def test_a_cancelled_scheduled_email_is_a_webhook_too(tmp_path: Path) -> None:
    async with open_receiver(SECRET) as receiver:
        hooks = webhook_sections(tmp_path, [
            {"name": "r", "url": receiver.url, "secret": SECRET, "statuses": ["CANCELLED"]},
        ])  # fmt: skip
        async with running(embedded_config(tmp_path, webhooks=hooks)) as app:
            later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
            reply = await app.request(request(send_at=later))
            assert (await app.api.cancel(reply.event_id)).outcome is ApplyOutcome.APPLIED
            assert (await app.api.cancel(reply.event_id)).outcome is ApplyOutcome.IGNORED
            with trio.fail_after(10):
                await receiver.wait_for(1)
    (body,) = receiver.order
    assert (body["eventId"], body["status"], body["emailStatus"]) == (
        reply.event_id, "CANCELLED", "CANCELLED"
    )

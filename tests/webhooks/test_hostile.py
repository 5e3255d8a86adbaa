"""Endpoints that hang, fail, answer late, redirect or sit on a private address: none of
them holds up the others, crashes anything, or loses what it was owed."""

from __future__ import annotations

import ipaddress
import time
from pathlib import Path

import pytest
import trio

from actors.profiles.embedded import open_embedded
from actors.telemetry.metrics import EmailMetrics
from actors.webhooks import SqliteOutbox, WebhookItem
from actors.webhooks.delivery import (
    NotAllowed,
    Target,
    open_pool,
    post,
    resolve_allowed,
    tls_context,
)
from runtime import ActorState
from runtime.testing import wait_for_state
from tests.support.embedded import embedded_config, request
from tests.support.waiting import poll_until
from tests.support.webhooks import open_receiver, webhook_sections

SECRET = "a plain-text secret works too"


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "localhost", "10.1.2.3", "192.168.0.10", "169.254.169.254", "::1",
             "::ffff:127.0.0.1", "fe80::1", "0.0.0.0"],
)  # fmt: skip
async def test_private_loopback_and_link_local_targets_are_refused(host: str) -> None:
    with pytest.raises(NotAllowed, match="webhooks.allow_private"):
        await resolve_allowed(host, 443, allow_private=False)
    address = await resolve_allowed(host, 443, allow_private=True)
    assert isinstance(address, ipaddress.IPv4Address | ipaddress.IPv6Address)


async def test_a_refused_target_is_never_contacted_and_not_retried() -> None:
    async with open_receiver(SECRET) as receiver, open_pool(4, tls_context()) as pool:
        item = WebhookItem(webhook_id="msg_1", endpoint="e", event_id="x", sequence=1,
                           body=b"{}", created_at=time.time())  # fmt: skip
        answer = await post(
            pool, Target(receiver.url, SECRET), item, timeout_s=5, allow_private=False
        )
    assert not answer.ok and answer.permanent
    assert "127.0.0.1" in (answer.error or "")
    assert receiver.requests == 0


async def test_a_redirect_is_not_followed() -> None:
    async with (
        open_receiver(SECRET, mode="redirect") as receiver,
        open_pool(4, tls_context()) as pool,
    ):
        item = WebhookItem(webhook_id="msg_2", endpoint="e", event_id="x", sequence=1,
                           body=b"{}", created_at=time.time())  # fmt: skip
        answer = await post(
            pool, Target(receiver.url, SECRET), item, timeout_s=5, allow_private=True
        )
    assert not answer.ok and not answer.permanent
    assert answer.error is not None and "302 redirect" in answer.error
    assert receiver.requests == 1  # the redirect target (port 9) was never asked


async def test_an_endless_answer_is_cut_short() -> None:
    async with open_receiver(SECRET, mode="flood") as receiver, open_pool(4, tls_context()) as pool:
        item = WebhookItem(webhook_id="msg_3", endpoint="e", event_id="x", sequence=1,
                           body=b"{}", created_at=time.time())  # fmt: skip
        with trio.fail_after(5):
            answer = await post(pool, Target(receiver.url, SECRET), item, timeout_s=30,
                                allow_private=True)  # fmt: skip
    assert not answer.ok and answer.error is not None
    assert answer.error.startswith("HTTP 500: xxx") and len(answer.error) < 300


async def test_hostile_endpoints_do_not_hold_up_a_good_one_and_get_everything_on_replay(
    tmp_path: Path,
) -> None:
    n = 6
    async with (
        open_receiver(SECRET) as good,
        open_receiver(SECRET, mode="hang") as hang,
        open_receiver(SECRET, mode="fail") as error500,
        open_receiver(SECRET, mode="slow", delay=30.0) as late,
        open_receiver(SECRET, mode="redirect") as redirect,
    ):
        bad = {"hang": hang, "error500": error500, "late": late, "redirect": redirect}
        endpoints = [{"name": "good", "url": good.url, "secret": SECRET, "statuses": ["SENT"]}]
        endpoints += [
            {"name": name, "url": r.url, "secret": SECRET, "statuses": ["SENT"], "timeout_s": 0.5}
            for name, r in bad.items()
        ]
        hooks = webhook_sections(tmp_path, endpoints, max_age_s=1.5)
        config = embedded_config(tmp_path, webhooks=hooks)
        metrics = EmailMetrics()
        async with open_embedded(config, grpc=False, shutdown=10.0, metrics=metrics) as app:
            start = trio.current_time()
            ids = [(await app.request(request(to=f"u{i}@example.com"))).event_id for i in range(n)]
            with trio.fail_after(10):
                await good.wait_for(n)
            assert trio.current_time() - start < 3.0  # tries to the others time out at 0.5 s
            # Every try to the others fails until the deliveries are 1.5 s old: given up.
            async with SqliteOutbox(config.webhooks.outbox_path) as outbox:

                async def all_given_up() -> bool:
                    return len(await outbox.failed(1000)) == 4 * n

                await poll_until(all_given_up, timeout=15, what="the deliveries given up")
                failed = await outbox.failed(1000)
                assert {f.endpoint for f in failed} == set(bad)
                errors = {f.endpoint: f.last_error or "" for f in failed}
                assert "no answer within 0.5 s" in errors["hang"]
                assert "no answer within 0.5 s" in errors["late"]
                assert "HTTP 500" in errors["error500"]
                assert "302 redirect" in errors["redirect"]
                info = app.system.snapshot().by_path()["webhooks"]
                assert info.restarts == 0
                assert info.extra is not None and info.extra["hang"]["failed"] == n  # console
                count = metrics.registry.get_sample_value
                for name in bad:
                    labels = {"endpoint": name, "outcome": "failed"}
                    assert count("mailactors_webhook_deliveries_total", labels) == n
                assert count("mailactors_webhook_deliveries_total",
                             {"endpoint": "good", "outcome": "delivered"}) == n  # fmt: skip
                # They recover; the operator replays (the CLI does this from another process).
                for receiver in bad.values():
                    receiver.mode = "ok"
                assert await outbox.replay() == 4 * n
            with trio.fail_after(15):
                for receiver in bad.values():
                    await receiver.wait_for(n)
        for receiver in (good, *bad.values()):
            assert receiver.bad == 0
            assert {body["eventId"] for body in receiver.order} == set(ids)
        assert good.repeats == 0


async def test_a_dispatcher_crash_mid_delivery_hands_the_delivery_back(tmp_path: Path) -> None:
    async with open_receiver(SECRET, mode="hang") as receiver:
        endpoints = [{"name": "held", "url": receiver.url, "secret": SECRET, "timeout_s": 60,
                      "statuses": ["SENT"]}]  # fmt: skip
        config = embedded_config(tmp_path, webhooks=webhook_sections(tmp_path, endpoints))
        async with open_embedded(config, grpc=False, shutdown=10.0) as app:
            event_id = (await app.request(request())).event_id
            with trio.fail_after(10):
                await receiver.wait_requests(1)  # held, unanswered
            receiver.mode = "ok"
            await app.system.inject_crash("webhooks", RuntimeError("crashed on purpose"))
            await wait_for_state(app.system, "webhooks", ActorState.RUNNING, restarts=1)
            with trio.fail_after(10):
                await receiver.wait_for(1)  # the restarted dispatcher takes it again
    assert [body["eventId"] for body in receiver.order] == [event_id]
    assert receiver.requests == 2  # the held try, then the one after the restart


async def test_the_breaker_stops_hammering_a_failing_endpoint(tmp_path: Path) -> None:
    async with open_receiver(SECRET, mode="fail") as receiver:
        endpoints = [{"name": "down", "url": receiver.url, "secret": SECRET, "concurrency": 1,
                      "statuses": ["SENT"]}]  # fmt: skip
        hooks = webhook_sections(
            tmp_path, endpoints, base_delay_s=0.01, max_delay_s=0.01, breaker_failures=3,
            breaker_cool_down_s=30.0,
        )  # fmt: skip
        config = embedded_config(tmp_path, webhooks=hooks)
        async with open_embedded(config, grpc=False, shutdown=10.0) as app:
            for i in range(5):
                await app.request(request(to=f"u{i}@example.com"))
            with trio.fail_after(10):
                await receiver.wait_requests(3)
            # Without the breaker, 5 deliveries retried every 10 ms would be hundreds of tries
            # in this half second; with it, the three that opened it and no more.
            await trio.sleep(0.5)
            info = app.system.snapshot().by_path()["webhooks"].extra or {}
            assert info["down"]["breaker"] == "open"  # type: ignore[index]
        assert receiver.requests == 3

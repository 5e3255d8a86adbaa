"""Webhooks in the distributed profile: queued in RabbitMQ by the integration process."""

from __future__ import annotations

import os
import signal
from email import message_from_bytes, policy
from pathlib import Path

import httpx
import pytest
import trio

from actors.email_server.suppression_elasticsearch import (
    ElasticsearchSuppression,
    suppression_index,
)
from actors.testing.fakesmtp import free_port
from config import load_config
from runtime import AsyncioEdge
from tests.support.cluster import Cluster, cluster_env
from tests.support.smtp_servers import CapturingServer
from tests.support.waiting import poll_until
from tests.support.webhooks import (
    Receiver,
    email_status,
    open_receiver,
    request_email,
    webhook_cluster,
)

TERMINAL = {"SENT", "FAILED", "SUPPRESSED"}

pytestmark = pytest.mark.services

SECRET = "distributed-webhook-secret"


def assert_everything(receiver: Receiver, ids: list[str]) -> None:
    assert receiver.bad == 0
    assert {b["eventId"] for b in receiver.order} == set(ids)
    for event_id in ids:
        events = sorted(receiver.events_for(event_id), key=lambda b: b["sequence"])
        # RabbitMQ does not keep the order; the sequence number tells it.
        assert [e["status"] for e in events] == ["SENDING", "SENT"]


async def test_every_event_reaches_the_receivers_through_rabbitmq(
    tmp_path: Path, elasticsearch_url: str, rabbitmq_url: str, edge: AsyncioEdge
) -> None:
    n = 20
    async with open_receiver(SECRET) as good, open_receiver(SECRET, mode="fail") as flaky:
        endpoints = [
            {"name": "good", "url": good.url},
            {"name": "flaky", "url": flaky.url, "concurrency": 2},
        ]
        async with webhook_cluster(
            tmp_path, elasticsearch_url, rabbitmq_url, edge, endpoints, SECRET, n
        ) as (_, ids):
            with trio.fail_after(60):
                await good.wait_for(2 * n)  # SENDING and SENT of each
            assert flaky.requests > 0 and not flaky.accepted
            flaky.mode = "ok"  # it recovers: the retry queue brings everything back
            with trio.fail_after(60):
                await flaky.wait_for(2 * n)
    assert_everything(good, ids)
    assert_everything(flaky, ids)


async def test_integration_killed_with_deliveries_in_flight_loses_none(
    tmp_path: Path, elasticsearch_url: str, rabbitmq_url: str, edge: AsyncioEdge
) -> None:
    n = 8
    async with open_receiver(SECRET, mode="hang") as receiver:
        endpoints = [{"name": "held", "url": receiver.url, "timeout_s": 60, "concurrency": 4}]
        async with webhook_cluster(
            tmp_path, elasticsearch_url, rabbitmq_url, edge, endpoints, SECRET, n
        ) as (cluster, ids):
            with trio.fail_after(60):
                await receiver.wait_requests(4)
            held = receiver.requests  # in flight, unanswered: not acked in RabbitMQ
            receiver.mode = "ok"
            os.kill(cluster.pids("integration")[0], signal.SIGKILL)
            await cluster.wait_for(lambda: len(cluster.ready_lines("integration")) >= 2, 60)
            with trio.fail_after(60):
                await receiver.wait_for(2 * n)
    assert held >= 4
    assert_everything(receiver, ids)


async def test_one_click_unsubscribe_served_by_the_integration_process(
    tmp_path: Path, elasticsearch_url: str, rabbitmq_url: str, edge: AsyncioEdge
) -> None:
    port = free_port()
    with CapturingServer() as smtp:
        env = cluster_env(tmp_path, elasticsearch_url, rabbitmq_url, smtp.port) | {
            "UNSUB_KEY": "distributed-unsubscribe-key",
            "MAILACTORS__UNSUBSCRIBE__CATEGORIES": '["newsletter"]',
            "MAILACTORS__UNSUBSCRIBE__SECRET_ENV": "UNSUB_KEY",
            "MAILACTORS__HTTP__ENABLED": "true",
            "MAILACTORS__HTTP__PORT": str(port),
        }
        config = load_config("distributed", env=env)
        async with Cluster(env, workers=1, log=tmp_path / "cluster.log").running() as cluster:
            auth, integration = cluster.auth_port, cluster.integration_port

            async def terminal(event_id: str) -> str:
                async def done() -> bool:
                    return await email_status(edge, integration, event_id) in TERMINAL

                await poll_until(done, timeout=30, what=f"{event_id} terminal")
                return await email_status(edge, integration, event_id)

            first = await request_email(edge, auth, "ada@example.com", "newsletter")
            assert await terminal(first) == "SENT"
            (message,) = smtp.messages()
            header = message_from_bytes(message.data, policy=policy.default)["List-Unsubscribe"]
            url = str(header).split(">")[0].lstrip("<")
            assert url.startswith(f"http://127.0.0.1:{port}/unsubscribe/")
            async with httpx.AsyncClient() as client:
                assert (await client.get(url)).status_code == 200
                done = await client.post(url, data={"List-Unsubscribe": "One-Click"})
            assert done.status_code == 200, done.text
            c = config.email_server
            async with ElasticsearchSuppression(
                config.store.resolved_url(), suppression_index(c.claims_index)
            ) as suppression:

                async def listed() -> bool:  # searchable after the index's refresh (~1 s)
                    return bool(await suppression.entries())

                await poll_until(listed, timeout=10, what="the entry in the index")
                entries = await suppression.entries()
            assert [(e.address, e.category, e.source) for e in entries] == [
                ("ada@example.com", "newsletter", "unsubscribe")
            ]

            # The workers read the list every refresh_s (2 s): within that, newsletters stop.
            async def stopped() -> bool:
                event_id = await request_email(edge, auth, "ada@example.com", "newsletter")
                return await terminal(event_id) == "SUPPRESSED"

            await poll_until(stopped, timeout=20, interval=0.5, what="the next newsletter")
            receipt = await request_email(edge, auth, "ada@example.com")
            assert await terminal(receipt) == "SENT"

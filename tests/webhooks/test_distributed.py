"""Webhooks in the distributed profile: queued in RabbitMQ by the integration process."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
import trio

from actors.grpc.convert import variables_to_struct
from protos import email_grpc, email_pb2
from runtime import AsyncioEdge
from tests.support.cluster import Cluster, cluster_env
from tests.support.smtp_servers import CapturingServer
from tests.support.webhooks import delete_webhook_queues, open_receiver

pytestmark = pytest.mark.services

SECRET = "distributed-webhook-secret"


async def request(edge: AsyncioEdge, port: int, to: str) -> str:
    from grpclib.client import Channel

    req = email_pb2.RequestEmailRequest(
        recipient=to,
        template="verification",
        variables=variables_to_struct({"name": "Ada", "code": "1", "expires_minutes": 5}),
    )

    async def go() -> Any:
        channel = Channel("127.0.0.1", port)
        try:
            return await email_grpc.AuthServiceStub(channel).RequestEmail(req, timeout=30)
        finally:
            channel.close()

    return str((await edge.run(go)).event_id)


async def test_every_event_reaches_the_receivers_through_rabbitmq(
    tmp_path: Path, elasticsearch_url: str, rabbitmq_url: str, edge: AsyncioEdge
) -> None:
    n = 20
    prefix = f"test.hooks.{uuid.uuid4().hex[:8]}"
    async with open_receiver(SECRET) as good, open_receiver(SECRET, mode="fail") as flaky:
        endpoints = [
            {"name": "good", "url": good.url, "secret_env": "HOOK_SECRET"},
            {"name": "flaky", "url": flaky.url, "secret_env": "HOOK_SECRET", "concurrency": 2},
        ]
        extra = {
            "HOOK_SECRET": SECRET,
            "MAILACTORS__WEBHOOKS__ENABLED": "true",
            "MAILACTORS__WEBHOOKS__ALLOW_PRIVATE": "true",
            "MAILACTORS__WEBHOOKS__QUEUE_PREFIX": prefix,
            "MAILACTORS__WEBHOOKS__BASE_DELAY_S": "0.1",
            "MAILACTORS__WEBHOOKS__MAX_DELAY_S": "0.5",
            "MAILACTORS__WEBHOOKS__BREAKER_COOL_DOWN_S": "0.3",
            "MAILACTORS__WEBHOOKS__ENDPOINTS": json.dumps(endpoints),
            "MAILACTORS__EMAIL_SERVER__REPORT_SENDING": "true",
        }
        try:
            with CapturingServer() as smtp:
                env = cluster_env(tmp_path, elasticsearch_url, rabbitmq_url, smtp.port) | extra
                log = tmp_path / "cluster.log"
                async with Cluster(env, workers=1, log=log).running() as cluster:
                    ids = [await request(edge, cluster.auth_port, f"u{i}@example.com")
                           for i in range(n)]  # fmt: skip
                    with trio.fail_after(60):
                        await good.wait_for(2 * n)  # SENDING and SENT of each
                    assert flaky.requests > 0 and not flaky.accepted
                    flaky.mode = "ok"  # it recovers: the retry queue brings everything back
                    with trio.fail_after(60):
                        await flaky.wait_for(2 * n)
        finally:
            await delete_webhook_queues(edge, rabbitmq_url, prefix, ["good", "flaky"])
    for receiver in (good, flaky):
        assert receiver.bad == 0
        assert {b["eventId"] for b in receiver.order} == set(ids)
        for event_id in ids:
            events = sorted(receiver.events_for(event_id), key=lambda b: b["sequence"])
            # RabbitMQ does not keep the order; the sequence number tells it.
            assert [e["status"] for e in events] == ["SENDING", "SENT"]

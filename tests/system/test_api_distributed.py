"""Issue 17 on the distributed profile: auth, integration and an email-server worker as OS
processes, real RabbitMQ, the Elasticsearch API, SMTP to aiosmtpd, gRPC from the test.

Addressing and headers cross auth -> integration (SaveEmails over gRPC) -> the broker ->
the worker; a batch; and scheduled emails held by the store alone: integration is SIGKILLed
while they wait, and they are sent after their time by the integration that replaces it,
the cancelled one never.
"""

from __future__ import annotations

import os
import signal
from datetime import UTC, datetime
from pathlib import Path

import pytest
from grpclib import GRPCError
from grpclib import Status as GrpcStatus

from actors.testing.cluster import Cluster, cluster_env
from protos import email_pb2
from runtime import AsyncioEdge
from tests.support.email_api import api_request, header_block, parsed, rfc3339_in
from tests.support.security import GrpcClient
from tests.support.smtp_servers import CapturingServer
from tests.support.waiting import poll_until

pytestmark = [pytest.mark.services, pytest.mark.trio]


async def test_addressing_batch_and_scheduled_sends_on_the_distributed_profile(
    tmp_path: Path, elasticsearch_url: str, rabbitmq_url: str, edge: AsyncioEdge
) -> None:
    async with CapturingServer() as smtp:
        env = cluster_env(
            tmp_path, elasticsearch_url, rabbitmq_url, smtp.port,
            extra={"MAILACTORS__API__SENDERS": '["example.com"]',
                   "MAILACTORS__API__SCHEDULE_INTERVAL_S": "5"},
        )
        cluster = Cluster(env, workers=1, log=tmp_path / "cluster.log")
        async with cluster.running():
            auth = GrpcClient(edge, cluster.auth_port)
            integration = GrpcClient(edge, cluster.integration_port)
            async with auth, integration:

                def delivered(event_id: str) -> list[object]:
                    return [m for m in smtp.messages() if m.event_id == event_id]

                async def get(event_id: str) -> email_pb2.EmailDocument:
                    reply = await integration.call(
                        "GetEmail", email_pb2.GetEmailRequest(event_id=event_id)
                    )
                    return reply.document

                async def is_sent(event_id: str) -> bool:
                    try:
                        return bool((await get(event_id)).status == email_pb2.SENT)
                    except (GRPCError, OSError):  # integration is being restarted
                        return False

                # Scheduled first, so that they are due while the rest runs.
                first_at, due = rfc3339_in(12.0)
                scheduled = await auth.call(
                    "RequestEmail", api_request(recipient="later@example.com", send_at=first_at)
                )
                doomed = await auth.call(
                    "RequestEmail", api_request(recipient="never@example.com", send_at=first_at)
                )
                assert scheduled.status == doomed.status == email_pb2.SCHEDULED
                cancelled = await auth.call(
                    "CancelEmail", email_pb2.CancelEmailRequest(event_id=doomed.event_id),
                    auth=True,
                )
                assert cancelled.status == email_pb2.CANCELLED

                one = await auth.call(
                    "RequestEmail",
                    api_request(
                        recipient="ada@example.com", from_address="news@example.com",
                        from_name="News", cc=["carol@example.org"], bcc=["bob@example.net"],
                        headers={"X-Campaign": "dec"}, tags=["dist"], metadata={"k": "v"},
                    ),
                )
                requests = [api_request(recipient=f"u{i}@example.com") for i in range(50)]
                requests[5].headers["Return-Path"] = "<evil@example.com>"
                requests[40].bcc.append("nope")
                batch = await auth.call(
                    "RequestEmails", email_pb2.RequestEmailsRequest(requests=requests)
                )
                errors = {i: r.error for i, r in enumerate(batch.results) if r.error}
                assert sorted(errors) == [5, 40]
                assert errors[5].startswith("requests[5].headers['Return-Path']: ")
                assert errors[40].startswith("requests[40].bcc[0]: ")
                accepted = {r.event_id for r in batch.results if not r.error}

                # Integration dies with the scheduled email in its store only.
                assert datetime.now(UTC) < due, "too slow: due before the kill"
                assert (await get(scheduled.event_id)).status == email_pb2.SCHEDULED
                killed = cluster.service_pids()["integration"]
                os.kill(killed, signal.SIGKILL)

                await poll_until(
                    lambda: len(delivered(scheduled.event_id)) == 1, timeout=120,
                    what="the scheduled email, sent by the restarted integration",
                )
                arrived = datetime.now(UTC)
                assert cluster.service_pids()["integration"] != killed  # sent by its successor
                await poll_until(
                    lambda: accepted | {one.event_id} <= {m.event_id for m in smtp.messages()},
                    timeout=120, what="the batch and the addressed email",
                )
                await poll_until(
                    lambda: is_sent(scheduled.event_id), timeout=60,
                    what="the scheduled email's document SENT", interval=0.5,
                )
                later = await get(scheduled.event_id)
                never = await get(doomed.event_id)
                with pytest.raises(GRPCError) as too_late:
                    await integration.call(
                        "CancelEmail", email_pb2.CancelEmailRequest(event_id=scheduled.event_id)
                    )
    assert arrived >= due and later.sent_at.ToDatetime(tzinfo=UTC) >= due
    assert never.status == email_pb2.CANCELLED and delivered(doomed.event_id) == []
    assert too_late.value.status is GrpcStatus.FAILED_PRECONDITION
    (message,) = delivered(one.event_id)
    assert sorted(message.rcpt_tos) == ["ada@example.com", "bob@example.net", "carol@example.org"]
    assert b"bob@example.net" not in message.data and b"\r\nBcc:" not in header_block(message)
    msg = parsed(message)
    assert str(msg["From"]) == "News <news@example.com>" and msg["X-Campaign"] == "dec"


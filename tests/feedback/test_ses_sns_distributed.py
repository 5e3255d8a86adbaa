"""SES events over SNS in the distributed profile: the sink runs in the integration process
beside its HTTP endpoint, reads the documents in Elasticsearch, publishes the feedback on
RabbitMQ, suppresses in the shared Elasticsearch list, counts in the Elasticsearch ledger."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from actors.domain.schema import Status
from actors.testing.localservices import free_port
from actors.testing.sns import (
    TOPIC,
    SnsSigner,
    fresh,
    open_sns_host,
    ses_event,
    sns_notification,
)
from runtime import AsyncioEdge
from tests.support.cluster import Cluster, cluster_env
from tests.support.feedback import ClusterEmails, delete_indices, suppression_entries
from tests.support.security import GrpcClient
from tests.support.smtp_servers import CapturingServer

pytestmark = pytest.mark.services


async def test_feedback_over_sns_in_the_distributed_profile(
    tmp_path: Path, elasticsearch_url: str, rabbitmq_url: str, edge: AsyncioEdge
) -> None:
    signer = SnsSigner()
    tag = uuid.uuid4().hex[:10]
    http_port = free_port()
    claims = f"claims-fb-{tag}"
    ledger = f"feedback-{tag}"
    with CapturingServer() as smtp:
        async with open_sns_host(tmp_path / "sns", signer) as sns:
            env = cluster_env(tmp_path, elasticsearch_url, rabbitmq_url, smtp.port) | {
                "MAILACTORS__HTTP__ENABLED": "true",
                "MAILACTORS__HTTP__PORT": str(http_port),
                "MAILACTORS__EMAIL_SERVER__CLAIMS_INDEX": claims,
                "MAILACTORS__FEEDBACK__LEDGER_INDEX": ledger,
                "MAILACTORS__FEEDBACK__SOFT_BOUNCE_LIMIT": "2",
                "MAILACTORS__FEEDBACK__SES__ENABLED": "true",
                "MAILACTORS__FEEDBACK__SES__HOST_PATTERN": r"localhost:\d+",
                "MAILACTORS__FEEDBACK__SES__CA_FILE": sns.ca,
                "MAILACTORS__FEEDBACK__SES__TOPIC_ARNS": json.dumps([TOPIC]),
            }
            cluster = Cluster(env, workers=1, log=tmp_path / "cluster.log")
            async with (
                cluster.running(),
                GrpcClient(edge, cluster.auth_port) as auth,
                GrpcClient(edge, cluster.integration_port) as integration,
                httpx.AsyncClient(timeout=30) as http,
            ):
                emails = ClusterEmails(auth, integration)
                send, wait = emails.request, emails.wait

                async def notify(kind: str, event_id: str, to: str, **kw: Any) -> Any:
                    message_id = kw.pop("message_id", fresh())
                    body = sns_notification(
                        ses_event(kind, event_id, to, **kw), sns.cert_url, signer,
                        message_id=message_id,
                    )  # fmt: skip
                    reply = await http.post(
                        f"http://127.0.0.1:{http_port}/feedback/ses", content=json.dumps(body)
                    )
                    assert reply.status_code == 200, reply.text
                    return reply.json()

                names = ("ana", "bob", "cy")
                hard, complaint, soft = [await send(f"{n}@example.org") for n in names]
                for event_id in (hard, complaint, soft):
                    await wait(event_id, Status.SENT)
                assert (await notify("Delivery", hard, "ana@example.org"))["records"] == ["applied"]
                await wait(hard, Status.DELIVERED)
                assert (await notify("Bounce", hard, "ana@example.org"))["records"] == ["applied"]
                assert (await notify("Complaint", complaint, "bob@example.org"))["records"] == [
                    "applied"
                ]
                for i in range(2):
                    first = await notify(
                        "Bounce", soft, "cy@example.org", bounce_type="Transient", status="4.2.2",
                        message_id=f"soft-{i}",
                    )  # fmt: skip
                    assert first["records"] == ["applied"]
                again = await notify(
                    "Bounce", soft, "cy@example.org", bounce_type="Transient", message_id="soft-0"
                )
                assert again["records"] == ["repeat"]
                forged = await http.post(
                    f"http://127.0.0.1:{http_port}/feedback/ses",
                    content=json.dumps({**sns_notification(
                        ses_event("Bounce", complaint, "bob@example.org"), sns.cert_url,
                        SnsSigner(), message_id=fresh(),
                    )}),
                )  # fmt: skip
                assert forged.status_code == 403
                # The history through the gRPC API (what `supervisor.py status` prints).
                bounced = await wait(hard, Status.BOUNCED)
                assert [r.status for r in bounced.history] == [
                    Status.SENT, Status.DELIVERED, Status.BOUNCED
                ]  # fmt: skip
                last = bounced.history[-1].feedback
                assert last is not None and last.bounce_type == "hard" and last.source == "ses"
                await wait(complaint, Status.COMPLAINED)
                await wait(soft, Status.BOUNCED)

            # The suppression list every worker reads, in Elasticsearch.
            entries = await suppression_entries(elasticsearch_url, claims)
            assert entries[("ana@example.org", "")]["source"] == "bounce"
            assert entries[("bob@example.org", "transactional")]["source"] == "complaint"
            assert entries[("cy@example.org", "")]["reason"].startswith("2 soft bounces")
            assert len(entries) == 3
            await delete_indices(elasticsearch_url, f"{claims}-suppressed", ledger, claims)

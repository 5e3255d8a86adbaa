"""Bounces by SMTP in the distributed profile: the inbound endpoint runs in the integration
process (beside the feedback sink), an email sent by an email-server process through SMTP
carries its VERP return path, a DSN sent back there by SMTP makes the document BOUNCED
(read through gRPC) and suppresses the address in the shared Elasticsearch list; the bounce
rate then pauses the category, which every worker reads from that list."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from actors.domain.schema import Status
from actors.feedback import BounceType, VerpCodec
from actors.testing.localservices import free_port
from runtime import AsyncioEdge
from tests.support.cluster import Cluster, cluster_env
from tests.support.feedback import (
    DOMAIN,
    KEY,
    ClusterEmails,
    delete_indices,
    sample,
    send,
    suppression_entries,
)
from tests.support.security import GrpcClient
from tests.support.smtp_servers import CapturingServer
from tests.support.waiting import poll_until

pytestmark = pytest.mark.services


async def test_a_bounce_by_smtp_in_the_distributed_profile(
    tmp_path: Path, elasticsearch_url: str, rabbitmq_url: str, edge: AsyncioEdge
) -> None:
    tag = uuid.uuid4().hex[:10]
    inbound_port = free_port()
    claims = f"claims-in-{tag}"
    ledger = f"feedback-in-{tag}"
    key_file = tmp_path / "verp-key"
    key_file.write_text(KEY + "\n")
    with CapturingServer() as smtp:
        env = cluster_env(tmp_path, elasticsearch_url, rabbitmq_url, smtp.port) | {
            "MAILACTORS__BOUNCES__ENABLED": "true",
            "MAILACTORS__BOUNCES__DOMAIN": DOMAIN,
            "MAILACTORS__BOUNCES__SECRET_FILE": str(key_file),
            "MAILACTORS__BOUNCES__HOST": "127.0.0.1",
            "MAILACTORS__BOUNCES__PORT": str(inbound_port),
            "MAILACTORS__EMAIL_SERVER__CLAIMS_INDEX": claims,
            "MAILACTORS__FEEDBACK__LEDGER_INDEX": ledger,
            # 1 bounce in 2 emails is over 40%: the category is paused.
            "MAILACTORS__FEEDBACK__PAUSE_ON_THRESHOLD": "true",
            "MAILACTORS__FEEDBACK__RATE_MIN_EMAILS": "2",
            "MAILACTORS__FEEDBACK__BOUNCE_RATE_THRESHOLD": "0.4",
            "MAILACTORS__FEEDBACK__RATE_CHECK_S": "0",
        }
        cluster = Cluster(env, workers=1, log=tmp_path / "cluster.log")
        async with (
            cluster.running(),
            GrpcClient(edge, cluster.auth_port) as auth,
            GrpcClient(edge, cluster.integration_port) as integration,
        ):
            emails = ClusterEmails(auth, integration)
            request, get, wait = emails.request, emails.get, emails.wait

            bounced, kept = await request("nobody@example.net"), await request("ok@example.net")
            for event_id in (bounced, kept):
                await wait(event_id, Status.SENT)
            (sent,) = [m for m in smtp.messages() if m.rcpt_tos == ["nobody@example.net"]]
            # The envelope sender the email-server process used is the email's signed VERP.
            assert VerpCodec(KEY, DOMAIN).verify(sent.mail_from) is not None
            assert bounced in sent.mail_from

            # A forged return path is refused at RCPT by the integration process's endpoint.
            forged = sent.mail_from.replace(bounced, kept)
            assert (await send(inbound_port, forged, b"Subject: x\r\n\r\nx"))[0] == 550
            # The DSN, by SMTP, to the email's VERP address: 250 once applied.
            code, text = await send(
                inbound_port, sent.mail_from, sample("postfix_hard", bounced, sent.mail_from)
            )
            assert code == 250, text
            doc = await wait(bounced, Status.BOUNCED)
            assert [r.status for r in doc.history] == [Status.SENT,
                                                       Status.BOUNCED]  # fmt: skip
            feedback = doc.history[-1].feedback
            assert feedback is not None and feedback.bounce_type == BounceType.HARD
            assert feedback.source == "dsn" and feedback.recipient == "nobody@example.net"
            assert (await get(kept)).status is Status.SENT  # untouched

            # 1 of 2 bounced: the category is paused for every worker, once its copy of the
            # shared list reloads (every 2 s; suppression_elasticsearch.py). From then on each
            # email of the category ends SUPPRESSED with the reason, and is not sent.
            before: list[Status] = []
            done = (Status.SENT, Status.SUPPRESSED)

            async def paused() -> bool:
                doc = await wait(await request(f"later{len(before)}@example.net"), *done)
                before.append(doc.status)
                return doc.status is Status.SUPPRESSED

            await poll_until(paused, timeout=60, interval=0.5, what="the worker to see the pause")
            assert len(before) <= 10, before  # a few seconds of emails at most
            after = await request("after@example.net")
            doc = await wait(after, *done)
            assert doc.status is Status.SUPPRESSED
            assert doc.error is not None and "category paused: bounce rate" in doc.error
            sent_to = {rcpt for m in smtp.messages() for rcpt in m.rcpt_tos}
            assert "after@example.net" not in sent_to
            assert f"later{len(before) - 1}@example.net" not in sent_to

        # The rate per recipient domain, counted in the integration process: 1 of 2 sent.
        log = (tmp_path / "cluster.log").read_text()
        assert "recipient domain 'example.net': bounce rate 50.00% over 24 h (2 emails sent)" in log
        # The suppression list every worker reads, in Elasticsearch.
        entries = await suppression_entries(elasticsearch_url, claims)
        assert entries[("nobody@example.net", "")]["source"] == "bounce"
        assert "5.1.1" in entries[("nobody@example.net", "")]["reason"]
        assert entries[("*", "transactional")]["source"] == "feedback-rate"
        assert len(entries) == 2
        await delete_indices(elasticsearch_url, f"{claims}-suppressed", ledger, claims)

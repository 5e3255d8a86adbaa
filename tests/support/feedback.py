"""Feedback test kit.

Bounces by SMTP: the bounce samples, a sink that records what it is given, the
inbound endpoint in an actor system of its own. SES over SNS: yesterday's status
event (a consumer written before schemaVersion 2), documents and feedback events
to apply, the ``[feedback.ses]`` of a test. The SNS and SES stand-ins are in
``actors.testing.sns`` (the soak uses them too).
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiosmtplib
import httpx
import msgspec
import trio

from actors.domain.schema import (
    STATUS_EVENT_VERSION,
    EmailDocument,
    EmailStatusEvent,
    FeedbackDetail,
    Status,
)
from actors.feedback import (
    Feedback,
    FeedbackSink,
    Outcome,
    RecipientHandler,
    inbound_smtp_server,
)
from actors.grpc.convert import document_from_proto
from actors.testing.sns import TOPIC, SnsHost
from config import Config, load_config
from protos import email_pb2
from runtime import ActorSystem, current_edge, open_actor_system, open_asyncio_edge
from tests.support.embedded import grpc_request
from tests.support.waiting import poll_until

DATA = Path(__file__).resolve().parent.parent / "feedback" / "data"
SAMPLES = sorted(p.stem for p in DATA.glob("*.eml"))


def sample(name: str, event_id: str, verp: str) -> bytes:
    """The sample ``name`` (tests/feedback/data/<name>.eml) about ``event_id``, sent to ``verp``."""
    raw = (DATA / f"{name}.eml").read_bytes()
    return raw.replace(b"{{EVENT_ID}}", event_id.encode()).replace(b"{{VERP}}", verp.encode())


class RecordingSink:
    """A FeedbackSink that keeps what it is given; ``fail`` makes the next reports raise."""

    def __init__(self) -> None:
        self.records: list[Feedback] = []
        self.fail = 0  # how many of the next report() calls raise
        self.calls = 0
        self._changed = trio.Event()

    async def report(self, feedback: Feedback) -> Outcome:
        self.calls += 1
        await trio.lowlevel.checkpoint()
        if self.fail > 0:
            self.fail -= 1
            raise RuntimeError("the sink is down (test)")
        self.records.append(feedback)
        self._changed.set()
        self._changed = trio.Event()
        return Outcome(True, "applied")


KEY = "feedback-test-key-0123456789abcdef"
DOMAIN = "bounce.mailactors.test"


def bounces_config(tmp_path: Path, **fields: object) -> Config:
    """The embedded profile with ``[bounces]`` on: a key file, loopback, a free port."""
    key_file = tmp_path / "verp-key"
    key_file.write_text(KEY + "\n")
    section = {"enabled": True, "domain": DOMAIN, "secret_file": str(key_file),
               "host": "127.0.0.1", "port": 0, **fields}  # fmt: skip
    return load_config("embedded", env={}, overrides={"bounces": section})


@asynccontextmanager
async def running_inbound(
    config: Config, sink: FeedbackSink, handlers: Mapping[str, RecipientHandler] | None = None
) -> AsyncIterator[tuple[ActorSystem, int]]:
    """The inbound SMTP endpoint in an actor system of its own; yields it and its port."""
    spec = inbound_smtp_server(config, sink, handlers)
    assert spec is not None
    async with open_asyncio_edge(), open_actor_system("feedback-test", shutdown=10.0) as system:
        await system.spawn(spec)
        listening = system.snapshot().by_path()["inbound-smtp"].extra["listening"]
        yield system, int(listening[0].rpartition(":")[2])


def inbound_counts(system: ActorSystem) -> dict[str, int]:
    """The inbound endpoint's counters, as its actor reports them (and metrics export them)."""
    counts = system.snapshot().by_path()["inbound-smtp"].extra["inbound_smtp"]
    assert isinstance(counts, dict)
    return counts


async def send(port: int, rcpt: str, data: bytes, *, sender: str = "") -> tuple[int, str]:
    """One message by SMTP (MAIL FROM:<> as an MTA sends a bounce); the final reply."""

    async def go() -> tuple[int, str]:
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=20)
        await client.connect()
        try:
            await client.mail(sender)
            code, text = await client.rcpt(rcpt)
            if code >= 300:
                return code, text
            response = await client.data(data)
            return response.code, response.message
        except aiosmtplib.SMTPResponseException as exc:
            return exc.code, exc.message
        finally:
            client.close()

    return await current_edge().run(go)


async def declared_size(port: int, rcpt: str) -> int:
    """MAIL FROM:<> SIZE=<too big>: the reply code (refused before any data is sent)."""
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=20)
    await client.connect()
    try:
        await client.mail("", options=["SIZE=999999999"])
        return 250
    except aiosmtplib.SMTPResponseException as exc:
        return exc.code
    finally:
        client.close()


T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


class StatusV1(enum.StrEnum):
    """``schema.Status`` as it was before the feedback statuses."""

    PENDING = "PENDING"
    SENDING = "SENDING"
    RETRYING = "RETRYING"
    SENT = "SENT"
    FAILED = "FAILED"
    SUPPRESSED = "SUPPRESSED"


class EmailStatusEventV1(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """``schema.EmailStatusEvent`` exactly as a consumer written before schemaVersion 2 has it."""

    event_id: str
    status: StatusV1
    attempt: int = 1
    error: str | None = None
    provider: str | None = None
    provider_message_id: str | None = None
    smtp_code: int | None = None
    smtp_reply: str | None = None
    requested_at: datetime | None = None
    occurred_at: datetime = msgspec.field(default_factory=lambda: datetime.now(UTC))
    latency_ms: float | None = None
    next_attempt_at: datetime | None = None


def sent_document(event_id: str = "ev-1", recipient: str = "ana@example.org") -> EmailDocument:
    """A document as integration has it once the email server reported SENT at T0."""
    from actors.domain.edges import apply_status

    doc = EmailDocument(
        event_id=event_id, recipient=recipient, template="welcome", created_at=T0, updated_at=T0
    )
    sent_event = EmailStatusEvent(event_id=event_id, status=Status.SENT, occurred_at=T0)
    sent = apply_status(doc, sent_event)
    assert sent is not None
    return sent


def feedback_event(
    status: Status,
    minutes: float,
    source_id: str,
    *,
    event_id: str = "ev-1",
    recipient: str = "ana@example.org",
    bounce_type: str | None = None,
) -> EmailStatusEvent:
    """A feedback status event ``minutes`` after T0, as the sink publishes it."""
    kind = {
        Status.BOUNCED: "bounce",
        Status.COMPLAINED: "complaint",
        Status.DELIVERED: "delivery",
        Status.DELAYED: "delay",
        Status.FAILED: "reject",
    }[status]
    return EmailStatusEvent(
        event_id=event_id,
        status=status,
        occurred_at=T0 + timedelta(minutes=minutes),
        schema_version=STATUS_EVENT_VERSION,
        feedback=FeedbackDetail(
            kind=kind,
            recipient=recipient,
            source="ses",
            source_id=source_id,
            bounce_type=bounce_type or ("hard" if status is Status.BOUNCED else None),
            status_code="5.1.1" if status is Status.BOUNCED else None,
            diagnostic="smtp; 550 5.1.1 user unknown" if status is Status.BOUNCED else None,
        ),
    )


def sns_settings(host: SnsHost, **changes: Any) -> dict[str, Any]:
    """``[feedback.ses]`` that trusts only this host (and our topic), for tests."""
    return {
        "enabled": True,
        "host_pattern": r"localhost:\d+",
        "ca_file": host.ca,
        "topic_arns": [TOPIC],
        **changes,
    }


class ClusterEmails:
    """Emails of a running cluster through its gRPC API: request one (auth), read its
    document and wait for a status (integration's GetEmail), as the distributed feedback
    tests do."""

    def __init__(self, auth: Any, integration: Any) -> None:
        self.auth = auth  # tests.support.security.GrpcClient to each service
        self.integration = integration

    async def request(self, to: str) -> str:
        reply = await self.auth.call("RequestEmail", grpc_request(recipient=to))
        return str(reply.event_id)

    async def get(self, event_id: str) -> EmailDocument:
        reply = await self.integration.call(
            "GetEmail", email_pb2.GetEmailRequest(event_id=event_id)
        )
        return document_from_proto(reply.document)

    async def wait(self, event_id: str, *statuses: Status) -> EmailDocument:
        """Its document once its status is one of ``statuses`` (60 s at most)."""

        async def reached() -> bool:
            return (await self.get(event_id)).status in statuses

        await poll_until(reached, timeout=60, what=f"{event_id} {'/'.join(statuses)}")
        return await self.get(event_id)


async def suppression_entries(es_url: str, claims_index: str) -> dict[tuple[str, str], Any]:
    """The shared suppression list of a cluster (``<claims index>-suppressed`` in
    Elasticsearch), by (address, category)."""
    index = f"{claims_index}-suppressed"
    async with httpx.AsyncClient() as es:
        await es.post(f"{es_url}/{index}/_refresh")
        found = await es.post(f"{es_url}/{index}/_search", json={"size": 100})
    hits = found.json()["hits"]["hits"]
    return {(h["_source"]["address"], h["_source"]["category"]): h["_source"] for h in hits}


async def delete_indices(es_url: str, *names: str) -> None:
    async with httpx.AsyncClient() as es:
        for name in names:
            await es.delete(f"{es_url}/{name}")

"""Feedback test kit: yesterday's status event (a consumer written before schemaVersion 2),
documents and feedback events to apply, SNS messages signed with a local certificate."""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec

from actors.domain.schema import (
    STATUS_EVENT_VERSION,
    EmailDocument,
    EmailStatusEvent,
    FeedbackDetail,
    Status,
)

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


# -- SNS: a signing certificate of our own, and messages signed as AWS signs them -----------

_NOTIFICATION_KEYS = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
_SUBSCRIPTION_KEYS = (
    "Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"
)  # fmt: skip
TOPIC = "arn:aws:sns:eu-west-1:123456789012:ses-feedback"


class SnsSigner:
    """An RSA key and its self-signed certificate: what SNS signs with, made here.

    Written from AWS's documentation on its own (not with ``actors.feedback.sns``), so
    a mistake in the string to sign there fails the tests rather than being copied.
    """

    def __init__(self) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import rsa
        from cryptography.x509.oid import NameOID

        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
        now = datetime.now(UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=30))
            .sign(self.key, hashes.SHA256())
        )

    def pem(self) -> bytes:
        from cryptography.hazmat.primitives.serialization import Encoding

        return self.cert.public_bytes(Encoding.PEM)

    def sign(self, fields: dict[str, str], version: str = "2") -> dict[str, str]:
        import base64

        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        keys = _NOTIFICATION_KEYS if fields["Type"] == "Notification" else _SUBSCRIPTION_KEYS
        text = "".join(f"{k}\n{fields[k]}\n" for k in keys if k in fields)
        algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()  # noqa: S303
        signature = self.key.sign(text.encode(), padding.PKCS1v15(), algorithm)
        return {
            **fields,
            "SignatureVersion": version,
            "Signature": base64.b64encode(signature).decode(),
        }


def sns_notification(
    message: str,
    cert_url: str,
    signer: SnsSigner,
    *,
    message_id: str,
    sent: datetime | None = None,
    version: str = "2",
    subject: str | None = None,
) -> dict[str, str]:
    fields = {
        "Type": "Notification",
        "MessageId": message_id,
        "TopicArn": TOPIC,
        "Message": message,
        "Timestamp": (sent or datetime.now(UTC)).isoformat(timespec="milliseconds").replace(
            "+00:00", "Z"
        ),
        "SigningCertURL": cert_url,
        "UnsubscribeURL": "https://sns.eu-west-1.amazonaws.com/?Action=Unsubscribe",
    }
    if subject is not None:
        fields["Subject"] = subject
    return signer.sign(fields, version)


def sns_subscription(
    subscribe_url: str, cert_url: str, signer: SnsSigner, *, kind: str = "SubscriptionConfirmation"
) -> dict[str, str]:
    fields = {
        "Type": kind,
        "MessageId": f"sub-{fresh()}",
        "Token": "2336412f37fb687f5d51e6e2425f004aed",
        "TopicArn": TOPIC,
        "Message": f"You have chosen to subscribe to the topic {TOPIC}.",
        "SubscribeURL": subscribe_url,
        "Timestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "SigningCertURL": cert_url,
    }
    return signer.sign(fields)


def fresh() -> str:
    import uuid

    return str(uuid.uuid4())


# -- SES events, in the format AWS documents ("Contents of notifications for Amazon SES") ----


def ses_event(
    kind: str,
    event_id: str,
    recipient: str,
    *,
    domain: str = "mailactors.test",
    bounce_type: str = "Permanent",
    status: str = "5.1.1",
    when: datetime | None = None,
    form: str = "notificationType",
) -> str:
    """The JSON SES puts in the SNS Message for ``kind`` (Bounce, Complaint, Delivery,
    Reject, DeliveryDelay) about the email ``event_id`` sent to ``recipient``."""
    import json

    at = (when or datetime.now(UTC)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    mail = {
        "timestamp": at,
        "source": f"noreply@{domain}",
        "sourceArn": f"arn:aws:ses:eu-west-1:123456789012:identity/{domain}",
        "sendingAccountId": "123456789012",
        "messageId": "0100018c1a2b3c4d-5e6f7a8b-9c0d-1e2f-3a4b-5c6d7e8f9a0b-000000",
        "destination": [recipient],
        "headersTruncated": False,
        "headers": [{"name": "Message-ID", "value": f"<{event_id}@{domain}>"}],
        "commonHeaders": {
            "from": [f"noreply@{domain}"],
            "to": [recipient],
            "messageId": f"<{event_id}@{domain}>",
            "subject": "Welcome",
        },
    }
    body: dict[str, object] = {form: kind, "mail": mail}
    if kind == "Bounce":
        body["bounce"] = {
            "bounceType": bounce_type,
            "bounceSubType": "General",
            "bouncedRecipients": [{
                "emailAddress": recipient, "action": "failed", "status": status,
                "diagnosticCode": f"smtp; 550 {status} <{recipient}>: Recipient address rejected",
            }],
            "timestamp": at,
            "feedbackId": "0100018c-bounce-000000",
            "reportingMTA": "dsn; a8-25.smtp-out.amazonses.com",
        }  # fmt: skip
    elif kind == "Complaint":
        body["complaint"] = {
            "complainedRecipients": [{"emailAddress": recipient}],
            "timestamp": at,
            "feedbackId": "0100018c-complaint-000000",
            "userAgent": "Yahoo!-Mail-Feedback/2.0",
            "complaintFeedbackType": "abuse",
            "arrivalDate": at,
        }
    elif kind == "Delivery":
        body["delivery"] = {
            "timestamp": at,
            "processingTimeMillis": 546,
            "recipients": [recipient],
            "smtpResponse": "250 ok:  Message 64111812 accepted",
            "reportingMTA": "a8-70.smtp-out.amazonses.com",
        }
    elif kind == "Reject":
        body["reject"] = {"reason": "Bad content"}
    elif kind == "DeliveryDelay":
        body["deliveryDelay"] = {
            "timestamp": at,
            "delayType": "TransientCommunicationFailure",
            "expirationTime": at,
            "delayedRecipients": [{
                "emailAddress": recipient, "status": "4.4.1",
                "diagnosticCode": "smtp; 421 4.4.1 Unable to connect",
            }],
        }  # fmt: skip
    return json.dumps(body)


# -- a stand-in for sns.<region>.amazonaws.com: HTTPS with a trustme CA, on loopback ---------


class SnsHost:
    """What the fake SNS host served: ``url`` (https://localhost:PORT), its CA file, and the
    paths requested (certificate downloads, subscription confirmations)."""

    def __init__(self, url: str, ca: str) -> None:
        self.url = url
        self.ca = ca
        self.requests: list[str] = []

    @property
    def cert_url(self) -> str:
        return f"{self.url}/SimpleNotificationService-0123456789abcdef.pem"

    def count(self, prefix: str) -> int:
        return sum(1 for path in self.requests if path.startswith(prefix))


@asynccontextmanager
async def open_sns_host(directory: Path, signer: SnsSigner) -> AsyncIterator[SnsHost]:
    """A real HTTPS server (the project's HttpServer with a trustme certificate) serving the
    signer's certificate and answering SubscribeURLs, for the length of the block."""
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse, Response
    from starlette.routing import Route

    from actors.http import HttpServer
    from config import HttpConfig
    from runtime import ChildSpec, open_actor_system
    from tests.support.security import make_certs

    certs = make_certs(directory)
    http = HttpConfig(
        enabled=True, port=0, tls_cert_file=str(certs.cert), tls_key_file=str(certs.key)
    )
    host: list[SnsHost] = []

    def routes(actor: Any) -> list[Any]:
        async def pem(request: Request) -> Response:
            host[0].requests.append(request.url.path)
            return Response(signer.pem(), media_type="application/x-pem-file")

        async def confirm(request: Request) -> Response:
            host[0].requests.append(f"{request.url.path}?{request.url.query}")
            return PlainTextResponse("<ConfirmSubscriptionResponse/>")

        return [Route("/{name}.pem", pem), Route("/confirm", confirm)]

    async with open_actor_system("fake-sns", shutdown=5.0) as system:
        await system.spawn(ChildSpec("http", HttpServer, args=(http, [routes])))
        bound = system.snapshot().by_path()["http"].extra["url"]  # type: ignore[index]
        port = str(bound).rsplit(":", 1)[1]
        host.append(SnsHost(f"https://localhost:{port}", str(certs.ca)))
        yield host[0]


def sns_settings(host: SnsHost, **changes: Any) -> dict[str, Any]:
    """``[feedback.ses]`` that trusts only this host (and our topic), for tests."""
    return {
        "enabled": True,
        "host_pattern": r"localhost:\d+",
        "ca_file": host.ca,
        "topic_arns": [TOPIC],
        **changes,
    }

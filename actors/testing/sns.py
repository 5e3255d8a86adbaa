"""A stand-in for Amazon SNS and SES, for tests and ``supervisor.py soak``: a signing key and
certificate made here, SNS messages signed as AWS signs them, SES event notifications in the
format AWS documents, and an HTTPS host (trustme certificate, loopback) serving the certificate
and answering subscription confirmations.

The string to sign is written here from AWS's documentation on its own (not with
``actors.feedback.sns``), so a mistake there fails the tests rather than being copied.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import trio

__all__ = [
    "TOPIC",
    "SnsHost",
    "SnsSigner",
    "fresh",
    "open_sns_host",
    "ses_event",
    "sns_notification",
    "sns_subscription",
]


# -- SNS: a signing certificate of our own, and messages signed as AWS signs them -----------

_NOTIFICATION_KEYS = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
_SUBSCRIPTION_KEYS = (
    "Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"
)  # fmt: skip
TOPIC = "arn:aws:sns:eu-west-1:123456789012:ses-feedback"


class SnsSigner:
    """An RSA key and its self-signed certificate: what SNS signs with, made here."""

    def __init__(self) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import rsa
        from cryptography.x509.oid import NameOID

        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
        from datetime import timedelta

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
    feedback_id: str | None = None,
) -> str:
    """The JSON SES puts in the SNS Message for ``kind`` (Bounce, Complaint, Delivery,
    Reject, DeliveryDelay) about the email ``event_id`` sent to ``recipient``; a bounce or
    complaint has ``feedback_id`` as SES's feedbackId (a new one by default, as SES gives)."""
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
            "feedbackId": feedback_id or f"0100018c-bounce-{fresh()}",
            "reportingMTA": "dsn; a8-25.smtp-out.amazonses.com",
        }  # fmt: skip
    elif kind == "Complaint":
        body["complaint"] = {
            "complainedRecipients": [{"emailAddress": recipient}],
            "timestamp": at,
            "feedbackId": feedback_id or f"0100018c-complaint-{fresh()}",
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


def _write_certs(directory: Path) -> tuple[Path, Path, Path]:
    """A trustme CA and a certificate for localhost and 127.0.0.1: (CA, chain, key) files."""
    import trustme

    directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    issued = ca.issue_cert("localhost", "127.0.0.1")
    ca_file, cert, key = directory / "ca.pem", directory / "server.pem", directory / "key.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    for i, pem in enumerate(issued.cert_chain_pems):
        pem.write_to_path(str(cert), append=i > 0)
    issued.private_key_pem.write_to_path(str(key))
    return ca_file, cert, key


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

    ca_file, cert, key = await trio.to_thread.run_sync(_write_certs, directory)
    http = HttpConfig(enabled=True, port=0, tls_cert_file=str(cert), tls_key_file=str(key))
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
        host.append(SnsHost(f"https://localhost:{port}", str(ca_file)))
        yield host[0]

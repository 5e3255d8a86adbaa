"""Amazon SNS messages over HTTP(S): parsed, authenticated, or refused with the reason.

The signature is checked exactly as AWS documents it ("Verifying the signatures of
Amazon SNS messages"): the string to sign is ``Key\\nValue\\n`` for each field, in
this order, every pair followed by a newline *including the last* (the bug that made
a self-hosted SES sender drop every bounce for months, useSend #440, was leaving
the trailing newlines out):

* Notification: Message, MessageId, Subject (only if present), Timestamp, TopicArn, Type
* SubscriptionConfirmation and UnsubscribeConfirmation: Message, MessageId,
  SubscribeURL, Timestamp, Token, TopicArn, Type

SignatureVersion 1 signs it with SHA1withRSA, 2 with SHA256withRSA. The signing
certificate is fetched only over https from a host the configuration allows
(``feedback.ses.host_pattern``, by default ``sns.<region>.amazonaws.com``), only
from a path ending ``.pem``, at most 64 KiB; it is parsed with ``cryptography``,
its validity dates checked, its key required to be RSA, and it is cached by URL.
The SubscribeURL of a SubscriptionConfirmation is fetched only under the same rule.
A message older than ``max_age_s`` (its signed Timestamp) is refused: a replay.
"""

from __future__ import annotations

import base64
import binascii
import re
import ssl
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
import msgspec
import trio
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from config import SnsConfig

__all__ = ["SnsMessage", "SnsRefused", "SnsVerifier", "parse_sns", "string_to_sign"]

NOTIFICATION_FIELDS = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
SUBSCRIPTION_FIELDS = (
    "Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"
)  # fmt: skip
TYPES = ("Notification", "SubscriptionConfirmation", "UnsubscribeConfirmation")
MAX_CERT_BYTES = 64 * 1024
FUTURE_SKEW = timedelta(minutes=5)  # clocks differ; a message from further ahead is not SNS


class SnsRefused(Exception):
    """Not accepted: ``reason`` is the metric label, ``str()`` the log line."""

    def __init__(self, reason: str, detail: str, status: int = 403) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.status = status


class SnsMessage(msgspec.Struct, frozen=True):
    fields: dict[str, str]  # the message's string fields, as sent

    @property
    def type(self) -> str:
        return self.fields["Type"]

    @property
    def message_id(self) -> str:
        return self.fields["MessageId"]

    @property
    def message(self) -> str:
        return self.fields["Message"]


_REQUIRED = {
    "Notification": ("Message", "MessageId", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": SUBSCRIPTION_FIELDS,
    "UnsubscribeConfirmation": SUBSCRIPTION_FIELDS,
}
_ENVELOPE = ("Signature", "SignatureVersion", "SigningCertURL")


def parse_sns(body: bytes) -> SnsMessage:
    """The SNS message in an HTTP body, or SnsRefused("malformed", ..., 400)."""
    try:
        raw = msgspec.json.decode(body)
    except (msgspec.DecodeError, RecursionError) as exc:
        raise SnsRefused("malformed", f"not JSON: {exc}", 400) from None
    if not isinstance(raw, dict):
        raise SnsRefused("malformed", "not a JSON object", 400)
    kind = raw.get("Type")
    if kind not in TYPES:
        raise SnsRefused("malformed", f"Type: not an SNS message type: {str(kind)[:40]!r}", 400)
    fields: dict[str, str] = {}
    for name in (*_REQUIRED[kind], *_ENVELOPE, "Subject", "UnsubscribeURL"):
        value = raw.get(name)
        if value is None:
            if name in _REQUIRED[kind] or name in _ENVELOPE:
                raise SnsRefused("malformed", f"{name}: missing", 400)
            continue
        if not isinstance(value, str):
            raise SnsRefused("malformed", f"{name}: not a string", 400)
        fields[name] = value
    return SnsMessage(fields)


def string_to_sign(msg: SnsMessage) -> bytes:
    """AWS's string to sign: ``Key\\nValue\\n`` per field, in AWS's order, trailing newline
    after the last value too; Subject only when the Notification has one."""
    names = NOTIFICATION_FIELDS if msg.type == "Notification" else SUBSCRIPTION_FIELDS
    parts = [f"{name}\n{msg.fields[name]}\n" for name in names if name in msg.fields]
    return "".join(parts).encode()


class SnsVerifier:
    """Checks SNS messages against ``[feedback.ses]``; fetches and caches signing certificates."""

    def __init__(self, settings: SnsConfig) -> None:
        self.settings = settings
        self._hosts = re.compile(settings.host_pattern)
        self._certs: dict[str, rsa.RSAPublicKey] = {}
        self._locks: dict[str, trio.Lock] = {}
        self.fetches = 0  # certificate downloads (the cache's misses)

    def allowed_url(self, url: str, *, pem: bool) -> bool:
        try:
            parts = urlsplit(url)
        except ValueError:
            return False
        return (
            parts.scheme == "https"
            and "@" not in parts.netloc  # no user info: "sns.x.amazonaws.com@evil" is evil's
            and self._hosts.fullmatch(parts.netloc) is not None
            and (not pem or (parts.path.endswith(".pem") and not parts.query))
        )

    async def verify(self, msg: SnsMessage, now: datetime | None = None) -> None:
        """Return if ``msg`` is authentic, current and from an accepted topic; else SnsRefused."""
        s = self.settings
        f = msg.fields
        if s.topic_arns and f["TopicArn"] not in s.topic_arns:
            raise SnsRefused("topic", f"TopicArn {f['TopicArn'][:200]!r} is not accepted")
        version = f["SignatureVersion"]
        algorithm: hashes.HashAlgorithm
        if version == "1":
            algorithm = hashes.SHA1()  # noqa: S303 - AWS's SignatureVersion 1 is SHA1withRSA
        elif version == "2":
            algorithm = hashes.SHA256()
        else:
            raise SnsRefused("bad_signature", f"SignatureVersion {version[:8]!r} is not 1 or 2")
        try:
            sent = datetime.fromisoformat(f["Timestamp"].replace("Z", "+00:00"))
        except ValueError:
            raise SnsRefused("malformed", "Timestamp: not ISO 8601", 400) from None
        if sent.tzinfo is None:
            raise SnsRefused("malformed", "Timestamp: no time zone", 400)
        now = now or datetime.now(UTC)
        if now - sent > timedelta(seconds=s.max_age_s):
            raise SnsRefused("old_message", f"sent {sent.isoformat()}, over {s.max_age_s:g} s ago")
        if sent - now > FUTURE_SKEW:
            raise SnsRefused("old_message", f"sent {sent.isoformat()}, in the future")
        url = f["SigningCertURL"]
        if not self.allowed_url(url, pem=True):
            raise SnsRefused("cert_host", f"SigningCertURL {url[:200]!r} is not an allowed host")
        try:
            signature = base64.b64decode(f["Signature"], validate=True)
        except (binascii.Error, ValueError):
            raise SnsRefused("bad_signature", "Signature: not base64") from None
        key = await self._public_key(url)
        try:
            key.verify(signature, string_to_sign(msg), padding.PKCS1v15(), algorithm)
        except InvalidSignature:
            raise SnsRefused("bad_signature", "the signature does not match") from None

    async def _public_key(self, url: str) -> rsa.RSAPublicKey:
        key = self._certs.get(url)
        if key is not None:
            return key
        async with self._locks.setdefault(url, trio.Lock()):  # one download per certificate
            key = self._certs.get(url)
            if key is None:
                key = _rsa_key(await self._fetch(url, MAX_CERT_BYTES))
                self._certs[url] = key
                self.fetches += 1
        return key

    async def confirm(self, msg: SnsMessage) -> None:
        """Confirm a subscription by fetching its SubscribeURL (only an allowed host)."""
        url = msg.fields["SubscribeURL"]
        if not self.allowed_url(url, pem=False):
            raise SnsRefused("subscribe_host", f"SubscribeURL {url[:200]!r} is not an allowed host")
        await self._fetch(url, MAX_CERT_BYTES)

    async def _fetch(self, url: str, limit: int) -> bytes:
        s = self.settings
        verify: ssl.SSLContext | bool = True
        if s.ca_file:
            verify = ssl.create_default_context(cafile=s.ca_file)
        try:
            async with (
                httpx.AsyncClient(verify=verify, timeout=s.fetch_timeout_s) as client,
                client.stream("GET", url, follow_redirects=False) as resp,
            ):
                if resp.status_code != 200:
                    raise SnsRefused("fetch", f"{url[:200]} answered {resp.status_code}", 502)
                body = b""
                async for chunk in resp.aiter_bytes():
                    body += chunk
                    if len(body) > limit:
                        raise SnsRefused("fetch", f"{url[:200]}: over {limit} bytes", 502)
                return body
        except httpx.HTTPError as exc:
            raise SnsRefused("fetch", f"{url[:200]}: {type(exc).__name__}: {exc}", 502) from None


def _rsa_key(pem: bytes) -> rsa.RSAPublicKey:
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError as exc:
        raise SnsRefused("cert", f"not a PEM certificate: {exc}") from None
    now = datetime.now(UTC)
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise SnsRefused("cert", f"certificate not valid now (until {cert.not_valid_after_utc})")
    key: Any = cert.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise SnsRefused("cert", f"certificate key is {type(key).__name__}, not RSA")
    return key

"""Signing and checking webhook deliveries (Standard Webhooks): stdlib only, copy it freely.

A receiver needs nothing else from mailactors: ``from actors.webhooks.signing import
verify`` or copy this one file into your application. Each delivery carries three
headers (https://www.standardwebhooks.com/)::

    webhook-id:         msg_...      the same on every retry of one event: dedupe on it
    webhook-timestamp:  1764610000   seconds since the epoch when this try was sent
    webhook-signature:  v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">

The secret is the endpoint's ``secret_env`` / ``secret_file`` value. A secret written
``whsec_<base64>`` (the Standard Webhooks form) is the bytes that base64 holds; any
other secret is used as its UTF-8 bytes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any

__all__ = ["WebhookVerificationError", "sign", "signing_key", "verify"]


class WebhookVerificationError(ValueError):
    """The delivery is not authentic, or too old or too new: answer it 400 and drop it."""


def signing_key(secret: str | bytes) -> bytes:
    """The HMAC key a secret stands for (a sender signing many messages decodes it once)."""
    if isinstance(secret, bytes):
        return secret
    if secret.startswith("whsec_"):
        return base64.b64decode(secret.removeprefix("whsec_"))
    return secret.encode()


def sign(secret: str | bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value for one try: ``v1,<base64 HMAC-SHA256>``."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(signing_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def verify(
    secret: str | bytes,
    headers: Mapping[str, str],
    body: bytes | str,
    tolerance_s: float = 300,
    *,
    now: float | None = None,
) -> Any:
    """Check a delivery and return its JSON body; raise WebhookVerificationError if bad.

    ``headers``: the request's headers (any letter case); ``body``: the raw bytes, as
    received (not re-encoded JSON), or that text decoded as UTF-8. The timestamp must be
    within ``tolerance_s`` of ``now`` (default: the clock), which bounds replays of a
    captured request; the signature is compared in constant time, against each ``v1,``
    entry the header lists (a sender rotating its secret sends two). Dedupe on
    ``webhook-id`` yourself: delivery is at least once.
    """
    if isinstance(body, str):  # a framework that hands the body decoded (we send UTF-8)
        body = body.encode()
    lower = {k.lower(): v for k, v in headers.items()}
    msg_id = lower.get("webhook-id", "")
    stamp = lower.get("webhook-timestamp", "")
    signatures = lower.get("webhook-signature", "")
    if not (msg_id and stamp and signatures):
        raise WebhookVerificationError("missing webhook-id, webhook-timestamp or webhook-signature")
    try:
        timestamp = int(stamp)
    except ValueError:
        raise WebhookVerificationError(f"webhook-timestamp is not an integer: {stamp!r}") from None
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_s:
        raise WebhookVerificationError(
            f"webhook-timestamp {timestamp} is more than {tolerance_s:g} s from now"
        )
    expected = sign(secret, msg_id, timestamp, body)
    if not any(hmac.compare_digest(expected, s) for s in signatures.split() if s.startswith("v1,")):
        raise WebhookVerificationError("no valid v1 signature")
    try:
        return json.loads(body)
    except ValueError:
        raise WebhookVerificationError("body is not JSON") from None

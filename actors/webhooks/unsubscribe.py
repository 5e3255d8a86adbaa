"""One-click unsubscribe (RFC 8058): signed tokens, the headers, the HTTP routes, the mailto.

For each category in ``unsubscribe.categories`` every email carries::

    List-Unsubscribe: <https://PUBLIC/unsubscribe/TOKEN>, <mailto:unsubscribe+TOKEN@DOMAIN>
    List-Unsubscribe-Post: List-Unsubscribe=One-Click

TOKEN is base64url of ``expiry | category tag | recipient | MAC``, the MAC being 12
bytes of HMAC-SHA256 under the ``unsubscribe.secret_env`` / ``secret_file`` key.
Nothing is stored to make a link: the token says who and what, and only the key's
holder can make one. For recipients up to about 20 characters the mailto's local part
stays within RFC 5321's 64 octets; a longer one makes it longer (most servers take it).

``POST /unsubscribe/TOKEN`` (body ``List-Unsubscribe=One-Click``) suppresses that
recipient for that category (source ``unsubscribe``), idempotently; ``GET`` only shows
a page with a button that POSTs (mail scanners follow GET links). A token that is
malformed (400), forged or for a category that is not unsubscribable (403), or expired
(410) changes nothing and says why.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import html
import logging
import time
import urllib.parse
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Route

from config import Config, UnsubscribeConfig

__all__ = [
    "MAX_FORM_BYTES",
    "TokenError",
    "UnsubscribeMail",
    "UnsubscribeTokens",
    "list_unsubscribe",
    "unsubscribe_routes",
]

log = logging.getLogger("mailactors.unsubscribe")

MAC_BYTES = 12
MAX_FORM_BYTES = 4096  # an RFC 8058 body is 26 bytes; anything much larger is not one
MAX_TOKEN_CHARS = 1024
ONE_CLICK = "List-Unsubscribe=One-Click"
MAILTO_PREFIX = "unsubscribe+"


class TokenError(ValueError):
    """A token that unsubscribes nobody; ``status`` is the HTTP answer that says why."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class UnsubscribeTokens:
    """Makes and checks tokens for the configured categories.

    Compact, so that ``unsubscribe+TOKEN`` stays within a local part's 64 octets for
    addresses up to about 20 characters: the expiry in hours (3 bytes), the category as
    a 2-byte tag (its SHA-256 prefix, matched against the configured categories), the
    recipient, and a 96-bit MAC.
    """

    def __init__(
        self,
        secret: str,
        categories: Sequence[str],
        ttl_s: float,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._key = hashlib.sha256(b"mailactors-unsubscribe\0" + secret.encode()).digest()
        self.categories = frozenset(categories)
        self._by_tag = {_tag(c): c for c in self.categories}
        if len(self._by_tag) != len(self.categories):  # 1 in 65536 per pair: rename one
            raise ValueError(f"unsubscribe.categories: two of {sorted(categories)} share a tag")
        self.ttl_s = ttl_s
        self.clock = clock

    @classmethod
    def from_config(cls, config: UnsubscribeConfig) -> UnsubscribeTokens | None:
        if not config.categories:
            return None
        secret = config.secret()
        assert secret is not None  # the config requires a source when categories are set
        return cls(secret, config.categories, config.token_ttl_s)

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._key, payload, hashlib.sha256).digest()[:MAC_BYTES]

    def make(self, recipient: str, category: str) -> str:
        hours = min(max(int((self.clock() + self.ttl_s) // 3600), 0), 2**24 - 1)
        payload = hours.to_bytes(3, "big") + _tag(category) + recipient.encode()
        raw = payload + self._mac(payload)
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    def check(self, token: str) -> tuple[str, str]:
        """``(recipient, category)`` of a good token; TokenError naming what is wrong."""
        if not token or len(token) > MAX_TOKEN_CHARS:
            raise TokenError(400, "malformed unsubscribe link")
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (binascii.Error, ValueError):
            raise TokenError(400, "malformed unsubscribe link") from None
        # The decoder drops characters outside the alphabet and ignores the last character's
        # spare bits, so many strings decode alike: only the one make() writes is the token.
        if base64.urlsafe_b64encode(raw).rstrip(b"=").decode() != token:
            raise TokenError(400, "malformed unsubscribe link")
        payload, mac = raw[:-MAC_BYTES], raw[-MAC_BYTES:]
        if len(payload) < 6:
            raise TokenError(400, "malformed unsubscribe link")
        if not hmac.compare_digest(mac, self._mac(payload)):
            raise TokenError(403, "this unsubscribe link is not valid")
        category = self._by_tag.get(payload[3:5])
        if category is None:
            raise TokenError(403, "emails of this category cannot be unsubscribed from")
        try:
            recipient = payload[5:].decode()
        except UnicodeDecodeError:
            raise TokenError(400, "malformed unsubscribe link") from None
        if int.from_bytes(payload[:3], "big") * 3600 < self.clock():
            raise TokenError(410, "this unsubscribe link has expired")
        return recipient, category


def _tag(category: str) -> bytes:
    return hashlib.sha256(category.encode()).digest()[:2]


def list_unsubscribe(
    tokens: UnsubscribeTokens, base_url: str, mail_domain: str, recipient: str, category: str
) -> tuple[str, str] | None:
    """``(url, mailto)`` for an email of ``category`` to ``recipient``; None: not unsubscribable."""
    if category not in tokens.categories:
        return None
    token = tokens.make(recipient, category)
    return (
        f"{base_url.rstrip('/')}/unsubscribe/{token}",
        f"mailto:{MAILTO_PREFIX}{token}@{mail_domain}",
    )


# -- applying an unsubscribe ---------------------------------------------------------------

SuppressionOpener = Callable[[], AbstractAsyncContextManager[Any]]


async def _suppress(opener: SuppressionOpener, recipient: str, category: str, via: str) -> bool:
    async with opener() as suppression:
        added: bool = await suppression.add(
            recipient, f"unsubscribed ({via})", source="unsubscribe", category=category
        )
    log.info("unsubscribed from %s by %s (%s)", category, via, "new" if added else "repeat")
    return added


class UnsubscribeMail:
    """The inbound SMTP endpoint's handler for ``unsubscribe+TOKEN@...``.

    A ``RecipientHandler`` of ``actors.feedback.inbound``: register it under the prefix
    ``unsubscribe``. :meth:`check` refuses a bad token at RCPT TO (550, or 551 when
    expired, with the reason); :meth:`deliver` suppresses the token's recipient for its
    category (whatever the message says: the token is the request) and answers 250.
    ``await handler(token)`` does the same without SMTP and returns ``(recipient,
    category, added)``; a bad token raises TokenError. An ``unsubscribe+`` prefix on the
    token is stripped.
    """

    def __init__(self, tokens: UnsubscribeTokens, opener: SuppressionOpener) -> None:
        self.tokens = tokens
        self.opener = opener

    async def __call__(self, token: str) -> tuple[str, str, bool]:
        recipient, category = self.tokens.check(token.removeprefix(MAILTO_PREFIX))
        return recipient, category, await _suppress(self.opener, recipient, category, "mailto")

    def check(self, detail: str) -> str | None:
        try:
            self.tokens.check(detail)
        except TokenError as exc:
            code = "551 5.1.1" if exc.status == 410 else "550 5.7.1"
            return f"{code} {exc.reason}"
        return None

    async def deliver(self, message: Any) -> str:
        recipient, category, added = await self(message.detail)
        return "250 2.0.0 " + ("Unsubscribed" if added else "Already unsubscribed")


# -- HTTP ----------------------------------------------------------------------------------


def _page(status: int, title: str, text: str, form: str = "") -> HTMLResponse:
    t, x = html.escape(title), html.escape(text)
    body = (
        f"<!doctype html><html><head><meta charset=utf-8><title>{t}</title>"
        f'<meta name="robots" content="noindex"></head><body><h1>{t}</h1><p>{x}</p>{form}'
        "</body></html>"
    )
    return HTMLResponse(body, status_code=status, headers=PAGE_HEADERS)


# The link holds the token: the page loads nothing and may not be framed (a framing site
# could have the reader click "Unsubscribe"); its one form posts back to itself.
PAGE_HEADERS = {
    "cache-control": "no-store",
    "content-security-policy": "default-src 'none'; form-action 'self'; frame-ancestors 'none';"
    " base-uri 'none'",
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}


async def _read_form(request: Request) -> bytes | None:
    """The body if it is at most MAX_FORM_BYTES, else None (stops reading at the limit)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_FORM_BYTES:
        return None
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return None
    return body


def _is_one_click(content_type: str, body: bytes) -> bool:
    kind = content_type.split(";")[0].strip().lower()
    if kind == "application/x-www-form-urlencoded":
        try:
            form = urllib.parse.parse_qs(body.decode("ascii"), strict_parsing=False)
        except UnicodeDecodeError:
            return False
        return form.get("List-Unsubscribe") == ["One-Click"]
    if kind == "multipart/form-data":  # RFC 8058 allows it; the field is all that matters
        return b'name="List-Unsubscribe"' in body and b"One-Click" in body
    return False


def unsubscribe_routes(
    config: Config, opener: SuppressionOpener
) -> Callable[[Any], list[BaseRoute]]:
    """The route factory for ``[http]`` (None-safe: no categories, no routes)."""
    tokens = UnsubscribeTokens.from_config(config.unsubscribe)

    def factory(actor: Any) -> list[BaseRoute]:
        if tokens is None:
            return []

        async def endpoint(request: Request) -> Response:
            token = request.path_params["token"]
            try:
                recipient, category = tokens.check(token)
            except TokenError as exc:
                return _page(exc.status, "Unsubscribe", exc.reason)
            if request.method == "GET":
                form = (
                    '<form method="post"><input type="hidden" name="List-Unsubscribe" '
                    'value="One-Click"><button type="submit">Unsubscribe</button></form>'
                )
                return _page(
                    200, "Unsubscribe",
                    f"Stop emails of category {category!r} to {recipient}?", form,
                )  # fmt: skip
            body = await _read_form(request)
            if body is None:
                return _page(413, "Unsubscribe", f"request body over {MAX_FORM_BYTES} bytes")
            if not _is_one_click(request.headers.get("content-type", ""), body):
                return _page(400, "Unsubscribe", f"the request must carry {ONE_CLICK}")
            added = await _suppress(opener, recipient, category, "one-click")
            text = f"{recipient} will get no more emails of category {category!r}."
            return _page(200, "Unsubscribed", text if added else "Already unsubscribed. " + text)

        return [Route("/unsubscribe/{token}", endpoint, methods=["GET", "POST"])]

    return factory

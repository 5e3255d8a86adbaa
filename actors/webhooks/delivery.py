"""One HTTP try: the SSRF guard, the signed POST, and what its answer means.

The guard resolves the endpoint's host itself and refuses it when any address it
resolves to is loopback, private, link-local, multicast or otherwise not global
(``webhooks.allow_private`` lifts that); the request then goes to the checked
address (Host header and TLS SNI keep the name, and the certificate is checked
against the name), so a second lookup cannot be steered elsewhere (DNS rebinding).
A checked address is used for ``RESOLVE_TTL_S``, then checked again (at once after a
failed connection). Redirects are never followed: a 3xx is a failure.

The HTTP client is httpcore's connection pool (what httpx runs on), one per endpoint,
kept alive between tries; what a try builds is only its signature and a few headers
(httpx's URL parsing, cookie jar and header merging cost more than the rest of a try).
"""

from __future__ import annotations

import ipaddress
import ssl
import time
from urllib.parse import quote, urlsplit

import httpcore
import trio

from actors.webhooks.events import WebhookItem
from actors.webhooks.signing import sign, signing_key
from config import ConfigError

__all__ = [
    "Answer", "NotAllowed", "Target", "open_pool", "post", "resolve_allowed", "tls_context",
]  # fmt: skip

USER_AGENT = b"mailactors-webhooks/1"
REPLY_CHARS = 200  # of a receiver's answer kept in the error text
REPLY_BYTES = 4096  # read of an answer's body at most
# An idle connection is closed after this: below the common servers' own idle timeouts
# (5 s: hypercorn, uvicorn, Node), so a try seldom meets a connection the server just closed.
KEEPALIVE_S = 4.0
RESOLVE_TTL_S = 30.0  # a checked address is used this long before the host is resolved again
_URL_SAFE = "/?&=%:@!$'()*+,;-._~"  # what stays as written in a request's target (RFC 3986)
# What a failed try raises (every other exception is a bug, and crashes the dispatcher).
_TRY_ERRORS = (
    httpcore.TimeoutException, httpcore.NetworkError, httpcore.ProtocolError,
    httpcore.UnsupportedProtocol, httpcore.ConnectionNotAvailable, OSError,
)  # fmt: skip


class NotAllowed(Exception):
    """The endpoint's address is not one webhooks may reach (SSRF guard)."""


IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _allowed(address: IpAddress) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


async def resolve_allowed(host: str, port: int, allow_private: bool) -> IpAddress:
    """The address to connect to for ``host``; NotAllowed if it is not a public one."""
    try:
        infos = await trio.socket.getaddrinfo(host, port, type=trio.socket.SOCK_STREAM)
    except OSError as exc:
        raise OSError(f"cannot resolve {host}: {exc}") from exc
    addresses = [ipaddress.ip_address(str(info[4][0]).partition("%")[0]) for info in infos]
    if not addresses:
        raise OSError(f"{host} resolves to no address")
    if not allow_private:
        refused = [a for a in addresses if not _allowed(a)]
        if refused:
            raise NotAllowed(
                f"{host} resolves to {refused[0]}, a loopback, private or link-local address "
                "(set webhooks.allow_private to deliver there)"
            )
    return addresses[0]


class Answer:
    """How one try went: ``ok``, or the error text; ``permanent``: retrying cannot help."""

    __slots__ = ("ok", "error", "permanent", "status")

    def __init__(
        self, ok: bool, error: str | None = None, *, permanent: bool = False,
        status: int | None = None,
    ) -> None:  # fmt: skip
        self.ok = ok
        self.error = error
        self.permanent = permanent
        self.status = status


def tls_context(ca_file: str = "") -> ssl.SSLContext:
    """The TLS settings of every endpoint: certificates checked against the host's name,
    signed by ``ca_file``'s CAs ("" = certifi's bundle, httpx's default)."""
    if not ca_file:
        import certifi

        return ssl.create_default_context(cafile=certifi.where())
    try:
        return ssl.create_default_context(cafile=ca_file)
    except (OSError, ValueError) as exc:  # missing, unreadable, or holds no certificate
        raise ConfigError("webhooks.ca_file", f"cannot load CA certificates from {ca_file}: {exc}"
                          ) from None  # fmt: skip


def open_pool(concurrency: int, tls: ssl.SSLContext) -> httpcore.AsyncConnectionPool:
    """An endpoint's connections: at most ``concurrency``, kept alive, HTTP/1.1, no proxy."""
    return httpcore.AsyncConnectionPool(
        ssl_context=tls, max_connections=concurrency, keepalive_expiry=KEEPALIVE_S
    )


class Target:
    """An endpoint's URL, parsed once, and the address its SSRF check last allowed."""

    def __init__(self, url: str, key: str | bytes) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL with a host: {url!r}")
        self.scheme = parts.scheme.encode()
        self.host = parts.hostname.encode("idna").decode("ascii")
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.path = quote(path, safe=_URL_SAFE).encode("ascii")  # as httpx sent it: %-escaped
        self.key = signing_key(key)  # decoded once; never logged
        self.headers = [
            (b"host", parts.netloc.encode("idna")),
            (b"user-agent", USER_AGENT),
            (b"content-type", b"application/json"),
            (b"accept-encoding", b"identity"),  # what is read of the answer is what was sent
        ]
        self.extensions = {"sni_hostname": self.host}
        self.address: IpAddress | None = None
        self.checked_at = 0.0

    async def allowed_address(self, allow_private: bool) -> IpAddress:
        now = time.monotonic()
        if self.address is None or now - self.checked_at > RESOLVE_TTL_S:
            self.address = await resolve_allowed(self.host, self.port, allow_private)
            self.checked_at = now
        return self.address


async def post(
    pool: httpcore.AsyncConnectionPool,
    target: Target,
    item: WebhookItem,
    *,
    timeout_s: float,
    allow_private: bool,
) -> Answer:
    """POST ``item`` to ``target``, signed; never raises for what the endpoint does."""
    try:
        with trio.fail_after(timeout_s):
            address = await target.allowed_address(allow_private)
            timestamp = int(time.time())
            signature = sign(target.key, item.webhook_id, timestamp, item.body)
            request = httpcore.Request(
                b"POST",
                httpcore.URL(scheme=target.scheme, host=str(address), port=target.port,
                             target=target.path),  # fmt: skip
                headers=[
                    *target.headers,
                    (b"content-length", str(len(item.body)).encode()),
                    (b"webhook-id", item.webhook_id.encode()),
                    (b"webhook-timestamp", str(timestamp).encode()),
                    (b"webhook-signature", signature.encode()),
                ],
                content=item.body,
                extensions=target.extensions,
            )
            # Streamed, and only the start of the answer read: an endpoint that sends a
            # huge body costs no memory (the connection is closed, not drained).
            response = await pool.handle_async_request(request)
            try:
                head = b""
                async for chunk in response.aiter_stream():
                    head += chunk
                    if len(head) >= REPLY_BYTES:
                        break
            finally:
                await response.aclose()
            status = response.status
            if 200 <= status < 300:
                return Answer(True, status=status)
            text = head[:REPLY_CHARS].decode("utf-8", "replace").strip()
            if 300 <= status < 400:
                where = _header(response.headers, b"location")[:REPLY_CHARS]
                return Answer(False, f"HTTP {status} redirect to {where} (not followed)",
                              status=status)  # fmt: skip
            return Answer(False, f"HTTP {status}" + (f": {text}" if text else ""), status=status)
    except NotAllowed as exc:
        return Answer(False, f"refused: {exc}", permanent=True)
    except trio.TooSlowError:
        return Answer(False, f"no answer within {timeout_s:g} s")
    except _TRY_ERRORS as exc:
        if isinstance(exc, httpcore.ConnectError | OSError):
            target.address = None  # the host may have moved: resolve (and check) it again
        return Answer(False, _reason(exc)[:REPLY_CHARS])


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> str:
    for key, value in headers:
        if key.lower() == name:
            return value.decode("latin-1")
    return "?"


def _reason(exc: BaseException) -> str:
    """The error text of a failed try: a TLS failure's reason is kept, however deep in the
    chain of causes the HTTP library put it (a refused certificate says why)."""
    seen: BaseException | None = exc
    for _ in range(10):  # a chain is short; a cycle in it must not hang the dispatcher
        if seen is None:
            break
        if isinstance(seen, ssl.SSLError):
            return f"TLS: {seen}"
        seen = seen.__cause__ or seen.__context__
    return f"{type(exc).__name__}: {exc}"

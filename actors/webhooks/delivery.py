"""One HTTP try: the SSRF guard, the signed POST, and what its answer means.

The guard resolves the endpoint's host itself and refuses it when any address it
resolves to is loopback, private, link-local, multicast or otherwise not global
(``webhooks.allow_private`` lifts that); the request then goes to the checked
address (Host header and TLS SNI keep the name), so a second lookup cannot be
steered elsewhere (DNS rebinding). Redirects are never followed: a 3xx is a failure.
"""

from __future__ import annotations

import ipaddress
import time

import httpx
import trio

from actors.webhooks.events import WebhookItem
from actors.webhooks.signing import sign

__all__ = ["Answer", "NotAllowed", "post", "resolve_allowed"]

USER_AGENT = "mailactors-webhooks/1"
REPLY_CHARS = 200  # of a receiver's answer kept in the error text
REPLY_BYTES = 4096  # read of an answer's body at most


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


async def post(
    client: httpx.AsyncClient,
    url: str,
    secret: str,
    item: WebhookItem,
    *,
    timeout_s: float,
    allow_private: bool,
) -> Answer:
    """POST ``item`` to ``url``, signed; never raises for what the endpoint does."""
    target = httpx.URL(url)
    host = target.host
    port = target.port or (443 if target.scheme == "https" else 80)
    try:
        with trio.fail_after(timeout_s):
            address = await resolve_allowed(host, port, allow_private)
            timestamp = int(time.time())
            headers = {
                "content-type": "application/json",
                "user-agent": USER_AGENT,
                "accept-encoding": "identity",  # what is read of the answer is what was sent
                "host": target.netloc.decode("ascii"),
                "webhook-id": item.webhook_id,
                "webhook-timestamp": str(timestamp),
                "webhook-signature": sign(secret, item.webhook_id, timestamp, item.body),
            }
            request = client.build_request(
                "POST",
                target.copy_with(host=str(address)),
                content=item.body,
                headers=headers,
                extensions={"sni_hostname": host},
            )
            # Streamed, and only the start of the answer read: an endpoint that sends a
            # huge body costs no memory (the connection is closed, not drained).
            response = await client.send(request, stream=True, follow_redirects=False)
            try:
                head = b""
                async for chunk in response.aiter_raw():
                    head += chunk
                    if len(head) >= REPLY_BYTES:
                        break
            finally:
                await response.aclose()
            status = response.status_code
            if 200 <= status < 300:
                return Answer(True, status=status)
            text = head[:REPLY_CHARS].decode("utf-8", "replace").strip()
            if 300 <= status < 400:
                where = response.headers.get("location", "?")[:REPLY_CHARS]
                return Answer(False, f"HTTP {status} redirect to {where} (not followed)",
                              status=status)  # fmt: skip
            return Answer(False, f"HTTP {status}" + (f": {text}" if text else ""), status=status)
    except NotAllowed as exc:
        return Answer(False, f"refused: {exc}", permanent=True)
    except trio.TooSlowError:
        return Answer(False, f"no answer within {timeout_s:g} s")
    except (httpx.HTTPError, OSError) as exc:
        return Answer(False, f"{type(exc).__name__}: {exc}"[:REPLY_CHARS])

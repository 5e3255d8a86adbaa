"""Who may see the web view, and what every answer carries: login, session, CSRF, CSP.

* The login secret is the gRPC API's token (``grpc.token_env`` / ``token_file``): one
  secret for the whole system. Without one (allowed only on loopback, by the bind rules)
  the login page says so and lets in requests from loopback only.
* The session is Starlette's signed cookie (itsdangerous), HttpOnly, SameSite=Strict,
  Secure under TLS. Its key is random per process: a restart logs everyone out, and
  there is no key to keep secret on disk.
* Every state-changing request (POST) must carry the session's CSRF token (form field
  ``csrf`` or header ``X-CSRF-Token``), login included.
* Every answer carries a strict Content-Security-Policy: nothing inline runs, nothing
  loads from elsewhere. The rendered email has its own, stricter one.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "CSP",
    "FRAME_CSP",
    "Access",
    "SecurityHeaders",
    "csrf_token",
    "is_loopback",
]

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "frame-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
# The email as its recipient sees it: its own styles, inline images only, no script,
# no remote load (no tracking pixel fires from here), shown only inside our own pages.
FRAME_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'self'; "
    "sandbox"  # sandboxed even when opened on its own, outside the iframe
)

SESSION_AUTHED = "authed"
SESSION_CSRF = "csrf"


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def csrf_token(request: Request) -> str:
    """The session's CSRF token, made on first use."""
    token = request.session.get(SESSION_CSRF)
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        request.session[SESSION_CSRF] = token
    return token


class Access:
    """The login rule of one process: the gRPC token, or loopback when there is none."""

    def __init__(self, secret: str | None) -> None:
        self.secret = secret

    def may_enter(self, request: Request, given: str) -> bool:
        if self.secret is None:
            return is_loopback(request.client.host if request.client else None)
        return hmac.compare_digest(given.encode(), self.secret.encode())

    def logged_in(self, request: Request) -> bool:
        if request.session.get(SESSION_AUTHED) is not True:
            return False
        # Without a secret, a session is only good from loopback (a cookie carried elsewhere
        # is worth nothing).
        return self.secret is not None or is_loopback(
            request.client.host if request.client else None
        )

    @staticmethod
    def enter(request: Request) -> None:
        """A fresh session (new CSRF token): nothing set before login survives it."""
        request.session.clear()
        request.session[SESSION_AUTHED] = True
        csrf_token(request)

    @staticmethod
    def leave(request: Request) -> None:
        request.session.clear()

    @staticmethod
    async def csrf_ok(request: Request) -> bool:
        expected = request.session.get(SESSION_CSRF)
        if not isinstance(expected, str):
            return False
        given = request.headers.get("x-csrf-token")
        if given is None:
            form = await request.form()
            value = form.get("csrf")
            given = value if isinstance(value, str) else None
        return given is not None and hmac.compare_digest(given.encode(), expected.encode())

    def guard(
        self, handler: Callable[[Request], Awaitable[Response]], *, login_page: str
    ) -> Callable[[Request], Awaitable[Response]]:
        """*handler* for a logged-in session only; a POST also needs the CSRF token."""

        async def guarded(request: Request) -> Response:
            if not self.logged_in(request):
                if request.method == "GET" and "text/html" in request.headers.get("accept", ""):
                    return RedirectResponse(login_page, status_code=303)
                return PlainTextResponse("log in first", status_code=401)
            if request.method == "POST" and not await self.csrf_ok(request):
                return PlainTextResponse("missing or wrong CSRF token", status_code=403)
            return await handler(request)

        return guarded


class SecurityHeaders:
    """Adds the CSP and its companions to every answer that has not set its own."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers: list[Any] = list(message.get("headers", []))
                names = {name.lower() for name, _ in headers}
                defaults = (
                    (b"content-security-policy", CSP.encode()),
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"no-referrer"),
                    (b"x-frame-options", b"DENY"),
                    (b"cache-control", b"no-store"),
                )
                headers.extend((n, v) for n, v in defaults if n not in names)
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)

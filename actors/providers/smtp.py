"""A provider that sends through an SMTP server, with a pool of kept-alive connections.

aiosmtplib is an asyncio library, so every call to it crosses ``runtime``'s asyncio
edge, and each send crosses it exactly once: connecting when needed, MAIL, RCPT and
DATA all run in one asyncio coroutine (:meth:`SmtpProvider._deliver`), because a
crossing costs about as much as a round trip to a local server.

The pool holds up to ``pool_size`` connections; a send takes one for itself (two
sends never share a connection), and connections are reused most-recently-used
first, so a trickle of mail keeps one connection open rather than ``pool_size``.
A connection that failed (disconnect, timeout, 421) is dropped and reopened by the
next send that takes its slot. If a kept-alive connection turns out to be closed
by the server when MAIL is sent, the send is retried once on a new connection:
nothing was accepted yet, so this cannot duplicate the message.

Classification, for :class:`~actors.domain.edges.SendResult`: 2xx ok; 5xx PERMANENT; 4xx
TRANSIENT, or THROTTLED when the reply asks to slow down (a 4.7.x enhanced code,
454 4.7.x, "rate", "too many", "throttl...", "slow down"); disconnects, refused
connections and timeouts TRANSIENT. A "retry after N seconds" hint in the reply
becomes ``retry_after``. The password is held in a wrapper that never prints it.

Internationalised addresses: a message with one is sent with SMTPUTF8 when the server offers
it; otherwise an internationalised domain goes as its IDNA A-labels (``xn--``) in the envelope
and the headers, and an address with a non-ASCII local part is a PERMANENT failure naming it.

DKIM: with a ``signer`` the bytes are signed after they are rendered for the connection's
server (8-bit, or 7-bit for a server without 8BITMIME), so the signature covers exactly what
is sent; a message the signer refuses (see :meth:`~actors.domain.dkim.DkimSigner.sign`) is a
PERMANENT failure and nothing is sent.
"""

from __future__ import annotations

import asyncio
import functools
import re
import socket
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import parseaddr

import aiosmtplib
import trio

from actors.domain.dkim import DkimSigner
from actors.domain.edges import Failure, OutgoingEmail, SendResult
from actors.domain.mime import ascii_email, build_message, final_bytes, needs_smtputf8
from runtime import AsyncioEdge, current_edge

__all__ = ["SmtpProvider", "SmtpStatistics", "classify_reply", "parse_retry_after"]

# How much of a server reply a result keeps: enough to read, not a whole banner.
MAX_REPLY_CHARS = 500

# "Ok: queued as 4Bc2Xk0Yz1" (Postfix and most), "OK id=1qAbCd-0003Xy-Ab" (Exim).
_QUEUE_ID = re.compile(r"queued as\s+<?([\w.@+-]+?)>?(?:\s|$)|\bid=([\w.@+-]+)", re.IGNORECASE)
_THROTTLE = re.compile(
    r"\b4\.7\.\d{1,3}\b|\brate\b|rate[- ]?limit|too many|throttl|slow(?:ing)? down",
    re.IGNORECASE,
)
_RETRY_AFTER = re.compile(
    r"(?:retry|try again)(?:[- ]after)?(?:\s+in)?\s*:?\s*(\d+(?:\.\d+)?)\s*"
    r"(seconds?|secs?|s|minutes?|mins?|m|hours?|hrs?|h)?\b",
    re.IGNORECASE,
)
_UNIT_SECONDS = {"s": 1.0, "m": 60.0, "h": 3600.0}


def parse_retry_after(text: str) -> float | None:
    """Seconds from a "retry after 30 seconds" / "try again in 5 minutes" hint, if any."""
    match = _RETRY_AFTER.search(text)
    if match is None:
        return None
    unit = (match.group(2) or "s")[0].lower()
    return float(match.group(1)) * _UNIT_SECONDS[unit]


def classify_reply(code: int | None, text: str) -> Failure:
    """The failure class of an SMTP error reply (see the module docstring)."""
    if code is None or not 400 <= code < 600:
        return Failure.TRANSIENT  # not a proper error reply: the exchange went wrong
    if code >= 500:
        return Failure.PERMANENT
    if _THROTTLE.search(text):
        return Failure.THROTTLED
    return Failure.TRANSIENT


@dataclass(frozen=True, slots=True)
class SmtpStatistics:
    """Counters of one :class:`SmtpProvider` (a snapshot)."""

    pool_size: int
    connections_open: int  # connected clients in the pool now
    connects_total: int  # connections opened since open()
    sends_in_flight: int
    sent: int
    failed: int


class _Secret:
    """A credential that does not show itself in reprs, logs or tracebacks' locals."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "'***'"

    __str__ = __repr__


class _Conn:
    """One pool slot: a client, connected or not yet. Used by one send at a time."""

    __slots__ = ("smtp",)

    def __init__(self) -> None:
        self.smtp: aiosmtplib.SMTP | None = None


class _StaleConnection(Exception):
    """A kept-alive connection was found closed before MAIL was accepted."""


@functools.cache
def _default_local_hostname() -> str:
    return socket.getfqdn()


@functools.lru_cache(maxsize=256)
def _envelope_address(sender: str) -> str:
    """The address part of a From value ("Name <a@b>" -> "a@b") for MAIL FROM."""
    return parseaddr(sender)[1] or sender


class SmtpProvider:
    """Sends email through the SMTP server at ``host:port``.

    Use inside ``runtime.open_asyncio_edge()`` (``open()`` takes the current edge).
    ``starttls`` upgrades a plain connection with STARTTLS (and fails if the server
    does not offer it); ``use_tls`` connects with implicit TLS (port 465). With a
    ``username``, each connection logs in after connecting. ``timeout`` bounds the
    connect and each SMTP command. The envelope sender is each email's ``envelope_from``
    (a VERP return path, :mod:`actors.feedback.verp`), else the address of its sender.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        username: str | None = None,
        password: str | None = None,
        starttls: bool = False,
        use_tls: bool = False,
        timeout: float = 30.0,
        pool_size: int = 8,
        name: str = "smtp",
        local_hostname: str | None = None,
        validate_certs: bool = True,
        tls_context: ssl.SSLContext | None = None,
        signer: DkimSigner | None = None,
    ) -> None:
        if starttls and use_tls:
            raise ValueError("starttls and use_tls are exclusive: choose one")
        if pool_size < 1:
            raise ValueError(f"pool_size must be at least 1, got {pool_size}")
        if (username is None) != (password is None):
            raise ValueError("username and password go together")
        self.name = name
        self.host = host
        self.port = port
        self.username = username
        self._password = _Secret(password) if password is not None else None
        self.starttls = starttls
        self.use_tls = use_tls
        self.timeout = timeout
        self.pool_size = pool_size
        self.local_hostname = local_hostname
        self.validate_certs = validate_certs
        self.tls_context = tls_context
        self.signer = signer
        self._edge: AsyncioEdge | None = None
        self._closing = False
        self._slots = trio.Semaphore(pool_size)
        self._conns = [_Conn() for _ in range(pool_size)]
        self._idle = list(self._conns)  # a stack: the most recently used on top
        self._connects = 0
        self._sent = 0
        self._failed = 0

    def __repr__(self) -> str:
        auth = f", username={self.username!r}, password='***'" if self.username else ""
        tls = ", use_tls=True" if self.use_tls else ", starttls=True" if self.starttls else ""
        return (
            f"SmtpProvider({self.host!r}, {self.port}{auth}{tls}, "
            f"pool_size={self.pool_size}, name={self.name!r})"
        )

    def statistics(self) -> SmtpStatistics:
        return SmtpStatistics(
            pool_size=self.pool_size,
            connections_open=sum(
                1 for c in self._conns if c.smtp is not None and c.smtp.is_connected
            ),
            connects_total=self._connects,
            sends_in_flight=self.pool_size - self._slots.value,
            sent=self._sent,
            failed=self._failed,
        )

    async def open(self) -> None:
        """Bind to the current asyncio edge. Connections are opened by the first sends."""
        edge = current_edge()
        if self.local_hostname is None:
            # aiosmtplib would look this up (DNS) on every connect.
            self.local_hostname = await trio.to_thread.run_sync(_default_local_hostname)
        self._closing = False
        self._edge = edge

    async def close(self) -> None:
        """Say QUIT on the idle connections (bounded); sends still running close their own."""
        edge, self._edge = self._edge, None
        if edge is None:
            return
        self._closing = True
        clients = [c.smtp for c in self._idle if c.smtp is not None]
        for conn in self._idle:
            conn.smtp = None
        if not clients:
            return
        with trio.CancelScope(shield=True) as scope:
            scope.deadline = trio.current_time() + min(self.timeout, 5.0) + 1.0
            try:
                await edge.run(self._quit_all, clients)
            except RuntimeError:  # the edge closed first; its loop took the sockets
                pass

    async def _quit_all(self, clients: list[aiosmtplib.SMTP]) -> None:
        async def quit_one(smtp: aiosmtplib.SMTP) -> None:
            try:
                if smtp.is_connected:
                    await smtp.quit(timeout=min(self.timeout, 5.0))
            except (aiosmtplib.SMTPException, OSError):
                pass
            finally:
                smtp.close()

        await asyncio.gather(*(quit_one(s) for s in clients))

    # -- sending ---------------------------------------------------------------

    async def send(self, email: OutgoingEmail) -> SendResult:
        edge = self._edge
        if edge is None:
            raise RuntimeError("SmtpProvider.send() before open() or after close()")
        try:
            msg = build_message(email)
        except ValueError as exc:
            self._failed += 1
            return self._failure(None, str(exc), Failure.PERMANENT)
        async with self._slots:
            conn = self._idle.pop()
            try:
                result = await edge.run(self._deliver, conn, msg, email)
            finally:
                # Whatever happened, the slot is consistent: _deliver drops a client it
                # cannot vouch for (including when cancelled).
                self._idle.append(conn)
        if result.ok:
            self._sent += 1
        else:
            self._failed += 1
        return result

    async def _deliver(self, conn: _Conn, msg: EmailMessage, email: OutgoingEmail) -> SendResult:
        """asyncio side of one send: connect if needed, then MAIL, RCPT, DATA."""
        try:
            try:
                return await self._attempt(conn, msg, email, True)
            except _StaleConnection:
                return await self._attempt(conn, msg, email, False)
        except BaseException:  # cancelled mid-exchange: the connection's state is unknown
            self._drop(conn)
            raise
        finally:
            if self._closing:
                self._drop(conn)

    async def _attempt(
        self,
        conn: _Conn,
        msg: EmailMessage,
        email: OutgoingEmail,
        may_retry: bool,
    ) -> SendResult:
        """The email's own recipient's refusal fails the send. A refused cc or bcc copy does
        not; it is named in the reply. ``msg`` is ``build_message(email)``."""
        smtp = conn.smtp
        fresh = smtp is None or not smtp.is_connected
        stage = "connect"
        try:
            if smtp is None or fresh:
                self._drop(conn)
                smtp = conn.smtp = self._client()
                self._connects += 1
                await smtp.connect()
                if smtp.last_ehlo_response is None:  # connect() greets only for TLS or login
                    try:
                        await smtp.ehlo()
                    except aiosmtplib.SMTPHeloError:
                        await smtp.helo()  # a server from before ESMTP
            stage = "MAIL"
            utf8 = needs_smtputf8(msg)
            if utf8 and not smtp.supports_extension("smtputf8"):
                # RFC 6531 section 3.2: without SMTPUTF8 only ASCII may be sent, so an
                # internationalised domain goes as its A-labels, in the envelope and the
                # headers alike; an address with a non-ASCII local part cannot go at all.
                try:
                    email = ascii_email(email)
                    msg = build_message(email)
                except ValueError as exc:
                    return self._failure(
                        None,
                        f"the server does not offer SMTPUTF8, and {exc}",
                        Failure.PERMANENT,
                    )
                utf8 = False
            sender = email.envelope_from or _envelope_address(email.sender)
            recipients = email.envelope_recipients
            eight_bit = smtp.supports_extension("8bitmime")
            try:
                data = final_bytes(
                    msg, eight_bit=eight_bit, sign=self.signer.sign if self.signer else None
                )
            except ValueError as exc:  # the signer refused it: nothing was said to the server
                return self._failure(None, str(exc), Failure.PERMANENT)
            options = [f"SIZE={len(data)}"] if smtp.supports_extension("size") else []
            if eight_bit:
                options.append("BODY=8BITMIME")
            encoding = "ascii"
            if utf8:
                options.append("SMTPUTF8")
                encoding = "utf-8"
            await smtp.mail(sender, options=options, encoding=encoding)
            stage = "RCPT"
            await smtp.rcpt(recipients[0], encoding=encoding)
            refused: list[str] = []
            for copy in recipients[1:]:
                try:
                    await smtp.rcpt(copy, encoding=encoding)
                except aiosmtplib.SMTPRecipientRefused as exc:
                    if exc.code == 421:
                        raise
                    refused.append(f"{copy} ({exc.code})")
            stage = "DATA"
            response = await smtp.data(data)
        except aiosmtplib.SMTPResponseException as exc:
            # A reply the server chose: refused sender, recipient or data; a 4xx/5xx
            # greeting, EHLO or login failure; 421 (the server is closing).
            if exc.code == 421 or stage == "connect":
                self._drop(conn)
                if may_retry and not fresh and stage == "MAIL":
                    raise _StaleConnection from exc
            elif stage in ("MAIL", "RCPT"):
                await self._reset(conn)
            return self._failure(exc.code, exc.message, stage=stage)
        except (TimeoutError, OSError, aiosmtplib.SMTPException) as exc:
            # Refused or lost connection, timeout, STARTTLS not offered...: the
            # connection cannot be trusted any more.
            self._drop(conn)
            if (
                may_retry
                and not fresh
                and stage == "MAIL"
                and isinstance(exc, aiosmtplib.SMTPServerDisconnected)
            ):
                raise _StaleConnection from exc
            failure = (
                Failure.PERMANENT
                if isinstance(exc, aiosmtplib.SMTPNotSupported)
                else Failure.TRANSIENT
            )
            return self._failure(None, f"{stage}: {_describe(exc)}", failure)
        except ValueError as exc:  # an address aiosmtplib cannot put in a command
            await self._reset(conn)
            return self._failure(None, f"{stage}: {exc}", Failure.PERMANENT)
        reply = response.message
        match = _QUEUE_ID.search(reply)
        if refused:
            reply = f"{reply}; copies refused: {', '.join(refused)}"
        queue_id = (match.group(1) or match.group(2)) if match else None
        return SendResult(
            provider=self.name,
            ok=True,
            message_id=queue_id or email.message_id,
            code=response.code,
            reply=reply[:MAX_REPLY_CHARS],
        )

    def _client(self) -> aiosmtplib.SMTP:
        return aiosmtplib.SMTP(
            hostname=self.host,
            port=self.port,
            username=self.username,
            password=self._password.reveal() if self._password is not None else None,
            local_hostname=self.local_hostname,
            timeout=self.timeout,
            use_tls=self.use_tls,
            start_tls=self.starttls,
            validate_certs=self.validate_certs,
            tls_context=self.tls_context,
        )

    async def _reset(self, conn: _Conn) -> None:
        """RSET after a refused MAIL or RCPT, so the connection can carry the next send."""
        smtp = conn.smtp
        if smtp is None:
            return
        try:
            await smtp.rset()
        except (TimeoutError, OSError, aiosmtplib.SMTPException):
            self._drop(conn)

    @staticmethod
    def _drop(conn: _Conn) -> None:
        smtp, conn.smtp = conn.smtp, None
        if smtp is not None:
            smtp.close()

    def _failure(
        self, code: int | None, text: str, failure: Failure | None = None, stage: str | None = None
    ) -> SendResult:
        return SendResult(
            provider=self.name,
            ok=False,
            code=code,
            reply=text[:MAX_REPLY_CHARS],
            failure=failure if failure is not None else classify_reply(code, text),
            retry_after=parse_retry_after(text),
            stage=stage,
        )


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__

"""aiosmtpd servers for tests and the soak: one that captures what it is sent, one that fails on
purpose.

(aiosmtpd is a development dependency: ``pip install -e '.[dev]'``.)

Each runs aiosmtpd's threaded ``Controller`` (its own thread and asyncio loop, so it
works the same under a plain ``trio.run``, under trio-asyncio and in sync tests) on a
free loopback port, and is a context manager both ways::

    with CapturingServer() as server: ...          # sync test
    async with CapturingServer() as server: ...    # trio test (starts in a worker thread)

``server.host`` / ``server.port`` say where to connect. What the server saw is read
with thread-safe accessors (:meth:`SmtpTestServer.messages`, ``connections``).
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from typing import Any, Self

import trio
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from actors.testing.localservices import free_port  # here too: "connection refused" tests

__all__ = [
    "CapturingServer",
    "FaultServer",
    "ReceivedMessage",
    "Served",
    "SmtpTestServer",
    "free_port",
]

HOST = "127.0.0.1"


class Served:
    """A server run in a thread of its own: ``with`` or ``async with`` starts and stops it.

    Subclasses give ``start()`` and ``stop()`` (blocking); from Trio they run in a worker
    thread, the stop shielded so that a cancelled test still frees the port.
    """

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:  # stops whatever happened
        self.stop()

    async def __aenter__(self) -> Self:
        await trio.to_thread.run_sync(self.start)
        return self

    async def __aexit__(self, *exc_info: object) -> None:  # stops whatever happened
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(self.stop)


@dataclass(frozen=True, slots=True)
class ReceivedMessage:
    """One message as the server received it."""

    mail_from: str
    rcpt_tos: list[str]
    mail_options: list[str]
    data: bytes  # the raw message, as sent after DATA (dot-unstuffed)
    peer: tuple[str, int]  # the client's address: one per connection
    at: float = 0.0  # time.monotonic() when the server accepted it (after DATA)

    @property
    def event_id(self) -> str | None:
        """The X-Mailactors-Event-Id header: which email this is."""
        value = message_from_bytes(self.data, policy=policy.default)["X-Mailactors-Event-Id"]
        return str(value) if value is not None else None


class _CountingSMTP(SMTP):
    """aiosmtpd's SMTP protocol, telling its owner about each new connection."""

    def __init__(self, owner: SmtpTestServer, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._owner = owner

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._owner._connected(transport.get_extra_info("peername"))


class _Controller(Controller):
    """A Controller that binds ``port`` (0: any free one) and reports the port it got.

    Its loop is made directly: ``asyncio.new_event_loop()`` is refused inside Trio
    once trio-asyncio is imported.
    """

    def __init__(self, owner: SmtpTestServer, handler: Any, port: int, **smtp_kwargs: Any) -> None:
        super().__init__(
            handler, hostname=HOST, port=port, loop=asyncio.SelectorEventLoop(), **smtp_kwargs
        )
        self._owner = owner

    def factory(self) -> SMTP:
        return _CountingSMTP(self._owner, self.handler, **self.SMTP_kwargs)

    def _create_server(self) -> Any:
        async def bind() -> asyncio.AbstractServer:
            server = await self.loop.create_server(
                self._factory_invoker, host=self.hostname, port=self.port, ssl=self.ssl_context
            )
            self.port = server.sockets[0].getsockname()[1]
            return server

        return bind()


class SmtpTestServer(Served):
    """Base of the test servers: start/stop, connection count, captured messages."""

    def __init__(self, *, delay: float = 0.0, **smtp_kwargs: Any) -> None:
        self.delay = delay
        self._smtp_kwargs = smtp_kwargs
        self._lock = threading.Lock()
        self._messages: list[ReceivedMessage] = []
        self._peers: list[tuple[str, int]] = []
        self._controller: _Controller | None = None
        self._probes = 0  # the Controller connects once at each start to check it is up
        self.host = HOST
        self.port = 0

    # -- what the server saw (thread-safe) --

    def messages(self) -> list[ReceivedMessage]:
        with self._lock:
            return list(self._messages)

    @property
    def connections(self) -> int:
        """How many connections clients have opened (the start-up probe not counted)."""
        with self._lock:
            return len(self._peers) - self._probes

    def clear(self) -> None:
        with self._lock:
            del self._messages[:]

    def _connected(self, peer: tuple[str, int]) -> None:
        with self._lock:
            self._peers.append(peer)

    def _record(self, session: Session, envelope: Envelope) -> str:
        """Keep the message; return the queue id for the reply."""
        message = ReceivedMessage(
            mail_from=envelope.mail_from or "",
            rcpt_tos=list(envelope.rcpt_tos),
            mail_options=list(envelope.mail_options),
            data=envelope.original_content or b"",
            peer=session.peer,  # type: ignore[arg-type]  # typed loosely by aiosmtpd
            at=time.monotonic(),
        )
        with self._lock:
            self._messages.append(message)
            return f"{len(self._messages):08X}"

    # -- aiosmtpd handler hooks --

    async def _pause(self) -> None:
        if self.delay:
            await asyncio.sleep(self.delay)

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        await self._pause()
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        await self._pause()
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        await self._pause()
        return f"250 2.0.0 Ok: queued as {self._record(session, envelope)}"

    # -- start / stop --

    def start(self) -> None:
        controller = _Controller(self, self, self.port, **self._smtp_kwargs)
        controller.start()
        self._controller = controller
        self.port = controller.port
        with self._lock:
            self._probes += 1

    def stop(self) -> None:
        """Stop listening and close every connection (clients see them drop)."""
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def restart(self) -> None:
        """Stop, then listen again on the same port: every client connection is gone."""
        self.stop()
        self.start()


class CapturingServer(SmtpTestServer):
    """Accepts everything and keeps each message (envelope and raw bytes)."""


@dataclass
class _Faults:
    rcpt_replies: Mapping[str, str] = field(default_factory=dict)
    data_replies: Mapping[str, str] = field(default_factory=dict)
    transient_rate: float = 0.0
    permanent_rate: float = 0.0
    transient_reply: str = "451 4.3.0 Injected temporary failure"
    permanent_reply: str = "554 5.0.0 Injected permanent failure"


class FaultServer(SmtpTestServer):
    """Answers with chosen failures, and captures what it accepts.

    * ``rcpt_replies``: recipient -> full reply line (``"550 5.1.1 No such user"``),
      given to RCPT TO for that recipient;
    * ``data_replies``: recipient -> reply line given after DATA instead of 250;
    * ``transient_rate`` / ``permanent_rate``: after DATA, fail that share of the
      other messages with ``transient_reply`` / ``permanent_reply``, drawn from a
      ``random.Random(seed)`` so a run can be repeated;
    * ``delay``: seconds to wait before each reply to MAIL, RCPT and DATA.
    """

    def __init__(
        self,
        *,
        rcpt_replies: Mapping[str, str] | None = None,
        data_replies: Mapping[str, str] | None = None,
        transient_rate: float = 0.0,
        permanent_rate: float = 0.0,
        transient_reply: str = "451 4.3.0 Injected temporary failure",
        permanent_reply: str = "554 5.0.0 Injected permanent failure",
        seed: int = 0,
        delay: float = 0.0,
        **smtp_kwargs: Any,
    ) -> None:
        super().__init__(delay=delay, **smtp_kwargs)
        self.faults = _Faults(
            dict(rcpt_replies or {}),
            dict(data_replies or {}),
            transient_rate,
            permanent_rate,
            transient_reply,
            permanent_reply,
        )
        self._rng = random.Random(seed)
        self.failed = 0

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        await self._pause()
        reply = self.faults.rcpt_replies.get(address)
        if reply is not None:
            self.failed += 1
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        await self._pause()
        for rcpt in envelope.rcpt_tos:
            reply = self.faults.data_replies.get(rcpt)
            if reply is not None:
                self.failed += 1
                return reply
        draw = self._rng.random()
        if draw < self.faults.permanent_rate:
            self.failed += 1
            return self.faults.permanent_reply
        if draw < self.faults.permanent_rate + self.faults.transient_rate:
            self.failed += 1
            return self.faults.transient_reply
        return f"250 2.0.0 Ok: queued as {self._record(session, envelope)}"

"""The inbound SMTP endpoint: where bounces, complaints (and, later, unsubscribe mails) arrive.

aiosmtpd is an asyncio library, so the server runs on the asyncio side of the
runtime's edge, as the gRPC server does; each accepted message crosses into Trio
once (``edge.call_trio``), where it is read (in a worker thread, with a deadline)
and handed to the :class:`~actors.feedback.events.FeedbackSink`.

What it answers, and why:

* **RCPT TO** is checked at once, by the local part's prefix (``bounces+...``):
  a registry of :class:`RecipientHandler` by prefix, so that another address
  kind (``unsubscribe+<token>`` for List-Unsubscribe mailto) plugs in without
  editing this module. A return path whose HMAC does not verify is refused 550
  (no forged bounces), as is an unknown local part or another domain. One
  recipient per transaction (a second gets 452, and the client sends it in the
  next one): each report is about the one email its address names.
* **DATA** over ``max_message_bytes`` is refused 552 by aiosmtpd, which
  discards the bytes as they come (never buffered). A report is answered 250
  only after the sink has returned for every record in it; a sink that raises
  (or a report that takes longer than ``parse_timeout_s`` to read) gets 451, so
  the sending MTA keeps it and retries, and the sink applies a repeat once
  (``source_id``). A message out of bounds (too many parts) gets 554; one that
  is not a bounce (an auto-reply, a vacation message, anything unrecognised) or
  that names another email than its address gets 250 and is logged and counted
  as ignored: retrying it would not change that.
* **A flood** is bounded: at most ``max_connections`` connections (more are told
  421 and closed), ``max_commands`` of each command per connection, an idle
  timeout, and at most two reports read at once (a Trio CapacityLimiter).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar, Protocol

import trio
from aiosmtpd.smtp import SMTP, Envelope, Session

from actors.feedback.dsn import (
    Mismatch,
    ReportKind,
    ReportRefused,
    feedback_records,
    parse_report,
)
from actors.feedback.events import FeedbackSink
from actors.feedback.verp import VerpCodec, verp_codec
from config import BouncesConfig, Config
from runtime import Actor, AsyncioEdge, ChildSpec, current_edge

__all__ = [
    "BounceHandler",
    "InboundMessage",
    "InboundSmtpServer",
    "InboundStatistics",
    "RecipientHandler",
    "inbound_smtp_server",
]

log = logging.getLogger("mailactors.feedback")

PARSE_THREADS = 2  # reports read at once: the machine has two cores, the loop needs one
SINK_TIMEOUT_S = 60.0  # a sink that takes longer is treated as failed (451: the MTA retries)
DEFER = "451 4.3.0 Could not take the report now; please try again later"


@dataclass(frozen=True, slots=True)
class InboundMessage:
    """One message accepted for one recipient, as the handler of its prefix receives it."""

    recipient: str  # the whole RCPT TO address
    detail: str  # the local part after "<prefix>+"
    mail_from: str  # the envelope sender ("" for a bounce: the null return path)
    data: bytes  # the message as sent after DATA
    peer: str  # the client's address, for the log
    received_at: datetime


class RecipientHandler(Protocol):
    """What takes the mail for one local-part prefix (``bounces``, ``unsubscribe``...)."""

    def check(self, detail: str) -> str | None:
        """At RCPT TO, on the asyncio side (so cheap and non-blocking): None accepts the
        recipient; otherwise the whole SMTP reply that refuses it (``"550 5.1.1 ..."``)."""
        ...

    async def deliver(self, message: InboundMessage) -> str:
        """After DATA, in Trio: act on the message and return the SMTP reply (``"250 ..."``).
        Raising answers 451 (the sender keeps the message and retries)."""
        ...


@dataclass(frozen=True, slots=True)
class InboundStatistics:
    """Counters of one inbound SMTP endpoint (a snapshot)."""

    connections_open: int
    counts: Mapping[str, int]  # connections_refused, rcpt_refused, feedback_bounce, ignored_*...


class BounceHandler:
    """``bounces+<token>``: DSNs and ARF reports about the email the token names.

    The token is verified at RCPT (550 if forged) and again before the report is
    applied; the records go to ``sink`` one by one, and the reply is 250 only
    once every one of them has been applied.
    """

    def __init__(
        self,
        codec: VerpCodec,
        sink: FeedbackSink,
        *,
        max_parts: int = 256,
        max_multiparts: int = 32,
        parse_timeout_s: float = 5.0,
        counts: Counter[str] | None = None,
    ) -> None:
        self.codec = codec
        self.sink = sink
        self.max_parts = max_parts
        self.max_multiparts = max_multiparts
        self.parse_timeout_s = parse_timeout_s
        self.counts: Counter[str] = counts if counts is not None else Counter()
        self._limiter = trio.CapacityLimiter(PARSE_THREADS)

    def check(self, detail: str) -> str | None:
        if self.codec.verify_token(detail) is None:
            self.counts["rcpt_forged"] += 1
            return "550 5.7.1 Not a return path of this server (bad signature)"
        return None

    async def deliver(self, message: InboundMessage) -> str:
        verified = self.codec.verify_token(message.detail)
        if verified is None:  # check() refused it already; never applied unverified
            return "550 5.7.1 Not a return path of this server (bad signature)"
        parse = functools.partial(
            parse_report,
            message.data,
            max_parts=self.max_parts,
            max_multiparts=self.max_multiparts,
        )
        try:
            with trio.fail_after(self.parse_timeout_s):
                report = await trio.to_thread.run_sync(
                    parse, limiter=self._limiter, abandon_on_cancel=True
                )
        except ReportRefused as exc:
            self.counts["refused_malformed"] += 1
            log.warning("refused a report from %s: %s", message.peer, exc)
            return f"554 5.6.0 Report refused: {exc}"
        except trio.TooSlowError:
            self.counts["deferred_slow"] += 1
            log.warning("a report from %s took over %.1fs to read: deferred (451)",
                        message.peer, self.parse_timeout_s)  # fmt: skip
            return "451 4.3.0 The report took too long to read; please try again later"
        ids = {"event_id": verified.event_id} if verified.event_id else {}
        if report.kind in (ReportKind.AUTO_REPLY, ReportKind.UNRECOGNISED) or not report.found:
            reason = report.kind.value
            self.counts[f"ignored_{reason}"] += 1
            log.info("ignored a message to a return path (%s: %s) from %s", reason,
                     report.detector or "no bounce found", message.peer, extra=ids)  # fmt: skip
            return f"250 2.0.0 OK, ignored: not a bounce or complaint ({reason})"
        try:
            records = feedback_records(report, verified, message.received_at)
        except Mismatch as exc:
            self.counts["ignored_mismatch"] += 1
            log.warning("ignored a %s report from %s: %s", report.kind.value, message.peer, exc,
                        extra=ids)  # fmt: skip
            return "250 2.0.0 OK, ignored: the report names another email than its address"
        with trio.fail_after(SINK_TIMEOUT_S):
            outcomes = [await self.sink.report(record) for record in records]
        ignored: list[str] = []  # why the sink left a record alone (it logged each)
        for record, outcome in zip(records, outcomes, strict=True):
            if not outcome.applied:
                self.counts[f"ignored_{outcome.reason}"] += 1
                ignored.append(outcome.reason)
                continue
            self.counts[f"feedback_{record.kind.value}"] += 1
            log.info("%s for %s (%s %s) via %s", record.kind.value, record.recipient or "?",
                     record.bounce_type or record.feedback_type or "",
                     record.status_code or "", report.kind.value,
                     extra={"event_id": record.event_id})  # fmt: skip
        applied = f"250 2.0.0 OK, {len(records) - len(ignored)} report(s) applied"
        if not ignored:
            return applied
        return f"{applied}, {len(ignored)} ignored ({', '.join(sorted(set(ignored)))})"


class _Session(SMTP):
    """aiosmtpd's protocol with a connection limit: over it, 421 and close at once."""

    def __init__(self, owner: InboundSmtpServer, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._owner = owner
        self._counted = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        owner = self._owner
        if len(owner._open) >= owner.bounces.max_connections:
            owner.counts["connections_refused"] += 1
            assert isinstance(transport, asyncio.WriteTransport)
            transport.write(b"421 4.7.0 Too many connections, try again later\r\n")
            transport.close()
            return
        self._counted = True
        owner._open.add(transport)
        super().connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._counted:
            return
        self._owner._open.discard(self.transport)
        super().connection_lost(exc)


class _Handlers:
    """aiosmtpd's handler hooks (asyncio side): the registry by prefix, then into Trio."""

    def __init__(self, owner: InboundSmtpServer) -> None:
        self.owner = owner

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        owner = self.owner
        if envelope.rcpt_tos:
            return "452 4.5.3 One recipient per message: send the others separately"
        local, at, domain = address.rpartition("@")
        prefix, plus, detail = local.partition("+")
        handler = owner.handlers.get(prefix.lower()) if plus else None
        if not at or domain.lower().rstrip(".") != owner.domain:
            owner.counts["rcpt_refused"] += 1
            return f"550 5.7.1 This server takes mail for {owner.domain} only"
        if handler is None:
            owner.counts["rcpt_refused"] += 1
            return "550 5.1.1 No such mailbox"
        try:
            refusal = handler.check(detail)
        except Exception:  # a handler's bug: the sender tries again later, nothing is lost
            owner.counts["deferred_error"] += 1
            log.exception("the %s handler could not check a recipient", prefix)
            return DEFER
        if refusal is not None:
            owner.counts["rcpt_refused"] += 1
            log.info("refused RCPT TO from %s: %s", _peer(session), refusal)
            return refusal
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        owner = self.owner
        address = envelope.rcpt_tos[0]
        local = address.rpartition("@")[0]
        prefix, _, detail = local.partition("+")
        message = InboundMessage(
            recipient=address,
            detail=detail,
            mail_from=envelope.mail_from or "",
            data=envelope.original_content or b"",  # decode_data=False: the raw bytes
            peer=_peer(session),
            received_at=datetime.now(UTC),
        )
        owner.counts["messages"] += 1
        try:
            reply: str = await owner.edge.call_trio(owner.deliver, prefix.lower(), message)
        except Exception:
            owner.counts["deferred_error"] += 1
            log.exception("could not apply a message to %s from %s: deferred (451)", prefix,
                          message.peer)  # fmt: skip
            return DEFER
        return reply


def _peer(session: Session) -> str:
    peer = session.peer
    if isinstance(peer, tuple | list) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer)


class InboundSmtpServer(Actor[Any]):
    """Serves the inbound SMTP endpoint on ``[bounces]``'s host and port while it runs.

    ``handlers`` maps a local-part prefix (left of the ``+``) to its :class:`RecipientHandler`.
    """

    accepts: ClassVar[tuple[type, ...]] = ()

    def __init__(self, bounces: BouncesConfig, handlers: Mapping[str, RecipientHandler]) -> None:
        self.bounces = bounces
        self.domain = bounces.domain.lower().rstrip(".")
        self.handlers = {prefix.lower(): h for prefix, h in handlers.items()}
        self.counts: Counter[str] = Counter()
        for handler in self.handlers.values():
            if isinstance(handler, BounceHandler):  # one set of counters for the endpoint
                handler.counts = self.counts
        self._open: set[asyncio.BaseTransport] = set()
        self.bound: list[tuple[str, int]] = []

    def statistics(self) -> InboundStatistics:
        return InboundStatistics(connections_open=len(self._open), counts=dict(self.counts))

    async def deliver(self, prefix: str, message: InboundMessage) -> str:
        """Trio side of one message: its handler's reply (raising answers 451)."""
        return await self.handlers[prefix].deliver(message)

    async def started(self) -> None:
        self.edge: AsyncioEdge = current_edge()
        self.server = await self.edge.run(self._listen)
        self.bound = [s.getsockname()[:2] for s in self.server.sockets]
        log.info(
            "inbound SMTP listening on %s for %s (prefixes %s)",
            ", ".join(f"{h}:{p}" for h, p in self.bound),
            self.domain,
            ", ".join(sorted(self.handlers)),
        )
        # inbound_smtp: the counters, exported as mailactors_inbound_smtp_total{outcome}.
        self.ctx.report(lambda: {"listening": [f"{h}:{p}" for h, p in self.bound],
                                 "connections_open": len(self._open),
                                 "inbound_smtp": dict(self.counts)})  # fmt: skip

    async def _listen(self) -> asyncio.Server:
        loop = asyncio.get_running_loop()
        b = self.bounces
        handlers = _Handlers(self)

        def factory() -> SMTP:
            return _Session(
                self,
                handlers,
                data_size_limit=b.max_message_bytes,
                enable_SMTPUTF8=True,
                decode_data=False,
                hostname=self.domain,
                ident="mailactors feedback",
                timeout=b.idle_timeout_s,
                command_call_limit=b.max_commands,
                loop=loop,
            )

        return await loop.create_server(factory, host=b.host, port=b.port)

    async def stopping(self) -> None:
        server = self.server
        server.close()
        for transport in list(self._open):  # sessions in progress: their clients retry
            transport.close()
        with trio.move_on_after(5.0):
            await self.edge.run(server.wait_closed)


def inbound_smtp_server(
    config: Config,
    sink: FeedbackSink,
    handlers: Mapping[str, RecipientHandler] | None = None,
    name: str = "inbound-smtp",
) -> ChildSpec | None:
    """The inbound SMTP endpoint as a child of a service tree; None when ``[bounces]`` is off.

    ``sink`` applies what the ``bounces+`` address receives; ``handlers`` adds
    other local-part prefixes (e.g. ``{"unsubscribe": UnsubscribeHandler(...)}``).
    Run it where an asyncio edge is open (every service process has one).
    """
    b = config.bounces
    codec = verp_codec(b)
    if codec is None:
        return None
    bounce = BounceHandler(
        codec,
        sink,
        max_parts=b.max_parts,
        max_multiparts=b.max_multiparts,
        parse_timeout_s=b.parse_timeout_s,
    )
    extra = {prefix.lower(): h for prefix, h in (handlers or {}).items()}
    if codec.prefix in extra:
        raise ValueError(f"handlers: the prefix {codec.prefix!r} is the return path's own")
    registry: dict[str, RecipientHandler] = {codec.prefix: bounce, **extra}
    return ChildSpec(name, InboundSmtpServer, args=(b, registry), shutdown=10.0)

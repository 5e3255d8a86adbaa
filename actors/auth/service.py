"""The auth service: turns a request into a saved document and a send event.

Tree::

    auth/
      requests   validates, derives the eventId, saves through integration,
                 and only after the save succeeded publishes the EmailSendEvent
"""

from __future__ import annotations

import logging
import os
import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar, Protocol

import msgspec
import trio

from actors.auth import faults
from actors.domain.addressing import SenderPolicy, check_addressing, check_send_at
from actors.domain.edges import ApplyResult, Bus, SaveResult
from actors.domain.event_checks import CheckedEvents, check_idempotency_key
from actors.domain.schema import Attachment, EmailDocument, Status
from actors.domain.templates import TemplateRenderer
from actors.domain.validation import validate_request_rendered
from config import ApiConfig, LimitsConfig
from runtime import Actor, ChildSpec, Reply, SupervisorSpec

log = logging.getLogger("mailactors.auth")

# eventIds derived from idempotency keys live in their own UUID namespace, so a
# key always maps to the same eventId and never collides with a random one.
IDEMPOTENCY_NAMESPACE = uuid.UUID("6f1c8a8e-5b0e-4d5e-9a53-5a1d0c0ffee1")


class RequestEmail(msgspec.Struct, frozen=True, kw_only=True):
    recipient: str
    template: str
    variables: dict[str, Any] = {}
    category: str = "transactional"
    subject: str | None = None
    attachments: list[Attachment] = []
    idempotency_key: str | None = None
    # issue 17 (actors.domain.addressing checks them)
    from_address: str | None = None
    from_name: str | None = None
    reply_to: str | None = None
    cc: list[str] = []
    bcc: list[str] = []
    headers: dict[str, str] = {}
    tags: list[str] = []
    metadata: dict[str, str] = {}
    send_at: str | None = None  # RFC 3339 with an offset


class CancelEmail(msgspec.Struct, frozen=True):
    """Cancel a SCHEDULED email; answered with integration's ApplyResult."""

    event_id: str


class RequestAccepted(msgspec.Struct, frozen=True):
    event_id: str
    status: Status
    duplicate: bool  # the idempotency key was seen before; nothing new was sent


class IntegrationClient(Protocol):
    """How auth reaches integration: in process (embedded) or over gRPC."""

    async def save(self, document: EmailDocument) -> SaveResult: ...

    async def cancel(self, event_id: str) -> ApplyResult: ...


def event_id_for(idempotency_key: str | None) -> str:
    if idempotency_key:
        return str(uuid.uuid5(IDEMPOTENCY_NAMESPACE, idempotency_key))
    return str(uuid.UUID(bytes=_random_bytes.take(16), version=4))


class _RandomBytes:
    """``os.urandom``, read 4 KiB at a time: one system call per 256 eventIds instead of
    one each (a system call on the event loop's thread hands the GIL to the worker
    threads, and getting it back cost the embedded pipeline ~4% of its main thread)."""

    def __init__(self, chunk: int = 4096) -> None:
        self.chunk = chunk
        self.pool = b""
        self.at = 0

    def take(self, n: int) -> bytes:
        if self.at + n > len(self.pool):
            self.pool, self.at = os.urandom(self.chunk), 0
        self.at += n
        return self.pool[self.at - n : self.at]


_random_bytes = _RandomBytes()
# A forked child must not hand out its parent's bytes again (the same eventIds).
os.register_at_fork(after_in_child=lambda: setattr(_random_bytes, "pool", b""))


class RequestHandler(Actor[RequestEmail]):
    """Handles requests concurrently (up to ``concurrency`` at once).

    A bad request is answered with ``InvalidField`` naming the field; nothing
    is stored or sent for it. A repeated idempotency key is answered with the
    first eventId, and nothing is published again.
    """

    accepts: ClassVar[tuple[type, ...]] = (RequestEmail, CancelEmail)
    mailbox: ClassVar[int] = 1024

    def __init__(
        self,
        integration: IntegrationClient,
        bus: Bus,
        renderer: TemplateRenderer,
        limits: LimitsConfig,
        concurrency: int = 256,
        pending_repeat_s: float = 10.0,
        api: ApiConfig | None = None,
        senders: SenderPolicy | None = None,
        checked: CheckedEvents | None = None,
    ) -> None:
        self.checked = checked
        self.api = api or ApiConfig()
        self.senders = senders or SenderPolicy()
        self.integration = integration
        self.bus = bus
        self.renderer = renderer
        self.limits = limits
        self.concurrency = concurrency
        self.slots = trio.Semaphore(concurrency)
        self.pending_repeat_s = pending_repeat_s
        self.republished = 0
        self.accepted = 0
        self.duplicates = 0
        self.invalid = 0

    async def started(self) -> None:
        self.ctx.report(
            lambda: {
                "accepted": self.accepted,
                "duplicates": self.duplicates,
                "invalid": self.invalid,
                "republished": self.republished,
            }
        )

    async def stopping(self) -> None:
        # A graceful stop finishes the requests in hand: a document saved must have its send
        # event published, or it sits PENDING until the sweeper's pending_age_s. Acquiring
        # every slot means every handler is done.
        for _ in range(self.concurrency):
            await self.slots.acquire()

    async def receive(self, msg: RequestEmail | CancelEmail) -> None:
        reply = self.ctx.reply_later()
        if isinstance(msg, CancelEmail):
            self.ctx.start_soon(self._cancel, msg.event_id, reply)
            return
        await self.slots.acquire()  # a full house is backpressure on the mailbox
        self.ctx.start_soon(self._handle, msg, reply)

    async def _handle(self, req: RequestEmail, reply: Reply) -> None:
        try:
            reply.set(await self.handle(req))
        except Exception as exc:
            reply.fail(exc)
        finally:
            self.slots.release()

    async def _cancel(self, event_id: str, reply: Reply) -> None:
        try:
            reply.set(await self.integration.cancel(event_id))
        except Exception as exc:
            reply.fail(exc)

    async def handle(self, req: RequestEmail) -> RequestAccepted:
        try:
            recipient, rendered = validate_request_rendered(
                req.recipient,
                req.template,
                req.variables,
                req.category,
                req.subject,
                req.attachments,
                self.limits,
                self.renderer,
                req,  # its headers, cc and bcc count toward the size limit
            )
        except ValueError:
            self.invalid += 1
            raise
        try:  # not blank, at most 256 characters, no control characters
            check_idempotency_key(req.idempotency_key)
            extra = check_addressing(req, policy=self.senders, recipient=recipient)
            send_at = check_send_at(req.send_at, self.api.schedule_horizon_s)
        except ValueError:
            self.invalid += 1
            raise
        document = EmailDocument(
            event_id=event_id_for(req.idempotency_key),
            recipient=recipient,
            template=req.template,
            variables=dict(req.variables),
            category=req.category,
            subject=req.subject,
            attachments=list(req.attachments),
            idempotency_key=req.idempotency_key,
            from_address=extra.from_address,
            from_name=extra.from_name,
            reply_to=extra.reply_to,
            cc=extra.cc,
            bcc=extra.bcc,
            headers=extra.headers,
            tags=extra.tags,
            metadata=extra.metadata,
            send_at=send_at,
            status=Status.SCHEDULED if send_at is not None else Status.PENDING,
        )
        result = await self.integration.save(document)
        if not result.created:
            self.duplicates += 1
            stored = result.document
            ids = {"event_id": stored.event_id}
            age = (datetime.now(UTC) - stored.created_at).total_seconds()
            if stored.status is Status.PENDING and age >= self.pending_repeat_s:
                # Saved, but its send event may never have gone out (a stop or a crash between
                # save and publish): publish it again. The email server's claims make a copy
                # of an email that is on its way harmless.
                await self.bus.publish_send(stored.to_send_event())
                self.republished += 1
                log.info(
                    "repeat request for an email still PENDING after %.0fs: published again",
                    age,
                    extra=ids,
                )
            else:
                log.debug("repeat request, nothing sent", extra=ids)  # counted: duplicates
            return RequestAccepted(stored.event_id, stored.status, True)
        if send_at is not None:  # integration's due-scanner publishes it when due
            self.accepted += 1
            log.debug("scheduled", extra={"event_id": document.event_id})
            return RequestAccepted(document.event_id, Status.SCHEDULED, False)
        # Saved: only now may the email be sent. A crash right here leaves it
        # PENDING; the outbox sweeper republishes it.
        faults.after_save()  # the soak test's injected crash, here exactly; inert otherwise
        event = document.to_send_event()
        if self.checked is not None:  # the email server of this process takes the render
            self.checked.remember(event, rendered)
        await self.bus.publish_send(event)
        self.accepted += 1
        log.info(
            "accepted: template %s, category %s",
            document.template,
            document.category,
            extra={"event_id": document.event_id},
        )
        return RequestAccepted(document.event_id, Status.PENDING, False)


def auth_tree(
    integration: IntegrationClient,
    bus: Bus,
    renderer: TemplateRenderer,
    limits: LimitsConfig,
    *,
    name: str = "auth",
    pending_repeat_s: float = 10.0,
    api: ApiConfig | None = None,
    provider_sender: str = "mailactors@localhost",
    checked: CheckedEvents | None = None,
) -> SupervisorSpec:
    api = api or ApiConfig()
    # Built (and its entries checked) once, here: a bad [api] entry stops start-up.
    senders = SenderPolicy.build(provider_sender, api.senders, api.default_senders)
    return SupervisorSpec(
        name,
        [
            ChildSpec(
                "requests",
                RequestHandler,
                args=(integration, bus, renderer, limits),
                kwargs={
                    "pending_repeat_s": pending_repeat_s,
                    "api": api,
                    "senders": senders,
                    "checked": checked,
                },
                shutdown=15.0,
            )
        ],
        intensity=5,
        period=10.0,
    )

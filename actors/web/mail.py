"""One stored email seen again: rendered as it was sent, its MIME source, and a resend.

The message is rebuilt from the stored document and its template with the email server's
own steps (``TemplateRenderer.render``, ``build_message``, ``render_bytes``), so what is
shown is what was handed to the provider, apart from the Date header (the sending time
when known) and a template edited since.

A resend goes in at the front door, as a new request through auth (validation, a new
eventId, save, publish): in process where auth runs here (embedded), over the gRPC API
where it does not (distributed: the integration process serving the page has no auth).
Its idempotency key, ``resend:<old eventId>:<nonce of the form>``, links the new email to
the old one and makes a double-submitted form one resend, not two.
"""

from __future__ import annotations

import secrets
from typing import Any

from actors.auth.service import RequestEmail
from actors.domain.edges import OutgoingEmail
from actors.domain.mime import build_message, message_id_for, render_bytes
from actors.domain.schema import EmailDocument
from actors.domain.templates import RenderedEmail, TemplateRenderer
from config import Config
from runtime import ActorNotFound, ActorRef

__all__ = ["RESEND_PREFIX", "mime_source", "new_nonce", "render", "resend", "resent_from"]

RESEND_PREFIX = "resend:"


def render(renderer: TemplateRenderer, doc: EmailDocument) -> RenderedEmail:
    return renderer.render(doc.template, doc.variables, doc.subject)


def mime_source(config: Config, renderer: TemplateRenderer, doc: EmailDocument) -> bytes:
    """The message as the email server builds it (raises what rendering raises)."""
    rendered = render(renderer, doc)
    p = config.provider
    domain = p.message_id_domain or p.sender.rpartition("@")[2] or "localhost"
    email = OutgoingEmail(
        event_id=doc.event_id,
        sender=p.sender,
        recipient=doc.recipient,
        subject=rendered.subject,
        text=rendered.text,
        html=rendered.html,
        message_id=message_id_for(doc.event_id, domain),
        attachments=[(a.filename, a.content_type, a.content) for a in doc.attachments],
    )
    return render_bytes(build_message(email, date=doc.sent_at or doc.created_at))


def new_nonce() -> str:
    return secrets.token_urlsafe(12)


def resent_from(doc: EmailDocument) -> str | None:
    """The eventId this email is a resend of, if it is one."""
    key = doc.idempotency_key or ""
    if not key.startswith(RESEND_PREFIX):
        return None
    old, _, _ = key[len(RESEND_PREFIX) :].partition(":")
    return old or None


def resend_request(doc: EmailDocument, nonce: str) -> RequestEmail:
    return RequestEmail(
        recipient=doc.recipient,
        template=doc.template,
        variables=doc.variables,
        category=doc.category,
        subject=doc.subject,
        attachments=doc.attachments,
        idempotency_key=f"{RESEND_PREFIX}{doc.event_id}:{nonce}",
    )


async def resend(
    config: Config, lookup: Any, doc: EmailDocument, nonce: str, timeout: float = 30.0
) -> str:
    """A new email with *doc*'s content; returns its eventId. ``lookup``: path -> ActorRef."""
    req = resend_request(doc, nonce)
    try:
        requests: ActorRef[Any] = lookup("auth/requests")
    except ActorNotFound:
        return await _resend_over_grpc(config, req)
    accepted = await requests.ask(req, timeout=timeout)
    return str(accepted.event_id)


async def _resend_over_grpc(config: Config, req: RequestEmail) -> str:
    from grpclib.client import Channel

    from actors.grpc.convert import attachment_to_proto, variables_to_struct
    from actors.grpc.security import bearer_metadata, client_ssl_context
    from protos import email_grpc, email_pb2
    from runtime import current_edge

    g = config.grpc
    message = email_pb2.RequestEmailRequest(
        recipient=req.recipient,
        template=req.template,
        variables=variables_to_struct(req.variables),
        category=req.category,
        attachments=[attachment_to_proto(a) for a in req.attachments],
        idempotency_key=req.idempotency_key,
    )
    if req.subject is not None:
        message.subject = req.subject

    async def call() -> str:
        channel = Channel(g.host, g.auth_port, ssl=client_ssl_context(g))
        try:
            stub = email_grpc.AuthServiceStub(channel)
            reply = await stub.RequestEmail(
                message, metadata=bearer_metadata(g.token()), timeout=g.deadline_s
            )
            return str(reply.event_id)
        finally:
            channel.close()

    return str(await current_edge().run(call))

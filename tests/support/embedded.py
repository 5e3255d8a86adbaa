"""A running embedded system for tests: config, requests, what it stored and sent."""

from __future__ import annotations

import mailbox
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

from actors.auth.service import RequestEmail
from actors.domain.edges import SearchQuery
from actors.domain.schema import EmailDocument
from actors.grpc.convert import document_to_proto, variables_to_struct
from actors.profiles.embedded import Embedded, open_embedded
from config import load_config
from protos import email_pb2
from tests.support.security import TEMPLATE_VARIABLES, fresh_id, make_certs
from tests.support.smtp_servers import FaultServer


class FlakyServer(FaultServer):
    """Fails the first ``fail_times`` messages after DATA with ``reply``, then accepts."""

    def __init__(self, fail_times: int, reply: str) -> None:
        super().__init__()
        self.remaining = fail_times
        self.reply = reply

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.remaining > 0:
            self.remaining -= 1
            return self.reply
        return await super().handle_DATA(server, session, envelope)


def embedded_config(tmp_path: Path, **sections: dict[str, Any]) -> Any:
    overrides: dict[str, Any] = {
        "store": {"sqlite_path": str(tmp_path / "emails.sqlite3"), "batch_ms": 2.0},
        "provider": {
            "maildir_path": str(tmp_path / "maildir"),
            "sender": "noreply@mailactors.test",
        },
        "grpc": {"auth_port": 0},
        "http": {"port": 0},  # on in the embedded profile; any free port, as gRPC's
        "email_server": {"idempotency_path": str(tmp_path / "sent.sqlite3")},
        "retry": {"base_delay_s": 0.01, "max_delay_s": 0.05, "max_attempts": 3},
    }
    for name, values in sections.items():
        overrides.setdefault(name, {}).update(values)
    return load_config("embedded", env={}, overrides=overrides)


@asynccontextmanager
async def running(config: Any, grpc: bool = False) -> AsyncIterator[Embedded]:
    async with open_embedded(config, grpc=grpc, shutdown=10.0) as embedded:
        yield embedded


async def grpc_request_email(app: Embedded, request: Any) -> Any:
    """``AuthService.RequestEmail`` through the gRPC API of ``app`` (started with grpc=True),
    with grpclib over loopback; a refusal raises ``grpclib.GRPCError``."""
    from grpclib.client import Channel

    from protos import email_grpc

    listening = app.system.snapshot().by_path()["api"].extra["listening"][0]
    port = int(listening.rsplit(":", 1)[1])

    async def call() -> Any:
        channel = Channel("127.0.0.1", port)
        try:
            return await email_grpc.AuthServiceStub(channel).RequestEmail(request, timeout=10)
        finally:
            channel.close()

    return await app.edge.run(call)


def request(template: str = "verification", to: str = "ada@example.com", **kw: Any) -> RequestEmail:
    variables = kw.pop(
        "variables", {"name": "Ada", "code": "493817", "expires_minutes": 10}
    )
    return RequestEmail(recipient=to, template=template, variables=variables, **kw)


def maildir_messages(path: Path) -> list[Any]:
    box = mailbox.Maildir(path, create=False)
    return [message_from_bytes(bytes(m), policy=policy.default) for m in box]


TOKEN = "tok-7f3a9c1e5b2d4f60a8e1c3b5d7f9a1c3"


def secured_config(tmp_path: Path, *, tls: bool = False, **sections: dict[str, Any]) -> Any:
    """The embedded profile with a token file, and TLS if asked; gRPC on a free port."""
    token_file = tmp_path / "grpc-token"
    token_file.write_text(TOKEN + "\n")
    grpc: dict[str, Any] = {"auth_port": 0, "token_file": str(token_file)}
    if tls:
        certs = make_certs(tmp_path / "certs")
        grpc.update(
            tls_cert_file=str(certs.cert), tls_key_file=str(certs.key), tls_ca_file=str(certs.ca)
        )
    sections.setdefault("grpc", {}).update(grpc)
    return embedded_config(tmp_path, **sections)


async def stored(app: Any) -> int:
    return int((await app.store.search(SearchQuery(page_size=1))).total)


def grpc_request(**fields: Any) -> Any:
    variables = fields.pop("variables", TEMPLATE_VARIABLES["verification"])
    req = email_pb2.RequestEmailRequest(
        recipient=fields.pop("recipient", "ada@example.com"),
        template=fields.pop("template", "verification"),
        variables=variables_to_struct(variables),
        attachments=[
            email_pb2.Attachment(filename=f, content_type=c, content=b)
            for f, c, b in fields.pop("attachments", [])
        ],
    )
    for name, value in fields.items():
        setattr(req, name, value)
    return req


def save_request(**fields: Any) -> Any:
    doc = EmailDocument(
        event_id=fields.pop("event_id", fresh_id()),
        recipient=fields.pop("recipient", "ada@example.com"),
        template=fields.pop("template", "welcome"),
        variables=fields.pop("variables", dict(TEMPLATE_VARIABLES["welcome"])),
        **fields,
    )
    return email_pb2.SaveEmailRequest(document=document_to_proto(doc))

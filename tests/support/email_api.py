"""An embedded system with SMTP to a capturing aiosmtpd and the issue 17 API settings."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta, timezone
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from actors.profiles.embedded import Embedded, open_embedded
from actors.testing.fakesmtp import CapturingServer, ReceivedMessage
from tests.support.embedded import embedded_config, grpc_request
from tests.support.security import GrpcClient, grpc_port

__all__ = ["Api", "api_request", "header_block", "open_api", "parsed", "rfc3339_in"]

SENDERS = ["example.com", "alerts@example.org"]
DEFAULT_SENDERS = {"billing": "Billing Team <billing@example.net>"}


def api_request(**fields: Any) -> Any:
    """A RequestEmailRequest (verification template) with any fields, lists and maps too."""
    plain = {k: v for k, v in fields.items() if not isinstance(v, list | dict)}
    req = grpc_request(**plain)
    for name, value in fields.items():
        if isinstance(value, list):
            getattr(req, name).extend(value)
        elif isinstance(value, dict):
            getattr(req, name).update(value)
    return req


class Api:
    """The running system, its capturing SMTP server and a grpclib client to it."""

    def __init__(self, app: Embedded, smtp: CapturingServer, client: GrpcClient) -> None:
        self.app = app
        self.smtp = smtp
        self.client = client
        self.port = grpc_port(app)

    async def call(self, method: str, request: Any, **kw: Any) -> Any:
        return await self.client.call(method, request, **kw)

    async def request(self, **fields: Any) -> Any:
        return await self.call("RequestEmail", api_request(**fields))

    def delivered(self, event_id: str) -> list[ReceivedMessage]:
        return [m for m in self.smtp.messages() if m.event_id == event_id]


@asynccontextmanager
async def open_api(tmp_path: Path, **sections: dict[str, Any]) -> AsyncIterator[Api]:
    api = {"senders": SENDERS, "default_senders": DEFAULT_SENDERS}
    api.update(sections.pop("api", {}))
    async with CapturingServer() as smtp:
        config = embedded_config(
            tmp_path,
            provider={"kind": "smtp", "smtp": {"host": "127.0.0.1", "port": smtp.port}},
            api=api,
            **sections,
        )
        async with open_embedded(config, grpc=True, shutdown=10.0) as app:
            async with GrpcClient(app, grpc_port(app)) as client:
                yield Api(app, smtp, client)


def parsed(message: ReceivedMessage) -> EmailMessage:
    result: EmailMessage = message_from_bytes(message.data, policy=policy.default)  # type: ignore[assignment]
    return result


def header_block(message: ReceivedMessage) -> bytes:
    """The raw header lines of a delivered message (up to the first blank line)."""
    return message.data.split(b"\r\n\r\n", 1)[0]


def rfc3339_in(seconds: float) -> tuple[str, datetime]:
    """send_at ``seconds`` from now as RFC 3339 with a +01:00 offset, and as UTC."""
    when = datetime.now(UTC) + timedelta(seconds=seconds)
    text = when.astimezone(timezone(timedelta(hours=1))).isoformat()
    return text, when

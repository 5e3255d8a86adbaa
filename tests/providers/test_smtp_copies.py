"""SMTP with cc and bcc (issue 17), against aiosmtpd: every address gets a RCPT TO; a refused
copy does not fail the email (the reply names it), a refused recipient does."""

from __future__ import annotations

import pytest

from actors.domain.edges import Failure, OutgoingEmail
from actors.providers.smtp import SmtpProvider
from runtime import AsyncioEdge
from tests.support.smtp_servers import FaultServer

pytestmark = pytest.mark.trio


def email(recipient: str = "ana@example.org") -> OutgoingEmail:
    return OutgoingEmail(
        event_id="ev-1", sender="News <news@example.com>", recipient=recipient, subject="Hi",
        text="Hello\n", message_id="<ev-1@example.com>", cc=["carol@example.org"],
        bcc=["bob@example.net", "gone@example.net"],
    )


async def test_copies_get_their_rcpt_and_a_refused_copy_is_named(edge: AsyncioEdge) -> None:
    refuse = {"gone@example.net": "550 5.1.1 No such user"}
    async with FaultServer(rcpt_replies=refuse) as server:
        provider = SmtpProvider(server.host, server.port, timeout=5.0)
        await provider.open()
        try:
            result = await provider.send(email())
            refused = await provider.send(email("gone@example.net"))
        finally:
            await provider.close()
    assert result.ok and result.reply is not None
    assert result.reply.endswith("; copies refused: gone@example.net (550)")
    [received] = server.messages()
    assert received.rcpt_tos == ["ana@example.org", "carol@example.org", "bob@example.net"]
    assert b"bob@example.net" not in received.data
    assert not refused.ok and refused.stage == "RCPT" and refused.failure is Failure.PERMANENT

"""Internationalised addresses to an SMTP server without SMTPUTF8 (aiosmtpd with it off): a
domain goes as its IDNA A-labels in the envelope and the headers alike; a non-ASCII local part
has no ASCII form, so the send fails permanently, naming the address, and nothing is sent."""

from __future__ import annotations

import email
import email.policy

import pytest

from actors.domain.edges import Failure, OutgoingEmail, SendResult
from actors.providers.smtp import SmtpProvider
from runtime import AsyncioEdge
from tests.support.smtp_servers import CapturingServer

pytestmark = pytest.mark.trio

A_LABEL = "xn--bcher-kva.example"  # bücher.example


def idn_email(recipient: str = "user@bücher.example") -> OutgoingEmail:
    return OutgoingEmail(
        event_id="ev-1", sender="Bücher Shop <shop@bücher.example>", recipient=recipient,
        subject="Hi", text="Hello\n", message_id="<ev-1@example.com>",
        cc=["carol@bücher.example"], bcc=["bob@example.net"], reply_to="help@bücher.example",
    )  # fmt: skip


async def send(server: CapturingServer, message: OutgoingEmail) -> SendResult:
    provider = SmtpProvider(server.host, server.port, timeout=5.0)
    await provider.open()
    try:
        return await provider.send(message)
    finally:
        await provider.close()


async def test_an_idn_domain_goes_as_a_labels_without_smtputf8(edge: AsyncioEdge) -> None:
    async with CapturingServer(enable_SMTPUTF8=False) as server:
        result = await send(server, idn_email())
        [received] = server.messages()
    assert result.ok, result
    assert "SMTPUTF8" not in received.mail_options
    assert received.mail_from == f"shop@{A_LABEL}"
    assert received.rcpt_tos == [f"user@{A_LABEL}", f"carol@{A_LABEL}", "bob@example.net"]
    assert received.data.isascii()
    msg = email.message_from_bytes(received.data, policy=email.policy.default)
    assert msg["To"] == f"user@{A_LABEL}"
    assert msg["Cc"] == f"carol@{A_LABEL}"
    assert msg["Reply-To"] == f"help@{A_LABEL}"
    assert msg["From"].addresses[0].display_name == "Bücher Shop"  # the name: encoded words
    assert msg["From"].addresses[0].addr_spec == f"shop@{A_LABEL}"
    assert "Bcc" not in msg


async def test_with_smtputf8_the_address_stays_as_written(edge: AsyncioEdge) -> None:
    async with CapturingServer(enable_SMTPUTF8=True) as server:
        result = await send(server, idn_email())
        [received] = server.messages()
    assert result.ok, result
    assert "SMTPUTF8" in received.mail_options
    assert received.rcpt_tos[0] == "user@bücher.example"


async def test_a_non_ascii_local_part_without_smtputf8_fails_permanently(
    edge: AsyncioEdge,
) -> None:
    async with CapturingServer(enable_SMTPUTF8=False) as server:
        result = await send(server, idn_email("jöe@bücher.example"))
        assert server.messages() == []
    assert not result.ok and result.failure is Failure.PERMANENT
    reply = result.reply or ""
    assert "SMTPUTF8" in reply and "'jöe@bücher.example'" in reply and "To:" in reply, reply

"""Internationalised addresses through SES (moto's SES v2 server): SES takes no SMTPUTF8, so
an IDN domain goes as its IDNA A-labels in the envelope (Destination, FromEmailAddress) and
the raw message's headers alike; a non-ASCII local part has no ASCII form, so the send fails
permanently, naming the address, and SES is not asked."""

from __future__ import annotations

import email
import email.policy

import msgspec
import pytest

from actors.domain.edges import Failure, OutgoingEmail, SendResult
from actors.providers.ses import SesProvider
from runtime import AsyncioEdge
from tests.support.ses_servers import MotoSes

pytestmark = pytest.mark.trio

REGION = "eu-west-1"
A_LABEL = "xn--bcher-kva.example"  # bücher.example


def idn_email(recipient: str = "user@bücher.example") -> OutgoingEmail:
    return OutgoingEmail(
        event_id="ev-idn", sender="Bücher Shop <shop@bücher.example>", recipient=recipient,
        subject="Hi", text="Hello\n", message_id="<ev-idn@example.com>",
        cc=["carol@bücher.example"], bcc=["bob@example.net"], reply_to="help@bücher.example",
    )  # fmt: skip


async def send(moto_ses: MotoSes, message: OutgoingEmail) -> SendResult:
    moto_ses.verify(f"shop@{A_LABEL}", REGION)  # the identity as SES knows it: ASCII
    provider = SesProvider(REGION, endpoint_url=moto_ses.url)
    await provider.open()
    try:
        return await provider.send(message)
    finally:
        await provider.close()


async def test_an_idn_domain_goes_as_a_labels_in_envelope_and_headers(
    moto_ses: MotoSes, edge: AsyncioEdge
) -> None:
    result = await send(moto_ses, idn_email())
    assert result.ok, result
    [sent] = moto_ses.sent(REGION)
    assert sent.source == f"shop@{A_LABEL}"
    # moto adds the raw message's To and Cc to the Destination it was given: as a set.
    assert set(sent.destinations) == {f"user@{A_LABEL}", f"carol@{A_LABEL}", "bob@example.net"}
    assert sent.data.isascii()
    msg = email.message_from_bytes(sent.data, policy=email.policy.default)
    assert msg["To"] == f"user@{A_LABEL}"
    assert msg["Cc"] == f"carol@{A_LABEL}"
    assert msg["Reply-To"] == f"help@{A_LABEL}"
    assert msg["From"].addresses[0].display_name == "Bücher Shop"  # the name: encoded words
    assert msg["From"].addresses[0].addr_spec == f"shop@{A_LABEL}"
    assert "Bcc" not in msg


@pytest.mark.parametrize(
    ("changes", "header", "address"),
    [
        ({"recipient": "jöe@bücher.example"}, "To", "jöe@bücher.example"),
        ({"cc": ["zoë@example.org"]}, "Cc", "zoë@example.org"),
        ({"bcc": ["zoë@example.org"]}, "Bcc", "zoë@example.org"),
    ],
)
async def test_a_non_ascii_local_part_fails_permanently_naming_the_address(
    moto_ses: MotoSes, edge: AsyncioEdge, changes: dict[str, object], header: str, address: str
) -> None:
    result = await send(moto_ses, msgspec.structs.replace(idn_email(), **changes))
    assert not result.ok and result.failure is Failure.PERMANENT, result
    reply = result.reply or ""
    assert "SMTPUTF8" in reply and f"{header}: '{address}'" in reply, reply
    assert moto_ses.sent(REGION) == []  # SES was not asked

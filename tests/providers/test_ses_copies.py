"""SES with cc and bcc (issue 17), against moto's SES v2 server: every recipient is a
destination, the bcc one only in the envelope, never in the raw message's headers."""

from __future__ import annotations

import email
import email.policy

import pytest

from actors.domain.edges import OutgoingEmail
from actors.providers.ses import SesProvider
from runtime import AsyncioEdge
from tests.support.ses_servers import MotoSes

pytestmark = pytest.mark.trio

REGION = "eu-west-1"
SENDER = "noreply@mailactors.test"


async def test_cc_and_bcc_are_destinations_and_bcc_is_no_header(
    moto_ses: MotoSes, edge: AsyncioEdge
) -> None:
    moto_ses.verify(SENDER, REGION)
    provider = SesProvider(REGION, endpoint_url=moto_ses.url)
    await provider.open()
    try:
        result = await provider.send(
            OutgoingEmail(
                event_id="ev-cc", sender=f"News <{SENDER}>", recipient="ana@example.org",
                subject="Hi", text="Hello\n", message_id="<ev-cc@mailactors.test>",
                cc=["carol@example.org"], bcc=["bob@example.net"], reply_to="help@example.org",
                headers={"X-Campaign": "dec"},
            )
        )
    finally:
        await provider.close()
    assert result.ok, result
    [sent] = moto_ses.sent(REGION)
    assert set(sent.destinations) >= {"ana@example.org", "carol@example.org", "bob@example.net"}
    assert b"bob@example.net" not in sent.data
    msg = email.message_from_bytes(sent.data, policy=email.policy.default)
    assert msg["Bcc"] is None and str(msg["Cc"]) == "carol@example.org"
    assert str(msg["Reply-To"]) == "help@example.org" and msg["X-Campaign"] == "dec"

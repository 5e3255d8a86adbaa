"""Within one RequestEmails call, of requests sharing an idempotency key the first one wins:
it is stored and sent, the later ones answer duplicate with its eventId (as across calls)."""

from __future__ import annotations

from pathlib import Path

import trio

from protos import email_pb2
from tests.support.email_api import api_request, open_api


async def test_the_first_of_a_repeated_key_in_a_batch_is_the_one_kept(tmp_path: Path) -> None:
    async with open_api(tmp_path) as api:
        for round_ in range(3):  # asked at once, the order they reach the store varies
            key = f"repeat-{round_}"
            requests = [
                api_request(recipient=f"first{round_}@example.com", idempotency_key=key),
                api_request(recipient=f"other{round_}@example.com"),
                api_request(recipient=f"second{round_}@example.com", idempotency_key=key),
                api_request(recipient=f"third{round_}@example.com", idempotency_key=key),
            ]
            reply = await api.call(
                "RequestEmails", email_pb2.RequestEmailsRequest(requests=requests)
            )
            first, other, second, third = reply.results
            assert not first.error and not first.duplicate, first
            assert (second.event_id, second.duplicate) == (first.event_id, True)
            assert (third.event_id, third.duplicate) == (first.event_id, True)
            assert not other.duplicate and other.event_id != first.event_id
            with trio.fail_after(30):
                doc = await api.app.wait_terminal(first.event_id)
            assert doc.recipient == f"first{round_}@example.com"
            delivered = api.delivered(first.event_id)
            assert [m.rcpt_tos for m in delivered] == [[f"first{round_}@example.com"]]

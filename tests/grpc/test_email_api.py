"""Issue 17 through the real gRPC API of a running embedded system, delivered by SMTP to aiosmtpd:
addressing (From, Reply-To, cc, bcc), custom headers, tags and metadata, batches, scheduled
sends and cancelling. Each delivered message is checked as bytes and through ``email``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
import trio
from grpclib import GRPCError
from grpclib import Status as GrpcStatus

from actors.domain.schema import Status
from protos import email_pb2
from tests.support.email_api import api_request, header_block, open_api, parsed, rfc3339_in
from tests.support.grpcio import GrpcioClient

pytestmark = pytest.mark.trio


async def test_addressing_headers_and_tags_arrive_as_asked_and_bcc_stays_out_of_the_headers(
    tmp_path: Path,
) -> None:
    async with open_api(tmp_path) as api:
        reply = await api.request(
            recipient="ada@example.com",
            from_address="news@Example.COM",
            from_name="Ëxample News, Dept.",
            reply_to="help@example.com",
            cc=["carol@example.org", "ADA@example.com"],  # the recipient again: dropped
            bcc=["bob@example.net"],
            headers={
                "X-Campaign": "december",
                "List-Id": "News <news.example.com>",
                "In-Reply-To": "<thread-1@example.com>",
            },
            tags=["receipt", "december"],
            metadata={"order": "42", "customer": "c-7"},
        )
        assert reply.status == email_pb2.PENDING
        doc = await api.app.wait_terminal(reply.event_id)
        (message,) = api.delivered(reply.event_id)

        # The envelope: every recipient, bcc included; MAIL FROM is the chosen sender.
        assert message.mail_from == "news@example.com"
        everyone = ["ada@example.com", "bob@example.net", "carol@example.org"]
        assert sorted(message.rcpt_tos) == everyone
        # The bytes: no Bcc header, and the bcc address nowhere in the message.
        head = header_block(message)
        assert b"\r\nBcc:" not in head and not head.startswith(b"Bcc:")
        assert b"bob@example.net" not in message.data
        # Through Python's email parser.
        msg = parsed(message)
        assert msg["Bcc"] is None
        assert msg["From"].addresses[0].display_name == "Ëxample News, Dept."
        assert msg["From"].addresses[0].addr_spec == "news@example.com"
        assert str(msg["To"]) == "ada@example.com"
        assert [a.addr_spec for a in msg["Cc"].addresses] == ["carol@example.org"]
        assert str(msg["Reply-To"]) == "help@example.com"
        assert msg["X-Campaign"] == "december"
        assert msg["List-Id"] == "News <news.example.com>"
        assert msg["In-Reply-To"] == "<thread-1@example.com>"

        # Stored with the document, and found by search on tags and metadata.
        assert doc.status is Status.SENT
        assert doc.tags == ["receipt", "december"] and doc.metadata["order"] == "42"
        assert doc.bcc == ["bob@example.net"] and doc.cc == ["carol@example.org"]
        other = await api.request(recipient="zed@example.com", tags=["receipt"])
        await api.app.wait_terminal(other.event_id)

        async def found(**filters: object) -> list[str]:
            page = await api.call("SearchEmails", email_pb2.SearchEmailsRequest(**filters))
            return sorted(d.event_id for d in page.documents)

        assert await found(tags=["receipt"]) == sorted([reply.event_id, other.event_id])
        assert await found(tags=["receipt", "december"]) == [reply.event_id]
        assert await found(metadata={"order": "42"}) == [reply.event_id]
        assert await found(tags=["receipt"], metadata={"order": "43"}) == []
        got = await api.call("GetEmail", email_pb2.GetEmailRequest(event_id=reply.event_id))
        assert list(got.document.tags) == ["receipt", "december"]
        assert dict(got.document.metadata) == {"order": "42", "customer": "c-7"}
        assert got.document.from_name == "Ëxample News, Dept."


async def test_a_category_default_sender_is_used_and_the_provider_sender_otherwise(
    tmp_path: Path,
) -> None:
    async with open_api(tmp_path) as api:
        billing = await api.request(category="billing")
        plain = await api.request()
        await api.app.wait_terminal(billing.event_id)
        await api.app.wait_terminal(plain.event_id)
        (b,) = api.delivered(billing.event_id)
        (p,) = api.delivered(plain.event_id)
    assert str(parsed(b)["From"]) == "Billing Team <billing@example.net>"
    assert b.mail_from == "billing@example.net"
    assert str(parsed(p)["From"]) == "noreply@mailactors.test"


HOSTILE = [
    ({"headers": {"Bcc": "victim@example.com"}}, "headers['Bcc']"),
    ({"headers": {"From": "ceo@example.com"}}, "headers['From']"),
    ({"headers": {"X-Mailactors-Event-Id": "x"}}, "headers['X-Mailactors-Event-Id']"),
    ({"headers": {"List-Unsubscribe": "<https://evil>"}}, "headers['List-Unsubscribe']"),
    ({"headers": {"X-Note": "hi\r\nBcc: victim@example.com"}}, "headers['X-Note']"),
    ({"headers": {"X-Note": "hi\nX-Injected: 1"}}, "headers['X-Note']"),
    ({"headers": {"X-Bad Name": "v"}}, "headers['X-Bad Name']"),
    ({"from_address": "ceo@evil.example"}, "from_address"),
    ({"from_address": "alerts@example.org", "from_name": "A\r\nBcc: v@x.com"}, "from_name"),
    ({"reply_to": "ada@example.com\r\nBcc: evil@example.com"}, "reply_to"),
    ({"cc": ["ok@example.com", "not-an-address"]}, "cc[1]"),
    ({"bcc": ["victim@example.com\r\nX-Injected: 1"]}, "bcc[0]"),
    ({"tags": ["fine", "not fine"]}, "tags[1]"),
    ({"metadata": {"a.b": "v"}}, "metadata"),
    ({"metadata": {"k": "v\r\nX: 1"}}, "metadata['k']"),
    ({"send_at": "2026-12-01 18:00:00"}, "send_at"),
    ({"send_at": "2999-01-01T00:00:00Z"}, "send_at"),
]


async def test_hostile_headers_and_addresses_are_refused_naming_the_field(tmp_path: Path) -> None:
    async with open_api(tmp_path) as api:
        for fields, name in HOSTILE:
            with pytest.raises(GRPCError) as info:
                await api.request(**fields)
            assert info.value.status is GrpcStatus.INVALID_ARGUMENT, fields
            assert info.value.message is not None
            assert info.value.message.startswith(f"{name}: "), (fields, info.value.message)
        page = await api.call("SearchEmails", email_pb2.SearchEmailsRequest())
    assert page.total == 0  # nothing stored for any of them
    assert api.smtp.messages() == []


async def test_a_batch_of_1000_with_10_bad_sends_990_and_names_the_10(tmp_path: Path) -> None:
    bad_at = {7: "recipient", 99: "cc[0]", 150: "headers['Bcc']", 222: "tags[0]",
              301: "from_address", 444: "variables", 555: "template", 666: "send_at",
              777: "headers['X-A']", 999: "metadata['k']"}
    requests = []
    for i in range(1000):
        req = api_request(recipient=f"user{i}@example.com", tags=["batch"], metadata={"n": str(i)})
        requests.append(req)
    requests[7].recipient = "user7@@example.com"
    requests[99].cc.append("nope")
    requests[150].headers["Bcc"] = "victim@example.com"
    requests[222].tags[0] = "bad tag"
    requests[301].from_address = "ceo@evil.example"
    requests[444].variables.Clear()
    requests[555].template = "no-such-template"
    requests[666].send_at = "tomorrow"
    requests[777].headers["X-A"] = "a\r\nB: c"
    requests[999].metadata["k"] = "x\ny"
    async with open_api(tmp_path) as api:
        google = GrpcioClient(api.port)  # Google's client, not the project's own
        try:
            reply = await google.call(
                "RequestEmails", email_pb2.RequestEmailsRequest(requests=requests), timeout=120
            )
        finally:
            google.close()
        assert isinstance(reply, email_pb2.RequestEmailsResponse), reply
        assert len(reply.results) == 1000
        errors = {i: r.error for i, r in enumerate(reply.results) if r.error}
        assert sorted(errors) == sorted(bad_at)
        for i, field in bad_at.items():
            assert errors[i].startswith(f"requests[{i}].{field}: "), errors[i]
        accepted = [r.event_id for r in reply.results if not r.error]
        assert len(set(accepted)) == 990
        with trio.fail_after(120):
            await api.app.api.watch.wait_count(990)
        delivered = {m.event_id for m in api.smtp.messages()}
        assert delivered == set(accepted)
        page = await api.call(
            "SearchEmails", email_pb2.SearchEmailsRequest(tags=["batch"], page_size=1)
        )
        assert page.total == 990


async def test_a_batch_over_the_limit_is_refused_whole(tmp_path: Path) -> None:
    async with open_api(tmp_path, api={"max_batch": 5}) as api:
        with pytest.raises(GRPCError) as info:
            await api.call(
                "RequestEmails",
                email_pb2.RequestEmailsRequest(requests=[api_request() for _ in range(6)]),
            )
    assert info.value.status is GrpcStatus.INVALID_ARGUMENT
    assert info.value.message == "requests: 6 requests, more than the limit of 5 (api.max_batch)"


async def test_a_scheduled_email_is_not_sent_before_its_time_and_is_sent_after(
    tmp_path: Path,
) -> None:
    async with open_api(tmp_path) as api:
        send_at, due = rfc3339_in(3.0)
        reply = await api.request(send_at=send_at, tags=["later"])
        assert reply.status == email_pb2.SCHEDULED
        got = await api.call("GetEmail", email_pb2.GetEmailRequest(event_id=reply.event_id))
        assert got.document.status == email_pb2.SCHEDULED
        assert got.document.send_at.ToDatetime(tzinfo=UTC) == due.replace(
            microsecond=due.microsecond
        )
        doc = await api.app.wait_terminal(reply.event_id, timeout=30)
        arrived = datetime.now(UTC)
        (message,) = api.delivered(reply.event_id)
    assert doc.status is Status.SENT
    assert doc.sent_at is not None and doc.sent_at >= due  # not before its time
    assert arrived >= due
    assert parsed(message)["X-Mailactors-Event-Id"] == reply.event_id


async def test_a_cancelled_email_is_never_sent(tmp_path: Path) -> None:
    async with open_api(tmp_path) as api:
        first_at, _ = rfc3339_in(2.0)
        later_at, _ = rfc3339_in(2.5)
        doomed = await api.request(send_at=first_at)
        kept = await api.request(send_at=later_at)
        cancel = email_pb2.CancelEmailRequest(event_id=doomed.event_id)
        answer = await api.call("CancelEmail", cancel, auth=True)  # the public API
        assert answer.status == email_pb2.CANCELLED
        with pytest.raises(GRPCError) as again:
            await api.call("CancelEmail", cancel, auth=True)
        await api.app.wait_terminal(kept.event_id, timeout=30)  # due after the cancelled one
        with pytest.raises(GRPCError) as sent:  # too late for this one
            await api.call(
                "CancelEmail", email_pb2.CancelEmailRequest(event_id=kept.event_id)
            )
        with pytest.raises(GRPCError) as unknown:
            await api.call(
                "CancelEmail",
                email_pb2.CancelEmailRequest(event_id="00000000-0000-4000-8000-000000000000"),
            )
        doc = await api.app.store.get(doomed.event_id)
        assert api.delivered(doomed.event_id) == []
        assert len(api.delivered(kept.event_id)) == 1
    assert doc is not None and doc.status is Status.CANCELLED
    assert again.value.status is GrpcStatus.FAILED_PRECONDITION
    assert again.value.message is not None and "is CANCELLED" in again.value.message
    assert sent.value.status is GrpcStatus.FAILED_PRECONDITION
    assert sent.value.message is not None and "is SENT" in sent.value.message
    assert unknown.value.status is GrpcStatus.NOT_FOUND

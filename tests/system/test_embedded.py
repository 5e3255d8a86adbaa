"""The seed workflow end to end in the embedded profile: one process, real SMTP.

Runs the three services as actor trees in one system, with the SQLite store,
the in-process bus, and either the Maildir provider or SMTP to a real aiosmtpd
server that captures what it receives.
"""

from __future__ import annotations

from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import pytest
import trio

from actors.auth.service import RequestAccepted
from actors.domain.edges import SearchQuery
from actors.domain.schema import EmailDocument, Status
from actors.domain.validation import InvalidField
from actors.profiles.embedded import open_embedded
from tests.support.embedded import (
    FlakyServer,
    embedded_config,
    grpc_request_email,
    maildir_messages,
    request,
    running,
)
from tests.support.smtp_servers import CapturingServer, FaultServer


async def test_three_samples_reach_the_maildir_as_sent(tmp_path):
    config = embedded_config(tmp_path)
    samples = [
        ("verification", {"name": "Ada", "code": "493817", "expires_minutes": 10}),
        ("password-reset", {"name": "Ada", "reset_url": "https://example.com/r/1"}),
        ("welcome", {"name": "Ada", "product": "mailactors"}),
    ]
    async with running(config) as app:
        docs = []
        for template, variables in samples:
            accepted = await app.request(request(template, variables=variables))
            assert isinstance(accepted, RequestAccepted) and not accepted.duplicate
            docs.append(await app.wait_terminal(accepted.event_id))
    assert [d.status for d in docs] == [Status.SENT] * 3
    for d in docs:
        assert d.provider == "maildir" and d.sent_at is not None and d.latency_ms is not None
        assert d.attempts == 1 and d.history[-1].status is Status.SENT
    messages = maildir_messages(tmp_path / "maildir")
    assert len(messages) == 3
    by_id = {m["X-Mailactors-Event-Id"]: m for m in messages}
    verification = by_id[docs[0].event_id]
    assert "493817" in verification.get_body(("plain",)).get_content()
    assert verification["Message-ID"] == f"<{docs[0].event_id}@mailactors.test>"


async def test_real_smtp_message_has_headers_parts_and_variables(tmp_path):
    with CapturingServer() as server:
        config = embedded_config(
            tmp_path, provider={"kind": "smtp", "smtp": {"host": "127.0.0.1", "port": server.port}}
        )
        async with running(config) as app:
            accepted = await app.request(
                request("password-reset", variables={"name": "Ada <b>", "reset_url": "https://x.test/r?a=1&b=2"})
            )
            doc = await app.wait_terminal(accepted.event_id)
        assert doc.status is Status.SENT, doc.error
        assert doc.provider == "smtp" and doc.smtp_reply and doc.smtp_reply.startswith("2")
        [received] = server.messages()
        assert received.rcpt_tos == ["ada@example.com"]
        msg = message_from_bytes(received.data, policy=policy.default)
    assert msg["To"] == "ada@example.com"
    assert msg["From"] == "noreply@mailactors.test"
    assert msg["Message-ID"] == f"<{doc.event_id}@mailactors.test>"
    text = msg.get_body(("plain",)).get_content()
    html = msg.get_body(("html",)).get_content()
    assert "https://x.test/r?a=1&b=2" in text and "Ada <b>" in text  # plain text is not escaped
    assert "Ada &lt;b&gt;" in html and "a=1&amp;b=2" in html  # HTML is autoescaped
    assert msg["Subject"]


async def test_documents_survive_a_restart_of_the_process(tmp_path):
    config = embedded_config(tmp_path)
    async with running(config) as app:
        accepted = await app.request(request())
        await app.wait_terminal(accepted.event_id)
    async with running(config) as app:
        doc = await app.store.get(accepted.event_id)
        page = await app.store.search(SearchQuery(recipient="ada@example.com"))
    assert doc is not None and doc.status is Status.SENT
    assert page.total == 1


async def test_repeated_idempotency_key_returns_the_first_event_and_sends_once(tmp_path):
    config = embedded_config(tmp_path)
    async with running(config) as app:
        first = await app.request(request(idempotency_key="signup-42"))
        await app.wait_terminal(first.event_id)
        again = await app.request(request(idempotency_key="signup-42"))
        other = await app.request(request(idempotency_key="signup-43"))
        await app.wait_terminal(other.event_id)
    assert again.event_id == first.event_id and again.duplicate
    assert again.status is Status.SENT
    assert other.event_id != first.event_id
    assert len(maildir_messages(tmp_path / "maildir")) == 2


@pytest.mark.parametrize(
    "req, field",
    [
        (request(to="not-an-address"), "recipient"),
        (request(to="a@b@c.com"), "recipient"),
        (request("no-such-template"), "template"),
        (request("../../etc/passwd"), "template"),
        (request(variables={"name": "Ada"}), "variables"),  # code is missing
        (
            request(variables={"name": "x" * 100_000, "code": "1", "expires_minutes": 1}),
            "variables",
        ),
        (request(subject="S" * 1000), "subject"),
        (request(subject="Hi\r\nBcc: victim@example.com"), "subject"),
    ],
)
async def test_bad_input_names_the_field_and_nothing_is_stored_or_sent(tmp_path, req, field):
    config = embedded_config(tmp_path)
    async with running(config) as app:
        with pytest.raises(InvalidField) as info:
            await app.request(req)
        assert info.value.field == field
        page = await app.store.search(SearchQuery())
        # the service keeps working after a bad request
        ok = await app.request(request(to="ok@example.com"))
        await app.wait_terminal(ok.event_id)
    assert page.total == 0
    assert len(maildir_messages(tmp_path / "maildir")) == 1


async def one_email_answered(tmp_path: Path, to: str, reply: str) -> EmailDocument:
    """One email to *to*, through an SMTP server that answers its DATA with *reply*:
    the document it ends with."""
    with FaultServer(data_replies={to: reply}) as server:
        config = embedded_config(
            tmp_path, provider={"kind": "smtp", "smtp": {"host": "127.0.0.1", "port": server.port}}
        )
        async with running(config) as app:
            accepted = await app.request(request(to=to))
            return await app.wait_terminal(accepted.event_id)


async def test_permanent_smtp_failure_ends_failed_with_the_reply(tmp_path):
    doc = await one_email_answered(tmp_path, "bounce@example.com", "550 5.1.1 No such user")
    assert doc.status is Status.FAILED
    assert doc.error and "550" in doc.error and "No such user" in doc.error
    assert doc.attempts == 1
    assert [h.status for h in doc.history] == [Status.FAILED]
    assert doc.history[0].smtp_code == 550


async def test_transient_failures_retry_then_send(tmp_path):
    # the first two attempts get 451, the third is accepted
    with FlakyServer(2, "451 4.3.0 Try again later") as server:
        config = embedded_config(
            tmp_path, provider={"kind": "smtp", "smtp": {"host": "127.0.0.1", "port": server.port}}
        )
        async with running(config) as app:
            accepted = await app.request(request(to="flaky@example.com"))
            doc = await app.wait_terminal(accepted.event_id)
    assert doc.status is Status.SENT, doc.error
    assert doc.attempts == 3
    assert [h.status for h in doc.history] == [Status.RETRYING, Status.RETRYING, Status.SENT]
    assert doc.history[0].smtp_code == 451


async def test_transient_failures_exhaust_retries_and_fail(tmp_path):
    doc = await one_email_answered(
        tmp_path, "down@example.com", "452 4.3.1 Insufficient system storage"
    )
    assert doc.status is Status.FAILED
    assert doc.attempts == 3 and "retries exhausted" in (doc.error or "")


async def test_undecodable_bus_messages_are_rejected_and_the_consumer_goes_on(tmp_path):
    config = embedded_config(tmp_path)
    async with running(config) as app:
        await app.bus.publish_raw("send", b"{not json")
        await app.bus.publish_raw("send", b'{"eventId": 5}')
        await app.bus.publish_raw("status", b"[]")
        accepted = await app.request(request())
        doc = await app.wait_terminal(accepted.event_id)
        snapshot = app.system.snapshot().by_path()
    assert doc.status is Status.SENT
    reasons = [reason for _, _, reason in app.bus.dead_letters]
    assert len(reasons) == 3 and all("undecodable" in r for r in reasons)
    assert snapshot["email-server/consumer"].restarts == 0


async def test_many_emails_in_parallel_all_end_sent(tmp_path):
    config = embedded_config(tmp_path)
    n = 300
    async with running(config) as app:
        ids: list[str] = []

        async def one(i: int) -> None:
            accepted = await app.request(request(to=f"user{i}@example.com"))
            ids.append(accepted.event_id)

        async with trio.open_nursery() as nursery:
            for i in range(n):
                nursery.start_soon(one, i)
        docs = [await app.wait_terminal(i) for i in ids]
        page = await app.store.search(SearchQuery(status=Status.SENT, page_size=500))
    assert len(set(ids)) == n
    assert all(d.status is Status.SENT for d in docs)
    assert page.total == n
    assert len(maildir_messages(tmp_path / "maildir")) == n


async def test_republished_send_event_is_not_sent_twice(tmp_path):
    """Redelivery, a sweeper republish or a publisher retry: the record stops a second send."""
    # one sender takes events in bus order, so the repeats are handled before `later`
    config = embedded_config(tmp_path, email_server={"concurrency": 1})
    async with running(config) as app:
        accepted = await app.request(request())
        doc = await app.wait_terminal(accepted.event_id)
        for _ in range(3):
            await app.bus.publish_send(doc.to_send_event())
        # a fresh email after the repeats: once it is SENT, the repeats were handled
        later = await app.request(request(to="later@example.com"))
        await app.wait_terminal(later.event_id)
        again = await app.store.get(accepted.event_id)
        repeats = sum(
            (a.extra or {}).get("repeats", 0)
            for a in app.system.snapshot().actors
            if a.path.startswith("email-server/senders/")
        )
    assert repeats == 3
    assert again is not None and again.status is Status.SENT and again.attempts == 1
    assert len(maildir_messages(tmp_path / "maildir")) == 2
    # the record is durable: a new process still refuses to send it again
    async with running(config) as app:
        await app.bus.publish_send(doc.to_send_event())
        last = await app.request(request(to="last@example.com"))
        await app.wait_terminal(last.event_id)
    assert len(maildir_messages(tmp_path / "maildir")) == 3


async def test_grpc_api_answers_invalid_argument_naming_the_field(tmp_path):
    from grpclib import GRPCError
    from grpclib import Status as GrpcStatus

    from actors.grpc.convert import variables_to_struct
    from protos import email_pb2

    config = embedded_config(tmp_path)
    async with open_embedded(config, grpc=True, shutdown=10.0) as app:

        async def call(request: Any) -> Any:
            return await grpc_request_email(app, request)

        good = email_pb2.RequestEmailRequest(
            recipient="ada@example.com",
            template="welcome",
            variables=variables_to_struct({"name": "Ada", "product": "P"}),
        )
        reply = await call(good)
        bad = email_pb2.RequestEmailRequest(
            recipient="ada@@example.com", template="welcome",
            variables=variables_to_struct({"name": "Ada", "product": "P"}),
        )
        with pytest.raises(GRPCError) as info:
            await call(bad)
        missing = email_pb2.RequestEmailRequest(recipient="ada@example.com", template="welcome")
        with pytest.raises(GRPCError) as info2:
            await call(missing)
        await app.wait_terminal(reply.event_id)
        page = await app.store.search(SearchQuery())
    assert info.value.status is GrpcStatus.INVALID_ARGUMENT and "recipient" in info.value.message
    assert info2.value.status is GrpcStatus.INVALID_ARGUMENT and "variables" in info2.value.message
    assert page.total == 1  # only the good request was stored

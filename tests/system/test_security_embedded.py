"""Hostile input and access control, end to end on a running embedded system.

Every edge is attacked the way an outsider could: through the auth actor (what
any caller's request becomes), through gRPC (with and without the token, with
and without TLS), through SaveEmail (a caller other than auth), and straight on
the bus (a publisher that bypasses auth). Each input is either accepted and
delivered, or refused with an error naming the field; nothing half-done is left
behind, and no actor crashes or stops consuming.
"""

from __future__ import annotations

import json
import os
import ssl
import sys
from pathlib import Path
from typing import Any

import pytest
import trio
from grpclib import GRPCError
from grpclib import Status as GrpcStatus
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors.auth.service import RequestEmail
from actors.domain.edges import SearchQuery
from actors.domain.schema import Attachment, EmailDocument, EmailSendEvent, Status, encode
from actors.domain.validation import InvalidField
from actors.profiles.distributed import GrpcIntegrationClient
from protos import email_pb2
from tests.support.embedded import (
    TOKEN,
    embedded_config,
    grpc_request,
    maildir_messages,
    request,
    running,
    save_request,
    secured_config,
    stored,
)
from tests.support.security import (
    SANDBOX_PAYLOADS,
    TEMPLATE_VARIABLES,
    BusProbe,
    GrpcClient,
    assert_no_restarts,
    attachment_tuples,
    fresh_id,
    good_recipients,
    good_templates,
    grpc_port,
    hostile_text,
    json_values,
    maildir_event_ids,
    make_certs,
    mostly,
    recipients,
    send_bodies,
    status_bodies,
    templates,
    variables_for,
)

ROOT = Path(__file__).resolve().parent.parent.parent
FIELD_ERROR = r"^[a-z_]+(\[\d+\])?(\.[a-z_]+(\[\d+\])?)*: \S"
UNAUTHENTICATED_METADATA: list[Any] = [
    None,
    {"authorization": "Bearer wrong-token"},
    {"authorization": TOKEN},  # no scheme
    {"authorization": f"Basic {TOKEN}"},
    {"authorization": f"Bearer {TOKEN}x"},
    {"authorization": f"Bearer {TOKEN[:-1]}"},  # one character short
    {"authorization": "Bearer"},
    {"x-api-key": TOKEN},
]


def client_ssl(config: Any) -> ssl.SSLContext | None:
    from actors.grpc.security import client_ssl_context

    return client_ssl_context(config.grpc)


async def expect_grpc_error(
    client: GrpcClient, method: str, req: Any, status: GrpcStatus, **kw: Any
) -> str:
    with pytest.raises(GRPCError) as err:
        await client.call(method, req, **kw)
    assert err.value.status is status, (err.value.status, err.value.message)
    return str(err.value.message or "")


# == header injection ====================================================================

CRLF = "Hi\r\nBcc: victim@example.com"


@pytest.mark.parametrize(
    "req, field",
    [
        (request(subject=CRLF), "subject"),
        (request(subject="Hi\nX-Injected: 1"), "subject"),
        # what Python's email package also takes for line breaks (found by the bus fuzz)
        (request(subject="Hi\x1e\x80"), "subject"),
        (request(subject="Hi\u2028X-Injected: 1"), "subject"),
        (request(subject="Hi\x85X-Injected: 1"), "subject"),
        (request(subject="Hi\x0bthere"), "subject"),
        (request("welcome", variables={"name": "Ada\u2029X: 1", "product": "P"}), "variables"),
        # in the subject
        (request("welcome", variables={"name": CRLF, "product": "P"}), "variables"),
        (request(to="ada@example.com\r\nBcc: victim@example.com"), "recipient"),
        (request(to="ada@example.com\n"), "recipient"),
        (request(category="tx\r\nBcc: x"), "category"),
        (
            request(
                attachments=[
                    Attachment(filename="a\r\n.pdf", content_type="application/pdf", content=b"x")
                ]
            ),
            "attachments[0].filename",
        ),
        (
            request(
                attachments=[
                    Attachment(filename="a.txt", content_type="text/plain;\r\n x=y", content=b"x")
                ]
            ),
            "attachments[0].content_type",
        ),
        (request(idempotency_key="k\r\nX: 1"), "idempotency_key"),
    ],
)
async def test_header_injection_is_refused_naming_the_field(tmp_path, req, field):
    async with running(embedded_config(tmp_path)) as app:
        with pytest.raises(InvalidField) as err:
            await app.request(req)
        assert err.value.field == field, str(err.value)
        assert await stored(app) == 0
        ok = await app.request(request(to="ok@example.com"))
        assert (await app.wait_terminal(ok.event_id)).status is Status.SENT
        assert_no_restarts(app)
    assert len(maildir_messages(tmp_path / "maildir")) == 1


async def test_header_injection_through_grpc_savemail_and_the_bus(tmp_path):
    config = secured_config(tmp_path)
    async with (
        running(config, grpc=True) as app,
        GrpcClient(app, grpc_port(app), token=TOKEN) as client,
    ):
        message = await expect_grpc_error(
            client, "RequestEmail", grpc_request(subject=CRLF), GrpcStatus.INVALID_ARGUMENT
        )
        assert message.startswith("subject: ") and "line breaks" in message
        message = await expect_grpc_error(
            client, "SaveEmail", save_request(subject=CRLF), GrpcStatus.INVALID_ARGUMENT
        )
        assert message.startswith("document.subject: ")
        assert await stored(app) == 0
        # A publisher on the bus bypasses auth: an email already saved (PENDING) is
        # republished with a Bcc injected in its subject. It must end FAILED, not sent.
        doc = EmailDocument(
            event_id=fresh_id(), recipient="ada@example.com", template="welcome",
            variables=dict(TEMPLATE_VARIABLES["welcome"]),
        )
        await app.api.save(doc)
        hostile = EmailSendEvent(
            event_id=doc.event_id, recipient=doc.recipient, template="welcome",
            variables=doc.variables, subject=CRLF,
        )
        await app.bus.publish_raw("send", encode(hostile))
        failed = await app.wait_terminal(doc.event_id)
        assert failed.status is Status.FAILED
        assert failed.error and "subject: must not contain line breaks" in failed.error
        [(_, _, reason)] = app.bus.dead_letters
        assert reason.startswith("invalid EmailSendEvent: subject: ")
        # and an eventId that would end up in the Message-ID and a header
        await app.bus.publish_raw(
            "send",
            encode(
                EmailSendEvent(
                    event_id="x\r\nBcc: v@example.com",
                    recipient="a@example.com",
                    template="welcome",
                    variables=doc.variables,
                )
            ),
        )
        ok = await app.request(request(to="ok@example.com"))
        assert (await app.wait_terminal(ok.event_id)).status is Status.SENT
        assert app.bus.dead_letters[1][2].startswith("invalid EmailSendEvent: eventId: ")
        assert_no_restarts(app)
    assert maildir_event_ids(tmp_path / "maildir") == {ok.event_id: 1}


# == path traversal in template names =====================================================

TRAVERSALS = ["../../etc/passwd", "/etc/passwd", "..", "welcome/../welcome", "welcome/..",
              "..%2f..%2fetc%2fpasswd", "..\\..\\x", "~/secret", "welcome\x00", "WELCOME"]


async def test_path_traversal_in_template_names_is_refused_on_every_edge(tmp_path):
    # a complete "template" right beside the directory, holding a secret
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "subject.txt").write_text("SECRET-SUBJECT")
    (secret / "body.txt").write_text("SECRET-BODY")
    names = [*TRAVERSALS, "../secret", str(secret), str(ROOT / "templates" / "welcome")]
    config = secured_config(tmp_path)
    async with (
        running(config, grpc=True) as app,
        GrpcClient(app, grpc_port(app), token=TOKEN) as client,
    ):
        for name in names:
            with pytest.raises(InvalidField) as err:
                await app.request(request(name, variables={}))
            assert err.value.field == "template", name
            message = await expect_grpc_error(
                client, "RequestEmail", grpc_request(template=name), GrpcStatus.INVALID_ARGUMENT
            )
            assert message.startswith("template: "), message
            message = await expect_grpc_error(
                client, "SaveEmail", save_request(template=name), GrpcStatus.INVALID_ARGUMENT
            )
            assert message.startswith("document.template: "), message
            await app.bus.publish_raw(
                "send",
                encode(
                    EmailSendEvent(event_id=fresh_id(), recipient="a@example.com", template=name)
                ),
            )
        ok = await app.request(request(to="ok@example.com"))
        assert (await app.wait_terminal(ok.event_id)).status is Status.SENT
        assert await stored(app) == 1
        reasons = [reason for _, _, reason in app.bus.dead_letters]
        assert len(reasons) == len(names)
        assert all(r.startswith("invalid EmailSendEvent: template: ") for r in reasons), reasons
        assert_no_restarts(app)
    messages = maildir_messages(tmp_path / "maildir")
    assert len(messages) == 1
    assert all("SECRET" not in m.as_string() for m in messages)


# == sandbox escapes ======================================================================


async def test_sandbox_escape_attempts_in_variables_are_delivered_as_text(tmp_path):
    async with running(embedded_config(tmp_path)) as app:
        ids = []
        for payload in SANDBOX_PAYLOADS:
            accepted = await app.request(
                request("welcome", variables={"name": payload, "product": payload})
            )
            ids.append(accepted.event_id)
        docs = [await app.wait_terminal(i) for i in ids]
        assert_no_restarts(app)
    assert all(d.status is Status.SENT for d in docs), [d.error for d in docs]
    by_id = {m["X-Mailactors-Event-Id"]: m for m in maildir_messages(tmp_path / "maildir")}
    for event_id, payload in zip(ids, SANDBOX_PAYLOADS, strict=True):
        msg = by_id[event_id]
        text = msg.get_body(("plain",)).get_content()
        html = msg.get_body(("html",)).get_content()
        assert payload in text  # verbatim: substituted, never evaluated
        assert payload in msg["Subject"]
        escaped = payload.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        escaped = escaped.replace("'", "&#39;").replace('"', "&#34;")
        assert escaped in html
        for leak in ("<class ", "uid=", "49", "TemplateReference", "subprocess"):
            assert leak not in text.replace(payload, ""), (payload, leak)


async def test_sandbox_escape_in_a_template_file_never_reaches_a_provider(tmp_path):
    templates_dir = tmp_path / "templates"
    for name, body in {
        "mro": "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "globals": "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
        "ok": "Hello {{ name }}",
    }.items():
        (templates_dir / name).mkdir(parents=True)
        (templates_dir / name / "subject.txt").write_text("Hi")
        (templates_dir / name / "body.txt").write_text(body)
    config = embedded_config(tmp_path, templates={"dir": str(templates_dir)})
    async with running(config) as app:
        for name in ("mro", "globals"):
            with pytest.raises(InvalidField) as err:
                await app.request(request(name, variables={}))
            assert err.value.field == "template" and "sandbox" in err.value.reason
            # straight on the bus: FAILED with the reason, nothing sent
            doc = EmailDocument(event_id=fresh_id(), recipient="ada@example.com", template=name)
            await app.api.save(doc)
            await app.bus.publish_send(doc.to_send_event())
            failed = await app.wait_terminal(doc.event_id)
            assert failed.status is Status.FAILED and "sandbox" in (failed.error or "")
        ok = await app.request(request("ok", variables={"name": "{{ 7*7 }}"}))
        assert (await app.wait_terminal(ok.event_id)).status is Status.SENT
        assert_no_restarts(app)
    [msg] = maildir_messages(tmp_path / "maildir")
    assert "Hello {{ 7*7 }}" in msg.get_body(("plain",)).get_content()


# == oversized payloads ===================================================================

SMALL = {"max_subject_chars": 50, "max_variables_bytes": 2000, "max_attachments": 2,
         "max_attachment_bytes": 10_000, "max_message_bytes": 20_000}


def pdf(size: int, name: str = "a.pdf") -> Attachment:
    return Attachment(filename=name, content_type="application/pdf", content=b"x" * size)


@pytest.mark.parametrize(
    "req, field",
    [
        (request(subject="s" * 51), "subject"),
        (
            request(variables={**TEMPLATE_VARIABLES["verification"], "blob": "x" * 3000}),
            "variables",
        ),
        (request(attachments=[pdf(1)] * 3), "attachments"),
        (request(attachments=[pdf(10_001)]), "attachments[0].content"),
        (request(attachments=[pdf(8000), pdf(8000, "b.pdf")]), "attachments"),  # whole message
        (
            request(
                attachments=[
                    Attachment(
                        filename="a.exe", content_type="application/x-msdownload", content=b"MZ"
                    )
                ]
            ),
            "attachments[0].content_type",
        ),
        (request(attachments=[pdf(1, "x" * 300)]), "attachments[0].filename"),
        (request(idempotency_key="k" * 1000), "idempotency_key"),
    ],
)
async def test_oversized_payloads_are_refused_naming_the_field(tmp_path, req, field):
    async with running(embedded_config(tmp_path, limits=SMALL)) as app:
        with pytest.raises(InvalidField) as err:
            await app.request(req)
        assert err.value.field == field, str(err.value)
        assert await stored(app) == 0


async def test_oversized_grpc_requests_and_bus_messages(tmp_path):
    from actors.domain.event_checks import max_send_event_bytes
    from actors.grpc.security import max_request_bytes

    config = secured_config(tmp_path, limits=SMALL)
    cap = max_request_bytes(config.limits)
    async with (
        running(config, grpc=True) as app,
        GrpcClient(app, grpc_port(app), token=TOKEN) as client,
    ):
        # over the request cap: refused from the length prefix, the body is never read
        huge = grpc_request(attachments=[("a.pdf", "application/pdf", b"x" * (cap + 1))])
        message = await expect_grpc_error(
            client, "RequestEmail", huge, GrpcStatus.RESOURCE_EXHAUSTED
        )
        assert str(cap) in message
        big_doc = save_request(
            attachments=[
                Attachment(
                    filename="a.pdf", content_type="application/pdf", content=b"x" * (4 * cap)
                )
            ]
        )
        await expect_grpc_error(client, "SaveEmail", big_doc, GrpcStatus.RESOURCE_EXHAUSTED)
        # under the cap but over the attachment limit: the field is named
        message = await expect_grpc_error(
            client,
            "RequestEmail",
            grpc_request(attachments=[("a.pdf", "application/pdf", b"x" * 20_000)]),
            GrpcStatus.INVALID_ARGUMENT,
        )
        assert message.startswith("attachments[0].content: ")
        # variables nested past protobuf's recursion limit: the field is named
        deep = grpc_request()
        value = deep.variables.fields["name"]
        for _ in range(80):
            value = value.struct_value.fields["d"]
        value.string_value = "leaf"
        message = await expect_grpc_error(client, "RequestEmail", deep, GrpcStatus.INVALID_ARGUMENT)
        assert message == "variables: nested deeper than 32"
        # on the bus: a body past the cap, and JSON nested past msgspec's depth
        await app.bus.publish_raw(
            "send", b'{"eventId": "' + b"x" * max_send_event_bytes(config.limits) + b'"}'
        )
        await app.bus.publish_raw(
            "send",
            b'{"eventId":"a","recipient":"a@example.com","template":"welcome","variables":{"x":'
            + b"[" * 5000
            + b"]" * 5000
            + b"}}",
        )
        await app.bus.publish_raw(
            "status", b'{"eventId":"a","status":"SENT","x":' + b"[" * 5000 + b"]" * 5000 + b"}"
        )
        # the server and the consumers go on
        accepted = await client.call("RequestEmail", grpc_request())
        assert (await app.wait_terminal(accepted.event_id)).status is Status.SENT
        assert await stored(app) == 1
        reasons = [reason for _, _, reason in app.bus.dead_letters]
        assert "more than the limit" in reasons[0]
        assert "nested too deeply" in reasons[1] and "nested too deeply" in reasons[2]
        assert_no_restarts(app)


# == tokens ===============================================================================

METHODS = {
    "RequestEmail": lambda: grpc_request(),
    "SaveEmail": lambda: save_request(),
    "SaveEmails": lambda: email_pb2.SaveEmailsRequest(documents=[save_request().document]),
    "GetEmail": lambda: email_pb2.GetEmailRequest(event_id=fresh_id()),
    "SearchEmails": lambda: email_pb2.SearchEmailsRequest(),
    "RequestEmails": lambda: email_pb2.RequestEmailsRequest(requests=[grpc_request()]),
    "CancelEmail": lambda: email_pb2.CancelEmailRequest(event_id=fresh_id()),
}


async def test_missing_and_wrong_tokens_are_unauthenticated_on_every_method_and_touch_nothing(
    tmp_path,
):
    config = secured_config(tmp_path)
    async with (
        running(config, grpc=True) as app,
        GrpcClient(app, grpc_port(app), token=TOKEN) as client,
    ):
        for method, make in METHODS.items():
            for metadata in UNAUTHENTICATED_METADATA:
                message = await expect_grpc_error(
                    client, method, make(), GrpcStatus.UNAUTHENTICATED, metadata=metadata
                )
                assert TOKEN not in message
        for metadata in UNAUTHENTICATED_METADATA:  # AuthService's CancelEmail too
            with pytest.raises(GRPCError) as info:
                await client.call(
                    "CancelEmail", METHODS["CancelEmail"](), metadata=metadata, auth=True
                )
            assert info.value.status is GrpcStatus.UNAUTHENTICATED
        # nothing stored, nothing published, no handler ran
        snap = app.system.snapshot().by_path()
        assert await stored(app) == 0
        assert (snap["email-server/consumer"].extra or {})["taken"] == 0
        assert snap["auth/requests"].processed == 0
        assert app.bus.depths() == {"send": 0, "status": 0}
        # with the token every method works
        accepted = await client.call("RequestEmail", grpc_request())
        await client.call("SaveEmail", save_request())
        batch = await client.call("SaveEmails", METHODS["SaveEmails"]())
        assert [r.created for r in batch.results] == [True]
        got = await client.call("GetEmail", email_pb2.GetEmailRequest(event_id=accepted.event_id))
        assert got.document.event_id == accepted.event_id
        found = await client.call("SearchEmails", email_pb2.SearchEmailsRequest())
        assert found.total == 3
        assert (await app.wait_terminal(accepted.event_id)).status is Status.SENT
    assert len(maildir_messages(tmp_path / "maildir")) == 1


def test_every_rpc_of_both_services_is_covered_by_the_token_test() -> None:
    """require_token listens to RecvRequest, which grpclib raises before any handler;
    this keeps the token test's method list in step with the proto."""
    methods = {
        method.name
        for service in email_pb2.DESCRIPTOR.services_by_name.values()
        for method in service.methods
    }
    assert methods == set(METHODS)


async def test_grpc_integration_client_sends_the_token_over_tls(tmp_path):
    config = secured_config(tmp_path, tls=True)
    async with running(config, grpc=True) as app:
        port = grpc_port(app)
        good = GrpcIntegrationClient(
            "127.0.0.1", port, token=TOKEN, deadline=10, retries=0, ssl=client_ssl(config)
        )
        bad = GrpcIntegrationClient(
            "127.0.0.1", port, token="nope", deadline=10, retries=0, ssl=client_ssl(config)
        )
        await good.open()
        await bad.open()
        try:
            doc = EmailDocument(
                event_id=fresh_id(),
                recipient="Ada@Example.COM",
                template="welcome",
                variables=dict(TEMPLATE_VARIABLES["welcome"]),
            )
            with pytest.raises(GRPCError) as err:
                await bad.save(doc)
            assert err.value.status is GrpcStatus.UNAUTHENTICATED
            assert await stored(app) == 0
            saved = await good.save(doc)
            assert saved.created and saved.document.recipient == "Ada@example.com"  # normalized
            with pytest.raises(GRPCError) as err:
                await good.save(EmailDocument(event_id=fresh_id(), recipient="ada@example.com",
                                              template="welcome", status=Status.SENT,
                                              variables=dict(TEMPLATE_VARIABLES["welcome"])))
            assert err.value.status is GrpcStatus.INVALID_ARGUMENT
            assert str(err.value.message).startswith("document.status: ")
        finally:
            await good.close()
            await bad.close()
        assert await stored(app) == 1


# == TLS ==================================================================================


async def test_tls_is_required_and_verified_when_configured(tmp_path):
    config = secured_config(tmp_path, tls=True)
    other_ca = make_certs(tmp_path / "other")
    async with running(config, grpc=True) as app:
        port = grpc_port(app)
        async with GrpcClient(app, port, token=TOKEN, ssl=client_ssl(config)) as client:
            accepted = await client.call("RequestEmail", grpc_request())
            assert (await app.wait_terminal(accepted.event_id)).status is Status.SENT
        # plaintext to a TLS port: no answer a client could take for a reply
        async with GrpcClient(app, port, token=TOKEN) as plain:
            with pytest.raises(Exception) as err:  # noqa: B017 - grpclib raises several kinds
                await plain.call("GetEmail", email_pb2.GetEmailRequest(event_id="x"), timeout=5)
            assert not (
                isinstance(err.value, GRPCError) and err.value.status is GrpcStatus.NOT_FOUND
            )
        # a server certificate from a CA the client does not trust
        untrusting = ssl.create_default_context(cafile=str(other_ca.ca))
        untrusting.set_alpn_protocols(["h2"])
        async with GrpcClient(app, port, token=TOKEN, ssl=untrusting) as client:
            with pytest.raises(ssl.SSLCertVerificationError):
                await client.call("GetEmail", email_pb2.GetEmailRequest(event_id="x"), timeout=5)
        # the CLI uses TLS and the token from the same configuration keys
        env = {
            **os.environ,
            "MAILACTORS__GRPC__AUTH_PORT": str(port),
            "MAILACTORS__GRPC__TLS_CA_FILE": config.grpc.tls_ca_file,
            "MAILACTORS__GRPC__TOKEN_FILE": config.grpc.token_file,
        }
        argv = [
            sys.executable,
            str(ROOT / "supervisor.py"),
            "--profile",
            "embedded",
            "status",
            accepted.event_id,
        ]
        with trio.fail_after(60):
            done = await trio.run_process(
                argv, env=env, capture_stdout=True, capture_stderr=True, check=False
            )
        assert done.returncode == 0, done.stderr.decode()
        assert json.loads(done.stdout)["status"] == "SENT"
        env.pop("MAILACTORS__GRPC__TLS_CA_FILE")
        with trio.fail_after(60):
            done = await trio.run_process(
                argv, env=env, capture_stdout=True, capture_stderr=True, check=False
            )
        assert done.returncode != 0 and not done.stdout
        assert_no_restarts(app)


# == other requests that could reach files or odd places ==================================


async def test_get_and_search_refuse_odd_ids_and_tokens(tmp_path):
    config = secured_config(tmp_path)
    async with (
        running(config, grpc=True) as app,
        GrpcClient(app, grpc_port(app), token=TOKEN) as client,
    ):
        for event_id in ("..", "../emails/_search", "a/b", "x\r\ny", "", "a" * 200):
            message = await expect_grpc_error(
                client,
                "GetEmail",
                email_pb2.GetEmailRequest(event_id=event_id),
                GrpcStatus.INVALID_ARGUMENT,
            )
            assert message.startswith("event_id: ")
        await expect_grpc_error(
            client, "GetEmail", email_pb2.GetEmailRequest(event_id=fresh_id()), GrpcStatus.NOT_FOUND
        )
        for token in ("garbage", "e30=", "W10=", "!!!", "WzEsMl0="):
            message = await expect_grpc_error(
                client, "SearchEmails", email_pb2.SearchEmailsRequest(page_token=token),
                GrpcStatus.INVALID_ARGUMENT,
            )
            assert message.startswith("page_token: ")
        search = email_pb2.SearchEmailsRequest()
        search.created_from.seconds = 2**62  # past year 9999
        await expect_grpc_error(client, "SearchEmails", search, GrpcStatus.INVALID_ARGUMENT)
        save = save_request()
        save.document.created_at.seconds = -(2**62)
        await expect_grpc_error(client, "SaveEmail", save, GrpcStatus.INVALID_ARGUMENT)
        assert await stored(app) == 0
        assert_no_restarts(app)


# == properties: every input is delivered or refused with a clear error ===================


@st.composite
def requests(draw: Any) -> RequestEmail:
    template = draw(mostly(good_templates, templates))
    return RequestEmail(
        recipient=draw(mostly(good_recipients, recipients | st.none() | st.integers())),
        template=template,
        variables=draw(mostly(variables_for(template), json_values)),
        category=draw(mostly(st.just("transactional"), hostile_text)),
        subject=draw(mostly(st.none() | st.just("Your code"), hostile_text)),
        attachments=[
            Attachment(filename=f, content_type=c, content=b)
            for f, c, b in draw(mostly(st.just([]), attachment_tuples))
        ],
        idempotency_key=draw(mostly(st.none(), st.text(max_size=20))),
    )


async def test_request_email_property_through_the_auth_actor(tmp_path):
    async with running(embedded_config(tmp_path)) as app:
        outcomes: dict[str, int] = {"sent": 0, "refused": 0}

        async def one(req: RequestEmail) -> None:
            before = await stored(app)
            try:
                accepted = await app.request(req, timeout=30)
            except InvalidField as err:
                assert err.field and err.reason
                assert await stored(app) == before
                outcomes["refused"] += 1
                return
            doc = await app.wait_terminal(accepted.event_id, timeout=30)
            assert doc.status is Status.SENT, doc.error
            outcomes["sent"] += 1

        @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
        @given(req=requests())
        def check(req: RequestEmail) -> None:
            trio.from_thread.run(one, req)

        await trio.to_thread.run_sync(check)
        sent = (await app.store.search(SearchQuery(status=Status.SENT, page_size=500))).documents
        assert await stored(app) == len(sent)  # nothing half-done: every stored email is SENT
        assert_no_restarts(app)
    assert outcomes["sent"] and outcomes["refused"], outcomes
    assert maildir_event_ids(tmp_path / "maildir") == {d.event_id: 1 for d in sent}


@st.composite
def grpc_requests(draw: Any) -> Any:
    template = draw(mostly(good_templates, templates))
    fields: dict[str, Any] = {
        "recipient": draw(mostly(good_recipients, recipients)),
        "template": template,
        "variables": draw(variables_for(template)),
        "attachments": draw(mostly(st.just([]), attachment_tuples)),
    }
    if draw(st.integers(0, 3)) == 0:
        fields["category"] = draw(hostile_text)
    if draw(st.integers(0, 3)) == 0:
        fields["subject"] = draw(hostile_text)
    if draw(st.booleans()):
        fields["idempotency_key"] = draw(st.text(max_size=20))
    return grpc_request(**fields)


@st.composite
def save_requests(draw: Any) -> Any:
    template = draw(mostly(good_templates, templates))
    req = save_request(
        event_id=draw(mostly(st.uuids().map(str), hostile_text)),
        recipient=draw(mostly(good_recipients, recipients)),
        template=template,
        variables=draw(variables_for(template)),
    )
    doc = req.document
    if draw(st.integers(0, 3)) == 0:
        doc.subject = draw(hostile_text)
    if draw(st.integers(0, 3)) == 0:
        doc.category = draw(hostile_text)
    if draw(st.integers(0, 7)) == 0:
        doc.status = draw(st.integers(0, 8))
    if draw(st.integers(0, 7)) == 0:
        doc.attempts = draw(st.integers(-5, 5))
    if draw(st.integers(0, 7)) == 0:
        doc.error = draw(hostile_text)
    for f, c, b in draw(mostly(st.just([]), attachment_tuples)):
        doc.attachments.add(filename=f, content_type=c, content=b)
    return req


async def test_grpc_request_and_save_properties(tmp_path):
    config = secured_config(tmp_path)
    async with (
        running(config, grpc=True) as app,
        GrpcClient(app, grpc_port(app), token=TOKEN) as client,
    ):
        outcomes: dict[str, int] = {"sent": 0, "saved": 0, "refused": 0}

        async def call_or_refused(method: str, req: Any) -> Any:
            """The reply; None when refused, with a field error and nothing stored."""
            before = await stored(app)
            try:
                return await client.call(method, req)
            except GRPCError as err:
                assert err.status is GrpcStatus.INVALID_ARGUMENT, (err.status, err.message)
                assert_field_error(str(err.message))
                assert await stored(app) == before
                outcomes["refused"] += 1
                return None

        async def one_request(req: Any) -> None:
            reply = await call_or_refused("RequestEmail", req)
            if reply is None:
                return
            doc = await app.wait_terminal(reply.event_id, timeout=30)
            assert doc.status is Status.SENT, doc.error
            outcomes["sent"] += 1

        async def one_save(req: Any) -> None:
            reply = await call_or_refused("SaveEmail", req)
            if reply is None:
                return
            got = await client.call("GetEmail", email_pb2.GetEmailRequest(event_id=reply.event_id))
            assert got.document.status == email_pb2.PENDING and not got.document.history
            outcomes["saved"] += 1

        @settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
        @given(req=grpc_requests(), save=save_requests())
        def check(req: Any, save: Any) -> None:
            trio.from_thread.run(one_request, req)
            trio.from_thread.run(one_save, save)

        await trio.to_thread.run_sync(check)
        assert_no_restarts(app)
        sent = (await app.store.search(SearchQuery(status=Status.SENT, page_size=500))).documents
    assert outcomes["sent"] and outcomes["saved"] and outcomes["refused"], outcomes
    assert maildir_event_ids(tmp_path / "maildir") == {d.event_id: 1 for d in sent}


def assert_field_error(message: str) -> None:
    import re

    assert re.match(FIELD_ERROR, message) or message.startswith(("document: ", "request: ")), (
        message
    )


async def run_bus_fuzz(tmp_path: Path, examples: int) -> dict[str, int]:
    config = embedded_config(tmp_path, email_server={"concurrency": 4})
    async with running(config) as app:
        probe = BusProbe(app)
        counts = {"taken": 0, "refused": 0, "repeat": 0, "applied": 0, "status refused": 0}

        async def one(send: bytes, status: bytes) -> None:
            counts[await probe.send(send)] += 1
            outcome = await probe.status(status)
            counts["applied" if outcome == "applied" else "status refused"] += 1

        @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck))
        @given(send=send_bodies(), status=status_bodies())
        def check(send: bytes, status: bytes) -> None:
            trio.from_thread.run(one, send, status)

        await trio.to_thread.run_sync(check)
        # the consumers still work: a valid email is SENT, nobody restarted
        ok = await app.request(request(to="after@example.com"))
        assert (await app.wait_terminal(ok.event_id)).status is Status.SENT
        assert_no_restarts(app)
        taken = dict(probe.taken_ids)
    delivered = maildir_event_ids(tmp_path / "maildir")
    assert delivered.pop(ok.event_id) == 1
    # every event taken off the bus was delivered, exactly once; nothing refused was
    assert set(taken) <= set(delivered) <= probe.seen
    assert max(delivered.values()) == 1
    assert all(counts[k] for k in ("taken", "refused", "applied", "status refused")), counts
    return counts


async def test_bus_decoder_property(tmp_path):
    await run_bus_fuzz(tmp_path, 300)


@pytest.mark.slow
@pytest.mark.timeout(900)  # 10,000 examples: minutes on a busy two-core machine
async def test_bus_decoder_property_ten_thousand_examples(tmp_path):
    await run_bus_fuzz(tmp_path, 10_000)

"""Unit checks of what guards the edges: bus bodies, SaveEmail documents, exposure, TLS.

Each function here raises its own error naming the field, and nothing else, for
any input; the end-to-end tests (test_security_embedded.py) check that the
services act on it.
"""

from __future__ import annotations

import json
import ssl
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors.domain.event_checks import (
    MAX_STATUS_EVENT_BYTES,
    BadMessage,
    check_document,
    check_event_id,
    check_idempotency_key,
    check_status_event,
    decode_send_event,
    decode_status_event,
    max_send_event_bytes,
)
from actors.domain.schema import (
    Attachment,
    AttemptRecord,
    EmailDocument,
    EmailSendEvent,
    EmailStatusEvent,
    Status,
    encode,
)
from actors.domain.validation import InvalidField
from actors.grpc.security import (
    bearer_metadata,
    client_ssl_context,
    max_request_bytes,
    server_ssl_context,
)
from config import PROJECT_ROOT, ConfigError, GrpcConfig, LimitsConfig, is_loopback, load_config
from tests.support.validation import LIMITS, RENDERER, WELCOME


def send_body(**fields: Any) -> bytes:
    base: dict[str, Any] = {
        "eventId": str(uuid.uuid4()),
        "recipient": "ada@example.com",
        "template": "welcome",
        "variables": WELCOME,
        "requestedAt": "2026-01-01T00:00:00Z",
    }
    base.update(fields)
    return json.dumps(base).encode()


# -- eventIds ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "event_id",
    [str(uuid.uuid4()), "01HZX3Q9R2", "order-42", "tenant:42.a_b", "e1", "a" * 128],
)
def test_good_event_ids(event_id: str) -> None:
    assert check_event_id(event_id) == event_id


@pytest.mark.parametrize(
    "event_id",
    ["", ".", "..", "../x", "a/b", "a b", "a\r\nBcc: x@example.com", "x\x00", "<a>", "a@b",
     "a" * 129, "-a", "é", 5, None],
)
def test_bad_event_ids_name_the_field(event_id: Any) -> None:
    with pytest.raises(InvalidField) as err:
        check_event_id(event_id, "eventId")
    assert err.value.field == "eventId"


@pytest.mark.parametrize("key", ["", "   ", "k" * 257, "a\nb", "a\x00", 5])
def test_bad_idempotency_keys(key: Any) -> None:
    with pytest.raises(InvalidField, match="^idempotency_key: "):
        check_idempotency_key(key)


def test_good_idempotency_keys() -> None:
    assert check_idempotency_key(None) is None
    assert check_idempotency_key("signup-42 été") == "signup-42 été"
    assert check_idempotency_key("k" * 256) == "k" * 256


# -- send events from the bus -------------------------------------------------------------


def test_a_good_send_event_decodes() -> None:
    event = decode_send_event(send_body(), LIMITS)
    assert event.template == "welcome" and event.requested_at.tzinfo is not None


@pytest.mark.parametrize(
    "body, reason",
    [
        (b"{not json", "undecodable EmailSendEvent"),
        (b"[]", "undecodable EmailSendEvent"),
        (b'{"eventId": 5}', "undecodable EmailSendEvent"),
        (b"\xff\xfe", "undecodable EmailSendEvent"),
        (
            send_body(variables={"x": "@"}).replace(b'"@"', b"[" * 2000 + b"]" * 2000),
            "nested too deeply",
        ),
        (send_body(attempt=2**70), "invalid EmailSendEvent: attempt: "),
        (send_body(eventId="a b"), "invalid EmailSendEvent: eventId: "),
        (send_body(eventId="x\r\nBcc: evil@example.com"), "invalid EmailSendEvent: eventId: "),
        (send_body(eventId=".."), "invalid EmailSendEvent: eventId: "),
        (send_body(attempt=0), "invalid EmailSendEvent: attempt: "),
        (send_body(attempt=-3), "invalid EmailSendEvent: attempt: "),
        (send_body(attempt=2**40), "invalid EmailSendEvent: attempt: "),
        (send_body(requestedAt="2026-01-01T00:00:00"), "invalid EmailSendEvent: requestedAt: "),
    ],
)
def test_bad_send_bodies_are_bad_messages_with_the_reason(body: bytes, reason: str) -> None:
    with pytest.raises(BadMessage) as err:
        decode_send_event(body, LIMITS)
    assert reason in str(err.value)


def test_deep_json_is_a_bad_message_not_a_recursion_error() -> None:
    """msgspec raises RecursionError (not a DecodeError) past its depth: it once crashed
    the consumer."""
    deep = b'{"eventId":"a","recipient":"x","template":"w","variables":{"x":' + b"[" * 5000
    deep += b"]" * 5000 + b"}}"
    with pytest.raises(BadMessage, match="nested too deeply"):
        decode_send_event(deep, LIMITS)
    with pytest.raises(BadMessage):
        decode_status_event(
            b'{"eventId":"a","status":"SENT","x":' + b"[" * 5000 + b"]" * 5000 + b"}"
        )


def test_oversized_send_body_is_refused_before_decoding() -> None:
    limits = LimitsConfig(max_message_bytes=1000, max_attachment_bytes=500, max_variables_bytes=100)
    body = send_body(variables={**WELCOME, "blob": "x" * (max_send_event_bytes(limits) + 1)})
    with pytest.raises(BadMessage, match="bytes, more than the limit"):
        decode_send_event(body, limits)


# -- status events from the bus -----------------------------------------------------------


def status(**fields: Any) -> EmailStatusEvent:
    base: dict[str, Any] = {"event_id": str(uuid.uuid4()), "status": Status.SENT}
    base.update(fields)
    return EmailStatusEvent(**base)


def test_a_good_status_event_decodes() -> None:
    event = status(smtp_code=250, smtp_reply="2.0.0 Ok", latency_ms=3.5, error=None)
    assert decode_status_event(encode(event)) == event


@pytest.mark.parametrize(
    "event, field",
    [
        (status(event_id="a b"), "eventId"),
        (status(attempt=0), "attempt"),
        (status(occurred_at=datetime(2026, 1, 1)), "occurredAt"),
        (status(requested_at=datetime(2026, 1, 1)), "requestedAt"),
        (status(smtp_code=-1), "smtpCode"),
        (status(smtp_code=100000), "smtpCode"),
        (status(latency_ms=float("inf")), "latencyMs"),
        (status(error="e" * 20000), "error"),
        (status(smtp_reply="r" * 20000), "smtpReply"),
        (status(provider="p" * 300), "provider"),
    ],
)
def test_unsound_status_events_name_the_field(event: EmailStatusEvent, field: str) -> None:
    with pytest.raises(InvalidField) as err:
        check_status_event(event)
    assert err.value.field == field


def test_status_bodies() -> None:
    with pytest.raises(BadMessage, match="undecodable EmailStatusEvent"):
        decode_status_event(b'{"eventId": "a", "status": "LOST"}')
    with pytest.raises(BadMessage, match="invalid EmailStatusEvent: occurredAt"):
        decode_status_event(
            b'{"eventId": "a", "status": "SENT", "occurredAt": "2026-01-01T00:00:00"}'
        )
    with pytest.raises(BadMessage, match="more than the limit"):
        decode_status_event(b" " * (MAX_STATUS_EVENT_BYTES + 1))


# -- documents for SaveEmail --------------------------------------------------------------


def document(**fields: Any) -> EmailDocument:
    base: dict[str, Any] = {
        "event_id": str(uuid.uuid4()),
        "recipient": "Ada@Example.COM",
        "template": "welcome",
        "variables": dict(WELCOME),
    }
    base.update(fields)
    return EmailDocument(**base)


def test_a_new_document_passes_with_the_recipient_normalized() -> None:
    doc = check_document(document(), LIMITS, RENDERER)
    assert doc.recipient == "Ada@example.com"


@pytest.mark.parametrize(
    "fields, field",
    [
        ({"event_id": "../x"}, "document.event_id"),
        ({"recipient": "a@b\r\nBcc: x@example.com"}, "document.recipient"),
        ({"template": "../../etc/passwd"}, "document.template"),
        ({"subject": "Hi\r\nBcc: evil@example.com"}, "document.subject"),
        ({"variables": {"name": "A\r\nB", "product": "P"}}, "document.variables"),
        ({"variables": {"name": "Ada"}}, "document.variables"),
        ({"category": "Bad Category"}, "document.category"),
        (
            {
                "attachments": [
                    Attachment(filename="../a.pdf", content_type="application/pdf", content=b"x")
                ]
            },
            "document.attachments[0].filename",
        ),
        ({"idempotency_key": "k" * 300}, "document.idempotency_key"),
        ({"status": Status.SENT}, "document.status"),
        ({"attempts": 3}, "document.attempts"),
        ({"error": "x"}, "document.error"),
        ({"provider": "smtp"}, "document.provider"),
        ({"sent_at": datetime.now(UTC)}, "document.sent_at"),
        (
            {"history": [AttemptRecord(attempt=1, at=datetime.now(UTC), status=Status.SENT)]},
            "document.history",
        ),
        ({"created_at": datetime(2026, 1, 1)}, "document.created_at"),
    ],
)
def test_bad_documents_name_the_field(fields: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidField) as err:
        check_document(document(**fields), LIMITS, RENDERER)
    assert err.value.field == field, str(err.value)


# -- property: arbitrary bytes and JSON never raise anything but BadMessage -------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=15,
)
send_keys = st.sampled_from(
    ["eventId", "recipient", "template", "variables", "category", "subject", "attachments",
     "requestedAt", "attempt"]
)
status_keys = st.sampled_from(
    ["eventId", "status", "attempt", "error", "provider", "providerMessageId", "smtpCode",
     "smtpReply", "requestedAt", "occurredAt", "latencyMs"]
)
bodies = (
    st.binary(max_size=200)
    | json_values.map(lambda v: json.dumps(v).encode())
    | st.dictionaries(send_keys | status_keys, json_values, max_size=8).map(
        lambda d: json.dumps(d).encode()
    )
)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=bodies)
def test_decoders_raise_only_bad_message(body: bytes) -> None:
    for decode in (lambda b: decode_send_event(b, LIMITS), decode_status_event):
        try:
            decode(body)
        except BadMessage as err:
            assert str(err).startswith(("undecodable ", "invalid "))


# -- exposure of the gRPC port ------------------------------------------------------------


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "127.0.0.2", "localhost", "::1", "[::1]", "LOCALHOST"]
)
def test_loopback_hosts(host: str) -> None:
    assert is_loopback(host)
    GrpcConfig(host=host)  # no token, no TLS: fine where only this machine can connect


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3", "example.com", "mail.internal"])
def test_a_reachable_host_needs_token_and_tls(host: str) -> None:
    assert not is_loopback(host)
    with pytest.raises(ValueError, match="needs a token .* and TLS"):
        GrpcConfig(host=host)
    with pytest.raises(ValueError, match="needs TLS"):
        GrpcConfig(host=host, token_env="T")
    with pytest.raises(ValueError, match="needs a token"):
        GrpcConfig(host=host, tls_cert_file="c.pem", tls_key_file="k.pem")
    GrpcConfig(host=host, token_env="T", tls_cert_file="c.pem", tls_key_file="k.pem")
    GrpcConfig(host=host, allow_insecure=True)


def test_exposure_is_a_config_error_naming_the_source() -> None:
    with pytest.raises(ConfigError) as err:
        load_config("distributed", env={"MAILACTORS__GRPC__HOST": "0.0.0.0"})
    assert "grpc" in str(err.value) and "MAILACTORS__GRPC__HOST" in str(err.value)
    cfg = load_config(
        "distributed",
        env={"MAILACTORS__GRPC__HOST": "0.0.0.0", "MAILACTORS__GRPC__ALLOW_INSECURE": "true"},
    )
    assert cfg.grpc.allow_insecure


def test_distributed_profile_documents_token_and_tls() -> None:
    text = (PROJECT_ROOT / "config" / "distributed.toml").read_text()
    for key in (
        "token_env",
        "token_file",
        "tls_cert_file",
        "tls_key_file",
        "tls_ca_file",
        "allow_insecure",
    ):
        assert f"\n{key} = " in text
    assert "authorization: Bearer" in text


# -- TLS contexts and tokens --------------------------------------------------------------


def test_tls_contexts(tmp_path: Path) -> None:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "server.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    g = GrpcConfig(
        tls_cert_file=str(tmp_path / "server.pem"),
        tls_key_file=str(tmp_path / "key.pem"),
        tls_ca_file=str(tmp_path / "ca.pem"),
    )
    server = server_ssl_context(g)
    client = client_ssl_context(g)
    assert server is not None and client is not None
    assert client.verify_mode is ssl.CERT_REQUIRED and client.check_hostname
    assert server.minimum_version >= ssl.TLSVersion.TLSv1_2
    assert server_ssl_context(GrpcConfig()) is None and client_ssl_context(GrpcConfig()) is None
    # a CLI on another machine: only the CA
    assert client_ssl_context(GrpcConfig(tls_ca_file=str(tmp_path / "ca.pem"))) is not None
    bad = GrpcConfig(
        tls_cert_file=str(tmp_path / "nope.pem"), tls_key_file=str(tmp_path / "key.pem")
    )
    with pytest.raises(ConfigError, match="grpc.tls_cert_file"):
        server_ssl_context(bad)


def test_bearer_metadata() -> None:
    assert bearer_metadata(None) is None and bearer_metadata("") is None
    assert bearer_metadata("t0k") == {"authorization": "Bearer t0k"}


def test_max_request_bytes_leaves_room_for_the_largest_valid_email() -> None:
    assert max_request_bytes(LIMITS) > LIMITS.max_message_bytes
    assert max_send_event_bytes(LIMITS) > LIMITS.max_message_bytes


ISSUE_17_FIELDS = (
    "from_address", "from_name", "reply_to", "cc", "bcc", "headers", "tags", "metadata"
)


def test_send_event_schema_fields_are_the_reviewed_ones() -> None:
    """A tripwire: a new field on a request or event must be reviewed for paths and URLs.

    Reviewed: no field names a file or a URL to fetch. ``template`` is a name
    checked against the directory; attachments carry bytes; a URL in a variable
    (password-reset's reset_url) is only text in the email. Issue 17's fields
    (addresses, allow-listed headers, tags, metadata, send_at) are text checked in
    actors.domain.addressing; none is fetched or opened.
    """
    from protos import email_pb2

    def fields(message: Any) -> set[str]:
        return {f.name for f in message.DESCRIPTOR.fields}

    assert fields(email_pb2.RequestEmailRequest) == {
        "recipient",
        "template",
        "variables",
        "category",
        "subject",
        "attachments",
        "idempotency_key",
        *ISSUE_17_FIELDS,
        "send_at",
    }
    assert fields(email_pb2.Attachment) == {"filename", "content_type", "content"}
    assert fields(email_pb2.GetEmailRequest) == {"event_id"}
    assert fields(email_pb2.SearchEmailsRequest) == {
        "recipient", "status", "category", "created_from", "created_to", "page_size", "page_token",
        "tags", "metadata",
    }
    assert {f.name for f in msgspec.structs.fields(EmailSendEvent)} == {
        "event_id", "recipient", "template", "variables", "category", "subject", "attachments",
        "requested_at", "attempt", *ISSUE_17_FIELDS,
    }

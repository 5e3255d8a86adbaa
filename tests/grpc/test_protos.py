"""The gRPC contract: generated code is current, conversion is lossless, stubs work."""

from __future__ import annotations

import asyncio
import math
import os
import socket
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import msgspec
import pytest
from grpclib import GRPCError
from grpclib.client import Channel
from grpclib.const import Status as GrpcStatus
from grpclib.server import Server, Stream

from actors.domain.schema import Attachment, AttemptRecord, EmailDocument, Status
from actors.grpc import convert as pc
from protos import email_grpc, email_pb2

ROOT = Path(__file__).resolve().parent.parent.parent
PROTOS = ROOT / "protos"
GENERATED = ("email_pb2.py", "email_pb2.pyi", "email_grpc.py")

SORTED_JSON = msgspec.json.Encoder(order="sorted")

T0 = datetime(2024, 5, 17, 9, 30, 12, 345678, tzinfo=UTC)

VARIABLES: dict[str, Any] = {
    "name": "Ada",
    "count": 3,
    "negative": -7,
    "big": 2**53,
    "ratio": 0.25,
    "ok": True,
    "off": False,
    "nothing": None,
    "empty_obj": {},
    "empty_list": [],
    "order": {
        "id": "A-1",
        "lines": [{"sku": "x", "qty": 2, "price": 9.99}, {"sku": "y", "qty": 1, "price": 10}],
        "tags": ["new", None, 1, 1.5, True, [], {}],
    },
    "unicode": "héllo ✉",
}


def full_document() -> EmailDocument:
    return EmailDocument(
        event_id="evt-123",
        recipient="ada@example.com",
        template="welcome",
        variables=VARIABLES,
        category="marketing",
        subject="Hello there",
        attachments=[
            Attachment(filename="a.pdf", content_type="application/pdf", content=b"%PDF\x00\xff"),
            Attachment(filename="empty.txt", content_type="text/plain", content=b""),
        ],
        status=Status.SENT,
        idempotency_key="idem-1",
        created_at=T0,
        updated_at=T0 + timedelta(seconds=5),
        attempts=2,
        error="first try timed out",
        provider="smtp",
        provider_message_id="<m1@example.com>",
        smtp_reply="250 2.0.0 Ok: queued",
        latency_ms=1234.5,
        sent_at=T0 + timedelta(seconds=4, microseconds=1),
        history=[
            AttemptRecord(
                attempt=1,
                at=T0 + timedelta(seconds=1),
                status=Status.RETRYING,
                provider="smtp",
                smtp_code=421,
                reply="421 try later",
            ),
            AttemptRecord(attempt=2, at=T0 + timedelta(seconds=4), status=Status.SENT),
        ],
    )


def through_wire(doc: EmailDocument) -> EmailDocument:
    data = pc.document_to_proto(doc).SerializeToString()
    return pc.document_from_proto(email_pb2.EmailDocument.FromString(data))


# -------------------------------------------------------------------------
# Conversion


def test_full_document_round_trip_is_lossless() -> None:
    doc = full_document()
    back = through_wire(doc)
    assert back == doc
    # A Struct keeps no key order: compare the JSON wire forms with sorted keys.
    assert SORTED_JSON.encode(back) == SORTED_JSON.encode(doc)
    assert list(back.variables) == sorted(VARIABLES)
    assert back.variables["count"] == 3 and type(back.variables["count"]) is int
    assert type(back.variables["ratio"]) is float
    assert type(back.variables["ok"]) is bool
    assert back.variables["empty_obj"] == {} and back.variables["empty_list"] == []
    assert back.created_at.tzinfo is not None and back.created_at.utcoffset() == timedelta(0)


def test_minimal_document_keeps_absent_fields_absent() -> None:
    doc = EmailDocument(
        event_id="e", recipient="r@example.com", template="t", created_at=T0, updated_at=T0
    )
    msg = pc.document_to_proto(doc)
    for name in (
        "subject",
        "idempotency_key",
        "error",
        "provider",
        "provider_message_id",
        "smtp_reply",
        "latency_ms",
        "sent_at",
    ):
        assert not msg.HasField(name), name
    assert through_wire(doc) == doc


def test_empty_strings_are_not_none() -> None:
    doc = EmailDocument(
        event_id="e",
        recipient="r@example.com",
        template="t",
        subject="",
        error="",
        latency_ms=0.0,
        history=[AttemptRecord(attempt=1, at=T0, status=Status.FAILED, smtp_code=0, reply="")],
    )
    back = through_wire(doc)
    assert back.subject == "" and back.error == "" and back.latency_ms == 0.0
    assert back.history[0].smtp_code == 0 and back.history[0].reply == ""
    assert back.history[0].provider is None


def test_unset_proto_fields_take_schema_defaults() -> None:
    before = datetime.now(UTC)
    doc = pc.document_from_proto(
        email_pb2.EmailDocument(event_id="e", recipient="r@example.com", template="t")
    )
    assert doc.status is Status.PENDING
    assert doc.category == pc.DEFAULT_CATEGORY
    assert doc.variables == {} and doc.attachments == [] and doc.history == []
    assert doc.subject is None and doc.sent_at is None and doc.latency_ms is None
    assert doc.created_at >= before and doc.updated_at >= before


def test_status_mapping_is_complete_and_strict() -> None:
    for status in Status:
        value = pc.status_to_proto(status)
        assert email_pb2.EmailStatus.Name(value) == status.value
        assert pc.status_from_proto(value) is status
    with pytest.raises(pc.ConversionError, match="status"):
        pc.status_from_proto(email_pb2.STATUS_UNSPECIFIED)
    with pytest.raises(pc.ConversionError, match="unknown status number 99"):
        pc.status_from_proto(99)


def test_unknown_status_on_the_wire_is_a_clear_error() -> None:
    msg = pc.document_to_proto(full_document())
    msg.history[1].status = email_pb2.STATUS_UNSPECIFIED
    with pytest.raises(pc.ConversionError) as info:
        pc.document_from_proto(msg)
    assert info.value.field == "history[1].status"

    msg = pc.document_to_proto(full_document())
    msg.history[0].ClearField("at")
    with pytest.raises(pc.ConversionError, match=r"history\[0\]\.at"):
        pc.document_from_proto(msg)


def test_variables_round_trip_and_integral_floats() -> None:
    assert pc.struct_to_variables(pc.variables_to_struct(VARIABLES)) == VARIABLES
    assert pc.struct_to_variables(pc.variables_to_struct({"t": (1, "a")})) == {"t": [1, "a"]}
    # Struct numbers are doubles: an integral float comes back as an equal int.
    back = pc.struct_to_variables(pc.variables_to_struct({"n": 2.0, "m": -0.5, "big": -(2**53)}))
    assert back == {"n": 2, "m": -0.5, "big": -(2**53)}
    assert type(back["n"]) is int and type(back["big"]) is int
    assert pc.struct_to_variables(pc.variables_to_struct({})) == {}


@pytest.mark.parametrize(
    ("variables", "field"),
    [
        ({"n": 2**53 + 1}, "variables.n"),
        ({"a": {"b": [1, math.nan]}}, "variables.a.b[1]"),
        ({"inf": math.inf}, "variables.inf"),
        ({"when": T0}, "variables.when"),
        ({"raw": b"x"}, "variables.raw"),
        ({"obj": {1: "x"}}, "variables.obj"),
    ],
)
def test_non_json_variables_are_refused_naming_the_field(
    variables: dict[str, Any], field: str
) -> None:
    with pytest.raises(pc.ConversionError) as info:
        pc.variables_to_struct(variables)
    assert info.value.field == field
    assert str(info.value).startswith(field)
    doc = EmailDocument(event_id="e", recipient="r", template="t", variables=variables)
    with pytest.raises(pc.ConversionError):
        pc.document_to_proto(doc)


def test_timestamp_helpers() -> None:
    paris = datetime(2024, 5, 17, 11, 30, 12, 345678, tzinfo=timezone(timedelta(hours=2)))
    back = pc.timestamp_to_datetime(pc.datetime_to_timestamp(paris))
    assert back == paris == T0
    assert back.utcoffset() == timedelta(0)

    naive = datetime(2024, 5, 17, 9, 30, 12, 345678)
    assert pc.timestamp_to_datetime(pc.datetime_to_timestamp(naive)) == T0

    req = email_pb2.SearchEmailsRequest()
    assert pc.get_datetime(req, "created_from") is None
    pc.set_datetime(req, "created_from", T0)
    assert pc.get_datetime(req, "created_from") == T0
    pc.set_datetime(req, "created_from", None)
    assert not req.HasField("created_from")

    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    pc.set_datetime(req, "created_to", epoch)
    assert pc.get_datetime(req, "created_to") == epoch  # set, though all zeros


def test_optional_search_filters() -> None:
    req = email_pb2.SearchEmailsRequest()
    assert not req.HasField("status") and not req.HasField("recipient")
    req = email_pb2.SearchEmailsRequest.FromString(
        email_pb2.SearchEmailsRequest(status=email_pb2.PENDING, recipient="").SerializeToString()
    )
    assert req.HasField("status") and req.HasField("recipient")
    assert pc.status_from_proto(req.status) is Status.PENDING


# -------------------------------------------------------------------------
# Generated code


def test_generated_stubs_expose_services() -> None:
    for name in (
        "IntegrationServiceBase",
        "IntegrationServiceStub",
        "AuthServiceBase",
        "AuthServiceStub",
    ):
        assert hasattr(email_grpc, name), name
    assert email_grpc.IntegrationServiceBase.__abstractmethods__ == {
        "SaveEmail",
        "SaveEmails",
        "GetEmail",
        "SearchEmails",
        "CancelEmail",
    }
    assert email_grpc.AuthServiceBase.__abstractmethods__ == {
        "RequestEmail",
        "RequestEmails",
        "CancelEmail",
    }
    assert email_pb2.DESCRIPTOR.package == "mailactors.v1"
    services = email_pb2.DESCRIPTOR.services_by_name
    assert set(services) == {"IntegrationService", "AuthService"}


def test_generated_files_match_generate_sh(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools")
    env = {**os.environ, "PYTHON": sys.executable}
    subprocess.run(
        ["sh", str(PROTOS / "generate.sh"), str(tmp_path)],
        check=True,
        env=env,
        cwd=tmp_path,  # the script must not depend on the working directory
        capture_output=True,
        timeout=120,
    )
    for name in GENERATED:
        assert (tmp_path / name).read_bytes() == (PROTOS / name).read_bytes(), (
            f"protos/{name} differs from protos/generate.sh output: "
            "edit protos/email.proto and rerun protos/generate.sh"
        )


# -------------------------------------------------------------------------
# A real grpclib server and client over loopback TCP


class _Integration(email_grpc.IntegrationServiceBase):
    def __init__(self) -> None:
        self.saved: dict[str, EmailDocument] = {}

    async def SaveEmail(
        self, stream: Stream[email_pb2.SaveEmailRequest, email_pb2.SaveEmailResponse]
    ) -> None:
        request = await stream.recv_message()
        assert request is not None
        doc = pc.document_from_proto(request.document)
        created = doc.event_id not in self.saved
        stored = self.saved.setdefault(doc.event_id, doc)
        await stream.send_message(
            email_pb2.SaveEmailResponse(
                event_id=stored.event_id, created=created, document=pc.document_to_proto(stored)
            )
        )

    async def SaveEmails(
        self, stream: Stream[email_pb2.SaveEmailsRequest, email_pb2.SaveEmailsResponse]
    ) -> None:
        raise GRPCError(GrpcStatus.UNIMPLEMENTED)

    async def GetEmail(
        self, stream: Stream[email_pb2.GetEmailRequest, email_pb2.GetEmailResponse]
    ) -> None:
        request = await stream.recv_message()
        assert request is not None
        doc = self.saved.get(request.event_id)
        if doc is None:
            raise GRPCError(GrpcStatus.NOT_FOUND, f"no email {request.event_id!r}")
        await stream.send_message(email_pb2.GetEmailResponse(document=pc.document_to_proto(doc)))

    async def SearchEmails(
        self, stream: Stream[email_pb2.SearchEmailsRequest, email_pb2.SearchEmailsResponse]
    ) -> None:
        raise GRPCError(GrpcStatus.UNIMPLEMENTED)

    async def CancelEmail(self, stream: Any) -> None:
        raise GRPCError(GrpcStatus.UNIMPLEMENTED)


class _Auth(email_grpc.AuthServiceBase):
    async def RequestEmail(
        self, stream: Stream[email_pb2.RequestEmailRequest, email_pb2.RequestEmailResponse]
    ) -> None:
        request = await stream.recv_message()
        assert request is not None
        await stream.send_message(
            email_pb2.RequestEmailResponse(
                event_id=f"evt-for-{request.recipient}",
                status=email_pb2.PENDING,
                duplicate=request.HasField("idempotency_key"),
            )
        )

    async def RequestEmails(self, stream: Any) -> None:
        raise GRPCError(GrpcStatus.UNIMPLEMENTED)

    async def CancelEmail(self, stream: Any) -> None:
        raise GRPCError(GrpcStatus.UNIMPLEMENTED)


async def _grpc_round_trip() -> None:
    server = Server([_Integration(), _Auth()])  # both services, one port
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    await server.start(sock=sock)
    channel = Channel("127.0.0.1", port)
    try:
        integration = email_grpc.IntegrationServiceStub(channel)
        doc = full_document()
        request = email_pb2.SaveEmailRequest(document=pc.document_to_proto(doc))

        first = await integration.SaveEmail(request, timeout=10)
        assert first.created and first.event_id == doc.event_id
        assert pc.document_from_proto(first.document) == doc

        again = await integration.SaveEmail(request, timeout=10)
        assert not again.created

        got = await integration.GetEmail(email_pb2.GetEmailRequest(event_id="evt-123"), timeout=10)
        assert pc.document_from_proto(got.document) == doc

        with pytest.raises(GRPCError) as info:
            await integration.GetEmail(email_pb2.GetEmailRequest(event_id="nope"), timeout=10)
        assert info.value.status is GrpcStatus.NOT_FOUND

        auth = email_grpc.AuthServiceStub(channel)
        reply = await auth.RequestEmail(
            email_pb2.RequestEmailRequest(
                recipient="ada@example.com",
                template="welcome",
                variables=pc.variables_to_struct({"name": "Ada"}),
            ),
            timeout=10,
        )
        assert reply.event_id == "evt-for-ada@example.com"
        assert pc.status_from_proto(reply.status) is Status.PENDING
        assert not reply.duplicate
    finally:
        channel.close()
        server.close()
        await server.wait_closed()


def test_grpclib_server_and_client_round_trip() -> None:
    asyncio.run(asyncio.wait_for(_grpc_round_trip(), timeout=30))

"""The gRPC intake, tried from outside with Google's grpcio (issue 14, items 6, 8, 9).

A hostile request is refused before the work it would cost, so that the calls
of everyone else go on; nesting past protobuf's limit is named as the field it
is in; and what grpcio sends with ``compression=Gzip`` (or Deflate) is taken in,
with a bound on what it inflates to.
"""

from __future__ import annotations

import asyncio
import gzip
import time
import zlib
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
import trio
from grpclib import GRPCError
from grpclib import Status as GrpcStatus

from actors.domain.schema import Status
from actors.grpc.intake import _inflate, request_limits
from config import LimitsConfig
from protos import email_pb2
from tests.support.embedded import TOKEN, grpc_request, running, save_request, secured_config
from tests.support.grpcio import GrpcioClient, nested, status_of, varint
from tests.support.security import assert_no_restarts, fresh_id, grpc_port

INVALID = grpc.StatusCode.INVALID_ARGUMENT


@pytest.fixture
async def served(tmp_path: Any) -> AsyncIterator[tuple[Any, GrpcioClient]]:
    async with running(secured_config(tmp_path), grpc=True) as app:
        client = GrpcioClient(grpc_port(app), TOKEN)
        try:
            yield app, client
        finally:
            client.close()


def many_variables(count: int = 200_000) -> bytes:
    """A RequestEmail of ~4.3 MB: 200,000 small variables, under the request cap."""
    req = grpc_request(template="welcome", variables={"name": "Ada", "product": "P"})
    for i in range(count):
        req.variables.fields[f"var-{i:07d}"].string_value = "x" * 6
    return bytes(req.SerializeToString())  # serialized once, here: not in the measured window


async def loop_stalls(done: trio.Event, gaps: list[float]) -> None:
    """The longest the event loop (Trio's and grpclib's: one thread) went unscheduled."""
    last = time.perf_counter()
    while not done.is_set():
        await trio.sleep(0.001)
        now = time.perf_counter()
        gaps.append(now - last)
        last = now


# == item 6: no request stalls the others ====================================================


async def test_requests_with_200000_variables_do_not_stall_other_calls(served) -> None:
    app, client = served
    hostile = many_variables()
    assert 4_000_000 < len(hostile) < request_limits(app.config.limits).max_bytes
    cheap = email_pb2.GetEmailRequest(event_id=fresh_id())
    await client.call("GetEmail", cheap)  # the channel is connected before timing
    replies: list[Any] = []
    latencies: list[float] = []
    gaps: list[float] = []
    done = trio.Event()

    async def attack() -> None:
        replies.append(await client.call("RequestEmail", hostile))

    with trio.fail_after(60):
        async with trio.open_nursery() as outer:
            outer.start_soon(loop_stalls, done, gaps)
            async with trio.open_nursery() as nursery:
                for _ in range(4):
                    nursery.start_soon(attack)
                while len(replies) < 4:
                    latencies.append(await client.timed("GetEmail", cheap))
            done.set()
    print(
        f"cheap call latency max {max(latencies) * 1000:.1f} ms,"
        f" loop stall max {max(gaps) * 1000:.1f} ms"
    )
    # Before the intake bounded the Struct: about 3.5 s and 1 s here.
    assert max(latencies) < 0.25, latencies
    assert max(gaps) < 0.1, max(gaps)
    for reply in replies:
        code, message = status_of(reply)
        assert code is INVALID, message
        assert message.startswith("variables: ") and "protobuf Struct" in message, message
    assert_no_restarts(app)


async def test_counts_are_refused_before_parsing_naming_the_field(served) -> None:
    app, client = served
    eleven = grpc_request(attachments=[("a.pdf", "application/pdf", b"%PDF")] * 11)
    code, message = status_of(await client.call("RequestEmail", eleven))
    assert (code, message) == (INVALID, "attachments: 11 attachments, more than 10")
    # one field repeated a million times (legal protobuf: the last one wins)
    repeated = b"\x0a\x00" * 1_000_000 + grpc_request().SerializeToString()
    code, message = status_of(await client.call("RequestEmail", repeated))
    assert (code, message) == (INVALID, "request: more than 1024 fields")
    docs = email_pb2.SaveEmailsRequest(documents=[save_request().document] * 1001)
    code, message = status_of(await client.call("SaveEmails", docs))
    assert (code, message) == (INVALID, "documents: 1001 documents, more than 1000")
    big = save_request()
    for i in range(10_000):
        big.document.variables.fields[f"v{i}"].number_value = i
    code, message = status_of(await client.call("SaveEmail", big))
    assert code is INVALID and message.startswith("document.variables: "), message
    # and a valid request still goes through
    accepted = await client.call("RequestEmail", grpc_request())
    assert (await app.wait_terminal(accepted.event_id)).status is Status.SENT


# == item 8: nesting past protobuf's limit names the field =====================================


async def test_variables_nested_40_deep_are_refused_naming_the_field(served) -> None:
    app, client = served
    code, message = status_of(await client.call("RequestEmail", nested(40)))
    assert (code, message) == (INVALID, "variables: nested deeper than 32")
    deep = save_request()
    value = deep.document.variables.fields["name"]
    for _ in range(40):
        value = value.struct_value.fields["d"]
    value.string_value = "leaf"
    code, message = status_of(await client.call("SaveEmail", deep))
    assert (code, message) == (INVALID, "document.variables: nested deeper than 32")
    # protobuf itself will not build this batch: its wire form, by hand (field 1, twice)
    documents = [save_request().document.SerializeToString(), deep.document.SerializeToString()]
    batch = b"".join(b"\x0a" + varint(len(d)) + d for d in documents)
    code, message = status_of(await client.call("SaveEmails", batch))
    assert (code, message) == (INVALID, "documents[1].variables: nested deeper than 32")
    # the deepest protobuf parses (33 levels with the leaf) is refused by validation
    code, message = status_of(await client.call("RequestEmail", nested(32)))
    assert code is INVALID and "nested more than 32 deep" in message, message
    # garbage is still refused as a whole
    code, message = status_of(await client.call("RequestEmail", b"\x1a\x05\x0a\x03\xff\xff\xff"))
    assert (code, message) == (INVALID, "request: not a valid RequestEmailRequest")
    assert_no_restarts(app)


# == item 9: compressed requests ===============================================================


@pytest.mark.parametrize("compression", [grpc.Compression.Gzip, grpc.Compression.Deflate])
async def test_compressed_requests_are_accepted(served, compression) -> None:
    app, client = served
    accepted = await client.call("RequestEmail", grpc_request(), compression=compression)
    assert isinstance(accepted, email_pb2.RequestEmailResponse), accepted
    assert (await app.wait_terminal(accepted.event_id)).status is Status.SENT
    # the other service too, and the checks still apply to what was inflated
    found = await client.call(
        "SearchEmails", email_pb2.SearchEmailsRequest(), compression=compression
    )
    assert found.total == 1
    code, message = status_of(
        await client.call("RequestEmail", nested(40), compression=compression)
    )
    assert (code, message) == (INVALID, "variables: nested deeper than 32")


async def test_a_zip_bomb_is_refused_once_it_inflates_past_the_cap(served) -> None:
    app, client = served
    cap = request_limits(app.config.limits).max_bytes
    bomb = grpc_request(attachments=[("a.pdf", "application/pdf", bytes(2 * cap))])
    code, message = status_of(
        await client.call("RequestEmail", bomb, compression=grpc.Compression.Gzip)
    )
    assert code is grpc.StatusCode.RESOURCE_EXHAUSTED, message
    assert f"more than the limit of {cap} bytes once decompressed" in message
    accepted = await client.call("RequestEmail", grpc_request(), compression=grpc.Compression.Gzip)
    assert (await app.wait_terminal(accepted.event_id)).status is Status.SENT


def test_inflate_bounds_encodings_and_refuses_what_it_cannot_read() -> None:
    """``_inflate`` runs in grpclib's handlers, on asyncio."""
    data = b"mailactors " * 100_000
    assert asyncio.run(_inflate(gzip.compress(data), "gzip", len(data))) == data
    assert asyncio.run(_inflate(zlib.compress(data), "deflate", len(data))) == data
    cases = [
        (gzip.compress(data), "gzip", len(data) - 1, GrpcStatus.RESOURCE_EXHAUSTED),
        (gzip.compress(data)[:-10], "gzip", len(data), GrpcStatus.INVALID_ARGUMENT),
        (gzip.compress(data) + b"x", "gzip", len(data), GrpcStatus.INVALID_ARGUMENT),
        (b"not gzip", "gzip", len(data), GrpcStatus.INVALID_ARGUMENT),
        (data, "snappy", len(data), GrpcStatus.UNIMPLEMENTED),
        (data, "identity", len(data), GrpcStatus.UNIMPLEMENTED),  # the flag set, yet no encoding
    ]
    for blob, encoding, cap, status in cases:
        with pytest.raises(GRPCError) as err:
            asyncio.run(_inflate(blob, encoding, cap))
        assert err.value.status is status, (encoding, err.value.message)


def test_the_struct_allowance_leaves_room_for_the_largest_valid_variables() -> None:
    limits = LimitsConfig()
    variables = email_pb2.RequestEmailRequest()
    for i in range(limits.max_variables_bytes // 20):  # {"k00000": "xxxxxxxx", ...}: ~20 B each
        variables.variables.fields[f"k{i:05d}"].string_value = "x" * 8
    assert variables.variables.ByteSize() < request_limits(limits).max_struct_bytes

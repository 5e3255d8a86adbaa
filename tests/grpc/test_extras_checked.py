"""Through the real gRPC API of a running embedded system (token-guarded): a request's own
headers, cc and bcc count toward limits.max_message_bytes (RequestEmail and SaveEmail alike),
and SaveEmail holds a document's addressing fields (from, reply-to, cc, bcc, headers, tags,
metadata) to auth's rules, naming the field; what it stores is normalized as auth stores it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from grpclib import GRPCError
from grpclib import Status as GrpcStatus

from actors.grpc.convert import document_from_proto
from tests.support.email_api import api_request
from tests.support.embedded import TOKEN, running, save_request, secured_config, stored
from tests.support.security import GrpcClient, grpc_port

pytestmark = pytest.mark.trio

LIMIT = 4096  # limits.max_message_bytes: the template's message is about 2.6 kB of it
LONG_DOMAIN = "d" * 60 + ".example"


def copies(n: int) -> list[str]:
    return [f"copy{i:02d}@{LONG_DOMAIN}" for i in range(n)]


async def refused(client: GrpcClient, method: str, request: Any) -> str:
    with pytest.raises(GRPCError) as err:
        await client.call(method, request)
    assert err.value.status is GrpcStatus.INVALID_ARGUMENT, err.value.message
    return str(err.value.message or "")


async def test_headers_cc_and_bcc_count_toward_the_message_size_limit(tmp_path: Path) -> None:
    config = secured_config(
        tmp_path, limits={"max_message_bytes": LIMIT, "max_attachment_bytes": 1024}
    )
    big_headers = {f"X-Note-{i}": "n" * 900 for i in range(5)}
    too_big = [
        ({"headers": big_headers}, "headers"),
        ({"cc": copies(30)}, "cc"),
        ({"bcc": copies(30)}, "bcc"),
    ]
    async with running(config, grpc=True) as app, GrpcClient(app, grpc_port(app), token=TOKEN) as c:
        for fields, name in too_big:
            message = await refused(c, "RequestEmail", api_request(**fields))
            assert message.startswith(f"{name}: the message would be about "), message
            assert f"more than the limit of {LIMIT} (limits.max_message_bytes)" in message
            # SaveEmail, integration's own way in, counts them the same.
            message = await refused(c, "SaveEmail", save_request(**fields))
            assert message.startswith(f"document.{name}: the message would be about "), message
        # The same request with a few copies and a header fits, and is taken.
        small = {"headers": {"X-Note": "n" * 100}, "cc": copies(2), "bcc": copies(2)}
        assert (await c.call("RequestEmail", api_request(**small))).event_id
        assert (await c.call("SaveEmail", save_request(**small))).created
        assert await stored(app) == 2


BAD_DOCUMENTS = [
    ({"from_address": "not an address"}, "document.from_address"),
    ({"reply_to": "nobody@"}, "document.reply_to"),
    ({"cc": ["ok@example.org", "bad@@example.org"]}, "document.cc[1]"),
    ({"bcc": ["a\r\nBcc: victim@example.com"]}, "document.bcc[0]"),
    ({"headers": {"From": "ceo@example.com"}}, "document.headers['From']"),
    ({"headers": {"X-Mailactors-Event-Id": "x"}}, "document.headers['X-Mailactors-Event-Id']"),
    ({"tags": ["bad tag"]}, "document.tags[0]"),
    ({"metadata": {"a.b": "dots are paths"}}, "document.metadata"),
    ({"from_name": "Shop"}, "document.from_name"),  # a name without an address
]


async def test_save_email_rechecks_the_addressing_fields_naming_each(tmp_path: Path) -> None:
    async with (
        running(secured_config(tmp_path), grpc=True) as app,
        GrpcClient(app, grpc_port(app), token=TOKEN) as client,
    ):
        for fields, name in BAD_DOCUMENTS:
            message = await refused(client, "SaveEmail", save_request(**fields))
            assert message.startswith(f"{name}: "), (fields, message)
        assert await stored(app) == 0
        # A good one is stored normalized, as auth stores a request's.
        reply = await client.call(
            "SaveEmail",
            save_request(
                from_address="News@Example.COM", cc=["Carol@Example.ORG", "carol@example.org"],
                tags=["a", "a", "b"],
            ),
        )  # fmt: skip
    document = document_from_proto(reply.document)
    assert document.from_address is not None and document.from_address.endswith("@example.com")
    assert document.cc == ["Carol@example.org"] and document.tags == ["a", "b"]

"""SearchEmails holds its tag and metadata filters to a request's rules (the ones
``supervisor.py search --tag/--meta`` uses): a filter no email could match is INVALID_ARGUMENT
naming the field, not an empty page. Google's grpcio client against a running embedded system."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from actors.domain.addressing import METADATA_KEY_PATTERN, TAG_PATTERN
from protos import email_pb2
from tests.support.email_api import open_api
from tests.support.grpcio import GrpcioClient, status_of

pytestmark = pytest.mark.trio

BAD = [
    ({"tags": ["bad tag"]}, f"tags[0]: must match ^{TAG_PATTERN.pattern}$, got 'bad tag'"),
    ({"tags": ["receipt", ".hidden"]}, "tags[1]: must match ^"),
    ({"tags": ["x" * 65]}, "tags[0]: must match ^"),
    ({"tags": [f"t{i}" for i in range(11)]}, "tags: 11 tags, more than 10"),
    ({"metadata": {"k" * 65: "v"}},  # the key's repr cut to 60 characters
     f"metadata: key '{'k' * 59} must match ^{METADATA_KEY_PATTERN.pattern}$"),
    ({"metadata": {"a.b": "1"}}, "metadata: key 'a.b' must match ^"),
    ({"metadata": {"k": "v" * 300}}, "metadata['k']: is 300 characters, more than 256"),
    ({"metadata": {"k": "a\nb"}}, "metadata['k']: must not contain line breaks"),
]  # fmt: skip


async def test_bad_tag_and_metadata_filters_are_invalid_argument_naming_the_field(
    tmp_path: Path,
) -> None:
    async with open_api(tmp_path) as api:
        reply = await api.request(recipient="ada@example.com", tags=["receipt"],
                                  metadata={"order": "42"})  # fmt: skip
        await api.app.wait_terminal(reply.event_id)
        google = GrpcioClient(api.port)  # Google's client, not the project's own
        try:
            for filters, said in BAD:
                answer = await google.call("SearchEmails", email_pb2.SearchEmailsRequest(**filters))
                code, details = status_of(answer)
                assert code is grpc.StatusCode.INVALID_ARGUMENT, (filters, code, details)
                assert details.startswith(said), (filters, details)
            # Good filters still find the email (a tag given twice is one filter).
            good = email_pb2.SearchEmailsRequest(tags=["receipt"] * 2, metadata={"order": "42"})
            page = await google.call("SearchEmails", good)
            assert isinstance(page, email_pb2.SearchEmailsResponse), page
            assert [d.event_id for d in page.documents] == [reply.event_id]
        finally:
            google.close()

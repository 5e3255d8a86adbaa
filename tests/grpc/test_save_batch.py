"""SaveEmails and auth's grouping client, over real gRPC on loopback.

Saves made concurrently by auth go to integration together, in one call; a
document integration refuses fails alone, and the client still works against
an integration that only knows SaveEmail.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing
from grpclib import GRPCError
from grpclib import Status as GrpcStatus
from grpclib.server import Server

from actors.domain.schema import EmailDocument, Status
from actors.grpc.convert import document_from_proto, document_to_proto
from actors.grpc.integration_client import GrpcIntegrationClient
from protos import email_grpc, email_pb2
from tests.support.embedded import embedded_config, running, stored
from tests.support.security import TEMPLATE_VARIABLES, GrpcClient, fresh_id, grpc_port


def doc(**fields: Any) -> EmailDocument:
    return EmailDocument(
        event_id=fields.pop("event_id", fresh_id()),
        recipient=fields.pop("recipient", "ada@example.com"),
        template=fields.pop("template", "welcome"),
        variables=fields.pop("variables", dict(TEMPLATE_VARIABLES["welcome"])),
        **fields,
    )


async def test_save_emails_saves_the_good_documents_and_refuses_each_bad_one_alone(tmp_path):
    async with running(embedded_config(tmp_path), grpc=True) as app:
        async with GrpcClient(app, grpc_port(app)) as client:
            good = [doc(), doc(recipient="Bob@Example.COM")]
            request = email_pb2.SaveEmailsRequest(
                documents=[
                    document_to_proto(good[0]),
                    document_to_proto(doc(status=Status.SENT)),
                    document_to_proto(good[1]),
                    document_to_proto(doc(recipient="not an address")),
                    document_to_proto(doc(template="no-such-template")),
                ]
            )
            reply = await client.call("SaveEmails", request)
            again = await client.call(
                "SaveEmails", email_pb2.SaveEmailsRequest(documents=[document_to_proto(good[0])])
            )
        results = list(reply.results)
        assert [r.created for r in results] == [True, False, True, False, False]
        assert [r.event_id for r in results[::2][:2]] == [d.event_id for d in good]
        assert results[0].error == results[2].error == ""
        assert results[1].error.startswith("document.status: ")
        assert results[3].error.startswith("document.recipient: ")
        assert results[4].error.startswith("document.template: ")
        # the recipient is normalized as SaveEmail normalizes it
        assert document_from_proto(results[2].document).recipient == "Bob@example.com"
        # a repeat is not created again, and the refused ones left nothing behind
        assert [r.created for r in again.results] == [False]
        assert await stored(app) == 2


async def test_save_emails_refuses_an_oversized_batch_with_the_limit(tmp_path):
    async with running(embedded_config(tmp_path), grpc=True) as app:
        async with GrpcClient(app, grpc_port(app)) as client:
            one = document_to_proto(doc())
            request = email_pb2.SaveEmailsRequest(documents=[one] * 1001)
            with pytest.raises(GRPCError) as err:
                await client.call("SaveEmails", request)
        assert err.value.status is GrpcStatus.INVALID_ARGUMENT
        assert "1001 documents, more than 1000" in str(err.value.message)
        assert await stored(app) == 0


async def _client(port: int, **kw: Any) -> GrpcIntegrationClient:
    client = GrpcIntegrationClient("127.0.0.1", port, token=None, deadline=10, retries=0, **kw)
    await client.open()
    return client


async def test_concurrent_saves_share_calls_and_a_bad_one_fails_alone(tmp_path):
    async with running(embedded_config(tmp_path), grpc=True) as app:
        client = await _client(grpc_port(app))
        try:
            docs = [doc() for _ in range(40)]
            bad = doc(recipient="nobody")
            results: dict[str, Any] = {}

            async def save(d: EmailDocument) -> None:
                try:
                    results[d.event_id] = await client.save(d)
                except GRPCError as exc:
                    results[d.event_id] = exc

            async with trio.open_nursery() as nursery:
                for d in [*docs[:20], bad, *docs[20:]]:
                    nursery.start_soon(save, d)
        finally:
            await client.close()
        assert all(results[d.event_id].created for d in docs)
        assert isinstance(results[bad.event_id], GRPCError)
        assert results[bad.event_id].status is GrpcStatus.INVALID_ARGUMENT
        assert str(results[bad.event_id].message).startswith("document.recipient: ")
        assert client.saved == 40
        assert client.calls < 41 / 2, "concurrent saves should go several to a call"
        assert await stored(app) == 40


async def test_max_batch_bounds_the_documents_of_one_call(tmp_path):
    async with running(embedded_config(tmp_path), grpc=True) as app:
        client = await _client(grpc_port(app), max_batch=3)
        try:
            async with trio.open_nursery() as nursery:
                for _ in range(10):
                    nursery.start_soon(client.save, doc())
        finally:
            await client.close()
        assert client.saved == 10
        assert client.calls >= 4  # ceil(10 / 3)
        assert await stored(app) == 10


class _OldIntegration(email_grpc.IntegrationServiceBase):  # type: ignore[misc]
    """An integration from before SaveEmails; SaveEmail may be held up to test cancellation."""

    def __init__(self) -> None:
        self.saved: dict[str, EmailDocument] = {}
        self.batched = True
        self.hold: Any = None  # an asyncio.Event SaveEmails waits on, when set

    async def SaveEmail(self, stream: Any) -> None:
        request = await stream.recv_message()
        d = document_from_proto(request.document)
        created = d.event_id not in self.saved
        stored_doc = self.saved.setdefault(d.event_id, d)
        await stream.send_message(
            email_pb2.SaveEmailResponse(
                event_id=d.event_id, created=created, document=document_to_proto(stored_doc)
            )
        )

    async def SaveEmails(self, stream: Any) -> None:
        if not self.batched:
            raise GRPCError(GrpcStatus.UNIMPLEMENTED)
        request = await stream.recv_message()
        if self.hold is not None:
            await self.hold.wait()
        results = []
        for message in request.documents:
            d = document_from_proto(message)
            created = d.event_id not in self.saved
            self.saved.setdefault(d.event_id, d)
            results.append(
                email_pb2.SaveEmailResult(event_id=d.event_id, created=created, document=message)
            )
        await stream.send_message(email_pb2.SaveEmailsResponse(results=results))

    async def GetEmail(self, stream: Any) -> None:
        raise GRPCError(GrpcStatus.UNIMPLEMENTED)

    async def SearchEmails(self, stream: Any) -> None:
        raise GRPCError(GrpcStatus.UNIMPLEMENTED)

    async def CancelEmail(self, stream: Any) -> None:
        raise GRPCError(GrpcStatus.UNIMPLEMENTED)


async def _serve(app: Any, service: _OldIntegration) -> tuple[Server, int]:
    async def start() -> tuple[Server, int]:
        server = Server([service])
        await server.start("127.0.0.1", 0)
        return server, server._server.sockets[0].getsockname()[1]

    return await app.edge.run(start)


async def _stop(app: Any, server: Server) -> None:
    async def stop() -> None:
        server.close()
        await server.wait_closed()

    await app.edge.run(stop)


async def test_falls_back_to_save_email_against_an_integration_without_save_emails(tmp_path):
    async with running(embedded_config(tmp_path)) as app:
        service = _OldIntegration()
        service.batched = False
        server, port = await _serve(app, service)
        client = await _client(port)
        try:
            docs = [doc() for _ in range(6)]
            async with trio.open_nursery() as nursery:
                for d in docs:
                    nursery.start_soon(client.save, d)
            assert (await client.save(docs[0])).created is False  # a repeat, one by one now
        finally:
            await client.close()
            await _stop(app, server)
        assert set(service.saved) == {d.event_id for d in docs}
        assert client.saved == 7


async def test_a_cancelled_caller_does_not_strand_the_saves_waiting_behind_it(tmp_path):
    async with running(embedded_config(tmp_path)) as app:
        service = _OldIntegration()

        async def make_event() -> Any:
            import asyncio

            return asyncio.Event()

        service.hold = await app.edge.run(make_event)
        server, port = await _serve(app, service)
        client = await _client(port)
        first, others = doc(), [doc() for _ in range(5)]
        results: dict[str, Any] = {}
        try:
            async with trio.open_nursery() as nursery:
                cancel_first = trio.CancelScope()

                async def save_first() -> None:
                    with cancel_first:
                        await client.save(first)

                async def save(d: EmailDocument) -> None:
                    results[d.event_id] = await client.save(d)

                nursery.start_soon(save_first)
                await trio.testing.wait_all_tasks_blocked()  # its call is in flight, held
                for d in others:
                    nursery.start_soon(save, d)
                await trio.testing.wait_all_tasks_blocked()
                cancel_first.cancel()  # the caller carrying the call goes away

                async def release() -> None:
                    service.hold.set()

                await trio.testing.wait_all_tasks_blocked()
                await app.edge.run(release)
        finally:
            await client.close()
            await _stop(app, server)
        assert all(results[d.event_id].created for d in others)
        assert {d.event_id for d in others} <= set(service.saved)

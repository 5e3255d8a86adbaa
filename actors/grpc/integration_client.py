"""auth's way to integration over gRPC: concurrent saves grouped into one call.

Each request auth accepts must be saved (PENDING) before its send event is
published. Saved one call each, the HTTP/2 and grpclib work of a call was the
largest cost of auth and integration together; so saves that arrive while a
call is in flight wait and go together in the next ``SaveEmails`` call (group
commit: at once under light load, in batches under heavy load). Deadlines and
retries on UNAVAILABLE are per call; a document integration refuses fails
alone, with INVALID_ARGUMENT, as with ``SaveEmail``. Against an integration
that does not know ``SaveEmails`` (UNIMPLEMENTED) the client falls back to
``SaveEmail`` per document.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from ssl import SSLContext
from typing import Any

import trio
from grpclib import GRPCError
from grpclib import Status as GrpcStatus
from grpclib.client import Channel

from actors.domain.edges import ApplyOutcome, ApplyResult, SaveResult, StoreUnavailable
from actors.domain.schema import EmailDocument
from actors.grpc.convert import document_from_proto, document_to_proto, status_from_proto
from actors.grpc.security import bearer_metadata
from protos import email_grpc, email_pb2
from runtime import AsyncioEdge, current_edge

log = logging.getLogger("mailactors.services")

__all__ = ["GrpcIntegrationClient"]

# Leave room for the envelope of the batch under integration's request limit.
_BATCH_OVERHEAD_BYTES = 64


class _Save:
    """One caller's document, waiting for a call to carry it."""

    __slots__ = ("message", "size", "result", "error", "taken")

    def __init__(self, message: Any) -> None:
        self.message = message
        self.size = message.ByteSize() + 8  # field tag and length prefix
        self.result: SaveResult | None = None
        self.error: BaseException | None = None
        self.taken = False

    @property
    def done(self) -> bool:
        return self.result is not None or self.error is not None


def _fresh(exc: BaseException) -> BaseException:
    """A copy of a batch's error for one caller: one exception object is raised once."""
    if isinstance(exc, GRPCError):
        return GRPCError(exc.status, exc.message, exc.details)
    if isinstance(exc, StoreUnavailable):
        return StoreUnavailable(str(exc))
    return exc


class GrpcIntegrationClient:
    """Deadlines, retries on UNAVAILABLE, and saves grouped ``max_batch`` at a time."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        token: str | None,
        deadline: float,
        retries: int,
        ssl: SSLContext | None = None,
        max_batch: int = 256,
        max_batch_bytes: int = 4 * 1024 * 1024,
    ) -> None:
        self.host = host
        self.port = port
        self.ssl = ssl  # grpc_security.client_ssl_context(config.grpc): TLS when set
        self.metadata = bearer_metadata(token)
        self.deadline = deadline
        self.retries = retries
        self.max_batch = max_batch
        self.max_batch_bytes = max_batch_bytes  # integration refuses larger requests unread
        self.channel: Channel | None = None
        self.edge: AsyncioEdge | None = None
        self._queue: list[_Save] = []
        self._lock = trio.Lock()  # one call in flight; the queue fills meanwhile
        self._batched = True  # False once integration answered UNIMPLEMENTED
        self.calls = 0  # SaveEmails/SaveEmail calls made (saved / calls: mean batch)
        self.saved = 0

    async def open(self) -> None:
        self.edge = current_edge()

        async def make() -> Channel:
            return Channel(self.host, self.port, ssl=self.ssl)

        self.channel = await self.edge.run(make)

    async def close(self) -> None:
        if self.channel is not None and self.edge is not None:
            channel = self.channel

            async def close() -> None:
                channel.close()

            await self.edge.run(close)

    async def save(self, document: EmailDocument) -> SaveResult:
        item = _Save(document_to_proto(document))
        self._queue.append(item)
        try:
            while not item.done:
                async with self._lock:
                    if not item.done:
                        await self._send_queued()
        except BaseException:
            if not item.taken and item in self._queue:
                self._queue.remove(item)
            raise
        if item.error is not None:
            raise _fresh(item.error)
        assert item.result is not None
        return item.result

    async def cancel(self, event_id: str) -> ApplyResult:
        """IntegrationService.CancelEmail, its answer as the store's ApplyResult."""
        request = email_pb2.CancelEmailRequest(event_id=event_id)
        try:
            reply = await self._unary("CancelEmail", request, event_id)
        except GRPCError as exc:
            if exc.status is GrpcStatus.NOT_FOUND:
                return ApplyResult(event_id, ApplyOutcome.NOT_FOUND)
            if exc.status is not GrpcStatus.FAILED_PRECONDITION:
                raise
            get = email_pb2.GetEmailRequest(event_id=event_id)  # what it is instead
            document = (await self._unary("GetEmail", get, event_id)).document
            return ApplyResult(event_id, ApplyOutcome.IGNORED, status_from_proto(document.status))
        return ApplyResult(event_id, ApplyOutcome.APPLIED, status_from_proto(reply.status))

    async def _unary(self, method: str, request: Any, event_id: str) -> Any:
        """IntegrationService.<method>(request), with the deadline, token and retries."""

        async def call(request: Any) -> Any:
            assert self.channel is not None
            stub = email_grpc.IntegrationServiceStub(self.channel)
            return await getattr(stub, method)(
                request, timeout=self.deadline, metadata=self.metadata
            )

        return await self._with_retries(call, request, event_id)

    def _take_batch(self) -> list[_Save]:
        """The oldest waiting saves, within ``max_batch`` and ``max_batch_bytes`` (at least one)."""
        size = _BATCH_OVERHEAD_BYTES
        n = 0
        for item in self._queue:
            if n == self.max_batch or (n and size + item.size > self.max_batch_bytes):
                break
            size += item.size
            n += 1
        batch, self._queue = self._queue[:n], self._queue[n:]
        for item in batch:
            item.taken = True
        return batch

    async def _send_queued(self) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()  # before taking anyone's document
        batch = self._take_batch()
        try:
            if self._batched:
                await self._save_batch(batch)
            else:
                await self._save_each(batch)
        except (GRPCError, StoreUnavailable) as exc:
            for item in batch:
                item.error = exc
        except BaseException:
            # Cancelled (or a bug) with the call unanswered: give the documents back,
            # for whoever sends next. Saving one twice is harmless (same eventId).
            for item in batch:
                item.taken = False
            self._queue[:0] = [item for item in batch if not item.done]
            raise

    async def _save_batch(self, batch: list[_Save]) -> None:
        request = email_pb2.SaveEmailsRequest(documents=[item.message for item in batch])
        try:
            reply = await self._with_retries(self._call_batch, request, batch[0].message.event_id)
        except GRPCError as exc:
            if exc.status is not GrpcStatus.UNIMPLEMENTED:
                raise
            log.warning("integration has no SaveEmails; saving one document per call")
            self._batched = False
            await self._save_each(batch)
            return
        if len(reply.results) != len(batch):
            raise StoreUnavailable(
                f"integration: SaveEmails answered {len(reply.results)} results for {len(batch)}"
            )
        for item, result in zip(batch, reply.results, strict=True):
            if result.error:
                item.error = GRPCError(GrpcStatus.INVALID_ARGUMENT, result.error)
            else:
                item.result = SaveResult(document_from_proto(result.document), result.created)
                self.saved += 1

    async def _save_each(self, batch: list[_Save]) -> None:
        async def one(item: _Save) -> None:
            request = email_pb2.SaveEmailRequest(document=item.message)
            try:
                reply = await self._with_retries(self._call_one, request, item.message.event_id)
            except (GRPCError, StoreUnavailable) as exc:
                item.error = exc
                return
            item.result = SaveResult(document_from_proto(reply.document), reply.created)
            self.saved += 1

        async with trio.open_nursery() as nursery:
            for item in batch:
                nursery.start_soon(one, item)

    async def _call_batch(self, request: Any) -> Any:
        assert self.channel is not None
        stub = email_grpc.IntegrationServiceStub(self.channel)
        return await stub.SaveEmails(request, timeout=self.deadline, metadata=self.metadata)

    async def _call_one(self, request: Any) -> Any:
        assert self.channel is not None
        stub = email_grpc.IntegrationServiceStub(self.channel)
        return await stub.SaveEmail(request, timeout=self.deadline, metadata=self.metadata)

    async def _with_retries(
        self, call: Callable[[Any], Awaitable[Any]], request: Any, event_id: str
    ) -> Any:
        """``call(request)`` on the asyncio side, retried on UNAVAILABLE and connection errors."""
        assert self.edge is not None
        delay = 0.1
        for attempt in range(self.retries + 1):
            try:
                self.calls += 1
                return await self.edge.run(call, request)
            except GRPCError as exc:
                if exc.status is not GrpcStatus.UNAVAILABLE or attempt == self.retries:
                    if exc.status is GrpcStatus.UNAVAILABLE:
                        raise StoreUnavailable(f"integration: {exc.message}") from exc
                    raise
            except (OSError, TimeoutError) as exc:
                if attempt == self.retries:
                    raise StoreUnavailable(f"integration unreachable: {exc}") from exc
            log.warning(
                "integration unavailable, retry %d in %.2fs",
                attempt + 1,
                delay,
                extra={"event_id": event_id},
            )
            await trio.sleep(delay * random.uniform(0.8, 1.2))
            delay = min(2.0, delay * 2)
        raise AssertionError("unreachable")

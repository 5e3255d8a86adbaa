"""The gRPC edge: grpclib servers and clients for the auth and integration APIs.

grpclib is an asyncio library, so the server runs on the asyncio side of the
runtime's edge and every handler crosses into Trio with ``edge.call_trio``.
Handlers turn domain errors into gRPC status codes: a bad request is
INVALID_ARGUMENT naming the field, an unknown eventId NOT_FOUND, a store
outage UNAVAILABLE (so that clients retry).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Awaitable, Callable
from ssl import SSLContext
from typing import Any, ClassVar, cast

import trio
from grpclib import GRPCError
from grpclib import Status as GrpcStatus
from grpclib.events import RecvRequest, listen
from grpclib.server import Server

from actors.auth.service import CancelEmail, RequestAccepted, RequestEmail
from actors.domain.addressing import check_metadata, check_tags
from actors.domain.edges import ApplyOutcome, ApplyResult, SearchQuery, StoreUnavailable
from actors.domain.event_checks import check_document, check_event_id
from actors.domain.schema import EmailDocument
from actors.domain.templates import TemplateRenderer
from actors.domain.validation import InvalidField
from actors.grpc.convert import (
    ConversionError,
    attachment_from_proto,
    document_from_proto,
    document_to_proto,
    get_datetime,
    status_from_proto,
    status_to_proto,
    struct_to_variables,
)
from actors.grpc.intake import MAX_SAVE_BATCH, IntakeServer, recv_request, request_limits
from actors.integration.service import IntegrationApi
from config import ApiConfig, LimitsConfig
from protos import email_grpc, email_pb2
from runtime import Actor, ActorRef, AskTimeout, AsyncioEdge, current_edge

log = logging.getLogger("mailactors.grpc")

MAX_PAGE_SIZE = 500
_Request = RequestEmail  # AuthService's method of the same name hides it in the class


async def _call(edge: AsyncioEdge, fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
    """Run a Trio call from a handler and map domain errors to gRPC status codes."""
    try:
        return await edge.call_trio(fn, *args)
    except (InvalidField, ConversionError) as exc:
        raise GRPCError(GrpcStatus.INVALID_ARGUMENT, str(exc)) from None
    except ValueError as exc:  # e.g. a store's "page_token: not a token this store issued"
        raise GRPCError(GrpcStatus.INVALID_ARGUMENT, str(exc)) from None
    except (StoreUnavailable, AskTimeout) as exc:
        raise GRPCError(GrpcStatus.UNAVAILABLE, str(exc)) from None


class IntegrationService(email_grpc.IntegrationServiceBase):
    """``renderer`` given: SaveEmail checks each document as auth checks a request."""

    def __init__(
        self,
        api: IntegrationApi,
        edge: AsyncioEdge,
        renderer: TemplateRenderer | None = None,
        limits: LimitsConfig | None = None,
    ) -> None:
        self.api = api
        self.edge = edge
        self.renderer = renderer
        self.limits = limits or LimitsConfig()
        self.intake = request_limits(self.limits)

    def _document(self, message: Any) -> EmailDocument:
        """A document as it may be stored, or InvalidField/ConversionError saying why not."""
        try:
            document = document_from_proto(message)
        except (ValueError, OverflowError) as exc:  # e.g. a Timestamp past year 9999
            if isinstance(exc, ConversionError):
                raise
            raise InvalidField("document", str(exc)) from None
        if not document.event_id:
            raise InvalidField("document.event_id", "must not be empty")
        if self.renderer is not None:
            document = check_document(document, self.limits, self.renderer)
        return document

    async def SaveEmail(self, stream: Any) -> None:
        request = await recv_request(stream, self.intake)
        try:
            document = self._document(request.document)
        except (InvalidField, ConversionError) as exc:
            raise GRPCError(GrpcStatus.INVALID_ARGUMENT, str(exc)) from None
        result = await _call(self.edge, self.api.save, document)
        await stream.send_message(
            email_pb2.SaveEmailResponse(
                event_id=result.document.event_id,
                created=result.created,
                document=document_to_proto(result.document),
            )
        )

    async def SaveEmails(self, stream: Any) -> None:
        """SaveEmail for many documents: each is checked and saved on its own."""
        request = await recv_request(stream, self.intake)
        if len(request.documents) > MAX_SAVE_BATCH:
            raise GRPCError(
                GrpcStatus.INVALID_ARGUMENT,
                f"documents: {len(request.documents)} documents, more than {MAX_SAVE_BATCH}",
            )
        results: list[Any] = [None] * len(request.documents)
        valid: list[EmailDocument] = []
        where: list[int] = []
        for i, message in enumerate(request.documents):
            try:
                valid.append(self._document(message))
                where.append(i)
            except (InvalidField, ConversionError) as exc:
                results[i] = email_pb2.SaveEmailResult(error=str(exc))
        saved = await _call(self.edge, self.api.save_many, valid) if valid else []
        for i, result in zip(where, saved, strict=True):
            results[i] = email_pb2.SaveEmailResult(
                event_id=result.document.event_id,
                created=result.created,
                document=document_to_proto(result.document),
            )
        await stream.send_message(email_pb2.SaveEmailsResponse(results=results))

    async def GetEmail(self, stream: Any) -> None:
        request = await recv_request(stream, self.intake)
        try:
            check_event_id(request.event_id, "event_id")
        except InvalidField as exc:
            raise GRPCError(GrpcStatus.INVALID_ARGUMENT, str(exc)) from None
        document = await _call(self.edge, self.api.get, request.event_id)
        if document is None:
            raise GRPCError(GrpcStatus.NOT_FOUND, f"event_id: no email {request.event_id!r}")
        await stream.send_message(email_pb2.GetEmailResponse(document=document_to_proto(document)))

    async def CancelEmail(self, stream: Any) -> None:
        request = await recv_request(stream, self.intake)
        await stream.send_message(
            await cancel_reply(self.edge, self.api.cancel, request.event_id)
        )

    async def SearchEmails(self, stream: Any) -> None:
        request = await recv_request(stream, self.intake)
        try:
            query = search_query_from_proto(request)
        except (ValueError, OverflowError) as exc:  # a Timestamp past year 9999
            raise GRPCError(
                GrpcStatus.INVALID_ARGUMENT, f"created_from/created_to: {exc}"
            ) from None
        page = await _call(self.edge, self.api.search, query)
        await stream.send_message(
            email_pb2.SearchEmailsResponse(
                documents=[document_to_proto(d) for d in page.documents],
                next_page_token=page.next_page_token,
                total=page.total,
            )
        )


async def cancel_reply(
    edge: AsyncioEdge, cancel: Callable[[str], Awaitable[ApplyResult]], event_id: str
) -> Any:
    """CancelEmail's answer, or the GRPCError: NOT_FOUND, FAILED_PRECONDITION (not SCHEDULED)."""
    try:
        check_event_id(event_id, "event_id")
    except InvalidField as exc:
        raise GRPCError(GrpcStatus.INVALID_ARGUMENT, str(exc)) from None
    result: ApplyResult = await _call(edge, cancel, event_id)
    if result.outcome is ApplyOutcome.NOT_FOUND:
        raise GRPCError(GrpcStatus.NOT_FOUND, f"event_id: no email {event_id!r}")
    if result.outcome is ApplyOutcome.IGNORED:
        status = result.status.value if result.status is not None else "unknown"
        raise GRPCError(
            GrpcStatus.FAILED_PRECONDITION,
            f"event_id: {event_id!r} is {status}; only a SCHEDULED email can be cancelled",
        )
    return email_pb2.CancelEmailResponse(event_id=event_id, status=email_pb2.CANCELLED)


def search_query_from_proto(request: Any) -> SearchQuery:
    if request.page_size < 0 or request.page_size > MAX_PAGE_SIZE:
        raise GRPCError(
            GrpcStatus.INVALID_ARGUMENT,
            f"page_size: must be 0..{MAX_PAGE_SIZE}, got {request.page_size}",
        )
    try:
        status = status_from_proto(request.status) if request.HasField("status") else None
        # The rules a request's tags and metadata follow: a filter no email can match is a
        # mistake to name (as ``supervisor.py search`` does), not an empty page.
        tags = check_tags(list(request.tags))
        metadata = check_metadata(dict(request.metadata))
    except (ConversionError, InvalidField) as exc:
        raise GRPCError(GrpcStatus.INVALID_ARGUMENT, str(exc)) from None
    return SearchQuery(
        recipient=request.recipient if request.HasField("recipient") else None,
        status=status,
        category=request.category if request.HasField("category") else None,
        created_from=get_datetime(request, "created_from"),
        created_to=get_datetime(request, "created_to"),
        tags=tuple(tags),
        metadata=metadata,
        page_size=request.page_size or 50,
        page_token=request.page_token,
    )


def request_from_proto(request: Any) -> RequestEmail:
    """The auth request for a RequestEmailRequest; ConversionError/ValueError if it has none."""

    def optional(name: str) -> Any:
        return getattr(request, name) if request.HasField(name) else None

    return RequestEmail(
        recipient=request.recipient,
        template=request.template,
        variables=struct_to_variables(request.variables),
        category=request.category or "transactional",
        subject=optional("subject"),
        attachments=[attachment_from_proto(a) for a in request.attachments],
        idempotency_key=optional("idempotency_key"),
        from_address=optional("from_address"),
        from_name=optional("from_name"),
        reply_to=optional("reply_to"),
        cc=list(request.cc),
        bcc=list(request.bcc),
        headers=dict(request.headers),
        tags=list(request.tags),
        metadata=dict(request.metadata),
        send_at=optional("send_at"),
    )


class AuthService(email_grpc.AuthServiceBase):
    def __init__(
        self,
        requests: ActorRef[RequestEmail | CancelEmail],
        edge: AsyncioEdge,
        limits: LimitsConfig | None = None,
        api: ApiConfig | None = None,
    ) -> None:
        self.requests = requests
        self.edge = edge
        self.intake = request_limits(limits or LimitsConfig())
        self.api = api or ApiConfig()

    async def RequestEmail(self, stream: Any) -> None:
        request = await recv_request(stream, self.intake)
        try:
            msg = request_from_proto(request)
        except (ConversionError, ValueError, TypeError) as exc:
            raise GRPCError(GrpcStatus.INVALID_ARGUMENT, str(exc)) from None
        accepted: RequestAccepted = await _call(self.edge, self.requests.ask, msg, 60.0)
        await stream.send_message(
            email_pb2.RequestEmailResponse(
                event_id=accepted.event_id,
                status=status_to_proto(accepted.status),
                duplicate=accepted.duplicate,
            )
        )

    async def RequestEmails(self, stream: Any) -> None:
        """RequestEmail for many requests: each checked, keyed and saved on its own."""
        request = await recv_request(stream, self.intake)
        n = len(request.requests)
        if n > self.api.max_batch:
            raise GRPCError(
                GrpcStatus.INVALID_ARGUMENT,
                f"requests: {n} requests, more than the limit of {self.api.max_batch}"
                " (api.max_batch)",
            )
        results: list[Any] = [None] * n
        msgs: list[tuple[int, _Request]] = []
        for i, item in enumerate(request.requests):
            try:
                msgs.append((i, request_from_proto(item)))
            except (ConversionError, ValueError, TypeError) as exc:
                results[i] = email_pb2.RequestEmailResult(error=f"requests[{i}].{exc}")
        answers = await self.edge.call_trio(self._ask_all, msgs)
        for i, answer in answers:
            if isinstance(answer, RequestAccepted):
                results[i] = email_pb2.RequestEmailResult(
                    event_id=answer.event_id,
                    status=status_to_proto(answer.status),
                    duplicate=answer.duplicate,
                )
            else:
                results[i] = email_pb2.RequestEmailResult(error=answer)
        await stream.send_message(email_pb2.RequestEmailsResponse(results=results))

    async def _ask_all(
        self, msgs: list[tuple[int, _Request]]
    ) -> list[tuple[int, RequestAccepted | str]]:
        """Trio side: every request asked at once (auth groups their saves into few calls)."""
        answers: list[tuple[int, RequestAccepted | str]] = []

        async def one(i: int, msg: _Request) -> None:
            try:
                answers.append((i, await self.requests.ask(msg, 60.0)))
            except (InvalidField, ConversionError) as exc:
                answers.append((i, f"requests[{i}].{exc}"))
            except ValueError as exc:
                answers.append((i, f"requests[{i}]: {exc}"))
            except (StoreUnavailable, AskTimeout) as exc:
                answers.append((i, f"UNAVAILABLE: {exc}"))
            except GRPCError as exc:  # integration's answer, passed on (distributed)
                answers.append((i, f"requests[{i}]: {exc.status.name}: {exc.message}"))

        # Asked at once, requests race to the store, so of two with one idempotency key the
        # later could be kept. A repeated key waits for a second round: the earlier one wins.
        seen: set[str] = set()
        rounds: tuple[list[tuple[int, _Request]], ...] = ([], [])
        for i, msg in msgs:
            key = msg.idempotency_key
            rounds[bool(key) and key in seen].append((i, msg))
            if key:
                seen.add(key)
        for batch in rounds:
            async with trio.open_nursery() as nursery:
                for i, msg in batch:
                    nursery.start_soon(one, i, msg)
        return answers

    async def CancelEmail(self, stream: Any) -> None:
        request = await recv_request(stream, self.intake)

        async def cancel(event_id: str) -> ApplyResult:
            result: ApplyResult = await self.requests.ask(CancelEmail(event_id), 30.0)
            return result

        await stream.send_message(await cancel_reply(self.edge, cancel, request.event_id))


def require_token(server: Server, token: str) -> None:
    """Refuse every call without ``authorization: Bearer <token>`` (UNAUTHENTICATED)."""
    expected = f"Bearer {token}".encode()

    async def check(event: RecvRequest) -> None:
        got = event.metadata.get("authorization", "")
        if not hmac.compare_digest(str(got).encode(), expected):
            raise GRPCError(GrpcStatus.UNAUTHENTICATED, "missing or wrong bearer token")

    listen(server, RecvRequest, check)


class GrpcServer(Actor[Any]):
    """Serves the given gRPC services on host:port while it runs.

    ``services`` is a function that builds the handler objects once the
    actor runs, from its context (refs are looked up by path).
    """

    accepts: ClassVar[tuple[type, ...]] = ()

    def __init__(
        self,
        services: Callable[[Actor[Any], AsyncioEdge], list[Any]],
        host: str,
        port: int,
        token: str | None = None,
        ssl: SSLContext | None = None,
    ) -> None:
        self.build = services
        self.host = host
        self.port = port
        self.token = token
        self.ssl = ssl  # grpc_security.server_ssl_context(config.grpc): TLS when set

    async def started(self) -> None:
        edge = current_edge()
        self.edge = edge
        self.server = IntakeServer(self.build(self, edge))
        if self.token:
            require_token(self.server, self.token)
        await edge.run(self.server.start, self.host, self.port, ssl=self.ssl)
        # grpclib types _server as AbstractServer; it is the asyncio.Server that has .sockets
        server = cast(asyncio.Server | None, self.server._server)
        sockets = server.sockets if server else []
        self.bound = [s.getsockname() for s in sockets]
        log.info(
            "gRPC listening on %s (%s, %s)",
            self.bound,
            "TLS" if self.ssl is not None else "plaintext",
            "bearer token required" if self.token else "no token: anyone who can connect may call",
        )
        self.ctx.report(lambda: {"listening": [f"{h}:{p}" for h, p, *_ in self.bound]})

    async def stopping(self) -> None:
        self.server.close()
        await self.edge.run(self.server.wait_closed)

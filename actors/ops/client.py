"""``supervisor.py send``, ``status``, ``search`` and ``cancel``: gRPC clients of a running ``up``.

They live in ops/ rather than grpc/ because ``send --batch`` is ops' ``send_batch`` (with
its progress bar), and a package imports only from the layers below it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import mimetypes
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

import msgspec

from actors.domain.schema import Status
from actors.ops.exits import Exit
from config import Config, load_config

__all__ = ["parse_vars", "positive_int", "register", "timestamp"]

STATUSES = tuple(status.value for status in Status)  # every status, as the API names them


def usage_error(line: str) -> NoReturn:
    """End the command with ``line`` on stderr and exit status 2 (a bad option or value)."""
    print(f"error: {line}", file=sys.stderr)
    raise SystemExit(Exit.CONFIG)


def parse_pairs(option: str, pairs: Sequence[str]) -> dict[str, str]:
    """``--header K=V`` / ``--meta K=V`` (repeatable) as a map; a key given twice is an error."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            usage_error(f"{option} expects KEY=VALUE, got {pair!r}")
        if key in out:
            usage_error(f"{option} {key!r} given twice")
        out[key] = value
    return out


def search_filters(tags: Sequence[str], metas: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """``search --tag`` / ``--meta``, held to the rules of a request's tags and metadata: a
    filter no email can match is a mistake to name, not an empty result."""
    from actors.domain.addressing import check_metadata, check_tags
    from actors.domain.validation import InvalidField

    metadata = parse_pairs("--meta", metas)
    try:
        checked_tags = check_tags(tags)
    except InvalidField as exc:
        usage_error(f"--tag: {exc.reason}")
    try:
        return checked_tags, check_metadata(metadata)
    except InvalidField as exc:
        key = exc.field.removeprefix("metadata")[1:-1]  # "metadata['k']" -> "'k'"
        usage_error(f"--meta {key}: {exc.reason}" if key else f"--meta: {exc.reason}")


def parse_vars(pairs: Sequence[str], json_pairs: Sequence[str] = ()) -> dict[str, Any]:
    """``--var KEY=VALUE`` (always a string) and ``--json-var KEY=JSON`` (a JSON value).

    A value is text unless the user asks otherwise: guessing JSON turned
    ``null`` into None and ``12e3`` into 12000.0 in the email.
    """
    out: dict[str, Any] = {}
    options: tuple[tuple[str, Sequence[str]], ...] = (("--var", pairs), ("--json-var", json_pairs))
    for option, items in options:
        for pair in items:
            key, sep, value = pair.partition("=")
            if not sep or not key:
                raise SystemExit(f"error: {option} expects KEY=VALUE, got {pair!r}")
            if key in out:
                raise SystemExit(f"error: variable {key!r} given twice")
            if option == "--var":
                out[key] = value
                continue
            try:
                out[key] = json.loads(value)
            except json.JSONDecodeError as exc:
                raise SystemExit(
                    f"error: --json-var {key}: not JSON: {exc.msg} ({value!r})"
                ) from None
    return out


Call = Callable[[Any], Awaitable[None]]


async def _with_client(config: Config, fn: Call, integration: bool = False) -> None:
    from grpclib.client import Channel

    from actors.grpc.security import client_ssl_context

    # Embedded: one server on auth_port serves both APIs. Distributed: integration has its own.
    g = config.grpc
    port = g.integration_port if integration and config.bus.kind != "memory" else g.auth_port
    channel = Channel(g.host, port, ssl=client_ssl_context(g))  # TLS if configured
    try:
        await fn(channel)
    finally:
        channel.close()


def _metadata(config: Config) -> dict[str, str] | None:
    token = config.grpc.token()
    return {"authorization": f"Bearer {token}"} if token else None


def _run_client(config: Config, fn: Call, integration: bool = False) -> int:
    from grpclib.exceptions import GRPCError

    try:
        asyncio.run(_with_client(config, fn, integration))
    except GRPCError as exc:
        print(f"error: {exc.status.name}: {exc.message}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        raise  # our reader went away (``search | head``): supervisor.py ends quietly
    except OSError as exc:
        print(
            f"error: no mailactors service at {config.grpc.host}:{config.grpc.auth_port} ({exc}); "
            "start one with `python supervisor.py up`",
            file=sys.stderr,
        )
        return Exit.UNAVAILABLE
    return 0


def _print_doc(doc: Any) -> None:
    from actors.grpc.convert import document_from_proto

    document = document_from_proto(doc)
    if document.latency_ms is not None:  # 4.7010000000000005 is float noise, not precision
        document = msgspec.structs.replace(document, latency_ms=round(document.latency_ms, 1))
    print(msgspec.json.encode(document).decode())


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1 (argparse names the option in its error)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def timestamp(text: str) -> datetime:
    """``2026-12-01``, ``2026-12-01T17:00``, ``...Z`` or with an offset; naive means UTC."""
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a date or time like 2026-12-01 or 2026-12-01T17:00Z, got {text!r}"
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def read_attachment(path: str) -> tuple[str, str, bytes]:
    """(file name, content type guessed from the name, bytes) of ``send --attach FILE``."""
    try:
        content = Path(path).read_bytes()
    except OSError as exc:
        raise SystemExit(f"error: --attach {path}: {exc.strerror}") from None
    content_type = mimetypes.guess_type(path)[0] or "application/octet-stream"
    return Path(path).name, content_type, content


def cmd_send(args: argparse.Namespace) -> int:
    from actors.grpc.convert import variables_to_struct
    from protos import email_grpc, email_pb2

    config = load_config(args.profile)
    if args.batch:
        from actors.grpc.security import client_ssl_context
        from actors.ops.send_batch import send_batch

        return send_batch(
            config.grpc.host, config.grpc.auth_port, _metadata(config), args.batch,
            concurrency=args.concurrency, quiet=args.quiet, ssl=client_ssl_context(config.grpc),
            batch_size=args.batch_size,
        )
    if not (args.to and args.template):
        print("error: send needs --to and --template (or --batch FILE)", file=sys.stderr)
        return 2

    variables = parse_vars(args.var, args.json_var)
    headers = parse_pairs("--header", args.header)
    meta = parse_pairs("--meta", args.meta)
    attachments = [read_attachment(path) for path in args.attach]

    async def send(channel: Any) -> None:
        stub = email_grpc.AuthServiceStub(channel)
        request = email_pb2.RequestEmailRequest(
            recipient=args.to,
            template=args.template,
            variables=variables_to_struct(variables),
            category=args.category,
            cc=args.cc,
            bcc=args.bcc,
            headers=headers,
            tags=args.tag,
            metadata=meta,
        )
        optional = {
            "subject": args.subject,
            "idempotency_key": args.key,
            "from_address": args.from_address,
            "from_name": args.from_name,
            "reply_to": args.reply_to,
            "send_at": args.send_at,
        }
        for name, value in optional.items():
            if value is not None:
                setattr(request, name, value)
        for name, content_type, content in attachments:
            request.attachments.add(filename=name, content_type=content_type, content=content)
        reply = await stub.RequestEmail(request, metadata=_metadata(config))
        status = email_pb2.EmailStatus.Name(reply.status)
        print(json.dumps({"eventId": reply.event_id, "duplicate": reply.duplicate,
                          "status": status}))

    return _run_client(config, send)


def cmd_status(args: argparse.Namespace) -> int:
    from protos import email_grpc, email_pb2

    config = load_config(args.profile)

    async def status(channel: Any) -> None:
        stub = email_grpc.IntegrationServiceStub(channel)
        reply = await stub.GetEmail(
            email_pb2.GetEmailRequest(event_id=args.event_id), metadata=_metadata(config)
        )
        _print_doc(reply.document)

    return _run_client(config, status, integration=True)


def cmd_search(args: argparse.Namespace) -> int:
    from actors.grpc.convert import status_to_proto
    from protos import email_grpc, email_pb2

    tags, metadata = search_filters(args.tag, args.meta)
    config = load_config(args.profile)

    async def search(channel: Any) -> None:
        stub = email_grpc.IntegrationServiceStub(channel)
        request = email_pb2.SearchEmailsRequest(page_size=args.limit, page_token=args.page_token)
        if args.recipient:
            request.recipient = args.recipient
        if args.status:
            request.status = status_to_proto(Status(args.status))
        if args.category:
            request.category = args.category
        request.tags.extend(tags)
        request.metadata.update(metadata)
        if args.since is not None:
            request.created_from.FromDatetime(args.since)
        if args.until is not None:
            request.created_to.FromDatetime(args.until)
        reply = await stub.SearchEmails(request, metadata=_metadata(config))
        for doc in reply.documents:
            _print_doc(doc)
        print(json.dumps({"total": reply.total, "nextPageToken": reply.next_page_token}))

    return _run_client(config, search, integration=True)


def cmd_cancel(args: argparse.Namespace) -> int:
    from protos import email_grpc, email_pb2

    config = load_config(args.profile)

    async def cancel(channel: Any) -> None:
        stub = email_grpc.AuthServiceStub(channel)
        reply = await stub.CancelEmail(
            email_pb2.CancelEmailRequest(event_id=args.event_id), metadata=_metadata(config)
        )
        print(json.dumps({"eventId": reply.event_id,
                          "status": email_pb2.EmailStatus.Name(reply.status)}))

    return _run_client(config, cancel)


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``send``, ``status``, ``search`` and ``cancel`` to supervisor.py's subcommands."""
    send = commands.add_parser("send", help="request one email (through gRPC)")
    send.add_argument("--to", help="the recipient's address")
    send.add_argument("--template", help="a template's name (a directory under templates/)")
    send.add_argument("--var", action="append", default=[], metavar="KEY=VALUE",
                      help="a template variable, always a string (repeatable)")
    send.add_argument("--json-var", action="append", default=[], metavar="KEY=JSON",
                      help='a template variable given as JSON: a number, list, object... '
                      "(repeatable; null is refused when the template prints it)")
    send.add_argument("--attach", action="append", default=[], metavar="FILE",
                      help="attach FILE, its content type guessed from its name (repeatable; "
                      "limits.allowed_attachment_types and the size limits apply)")
    send.add_argument("--category", default="transactional",
                      help="the email's category (default transactional)")
    send.add_argument("--subject", help="a subject instead of the template's")
    send.add_argument("--key", help="idempotency key: a repeat returns the first eventId")
    send.add_argument("--batch", metavar="FILE", help="send every request of a JSON-lines file "
                      '({"to": ..., "template": ..., "variables": {...}, "key": ...} per line) '
                      "with a progress bar; one JSON answer per line on stdout")
    send.add_argument("--from", dest="from_address", metavar="ADDR",
                      help="the sender: one of [api] senders (default: the category's, else "
                      "provider.sender)")
    send.add_argument("--from-name", help="the sender's display name")
    send.add_argument("--reply-to", metavar="ADDR", help="where replies go (Reply-To)")
    send.add_argument("--cc", action="append", default=[], metavar="ADDR", help="(repeatable)")
    send.add_argument("--bcc", action="append", default=[], metavar="ADDR",
                      help="receives the email, never in its headers (repeatable)")
    send.add_argument("--header", action="append", default=[], metavar="NAME=VALUE",
                      help="an extra header: X-*, List-Id, References, In-Reply-To... "
                      "(repeatable)")
    send.add_argument("--tag", action="append", default=[], help="(repeatable; searchable)")
    send.add_argument("--meta", action="append", default=[], metavar="KEY=VALUE",
                      help="metadata (repeatable; searchable)")
    send.add_argument("--send-at", metavar="RFC3339",
                      help="schedule it: 2026-12-24T09:00:00+01:00 (cancel with `cancel ID`)")
    send.add_argument("--concurrency", type=positive_int, default=4,
                      help="--batch: RequestEmails calls in flight")
    send.add_argument("--batch-size", type=positive_int, default=500,
                      help="--batch: requests per RequestEmails call (at most [api] max_batch)")
    send.add_argument("--quiet", action="store_true", help="--batch: no progress bar")
    send.set_defaults(handler=cmd_send)
    status = commands.add_parser("status", help="one email's document, as JSON")
    status.add_argument("event_id", help="the eventId `send` printed")
    status.set_defaults(handler=cmd_status)
    search = commands.add_parser(
        "search", help="search emails: one JSON document per line, then the total"
    )
    search.add_argument("--recipient", help="exactly this address")
    search.add_argument("--status", type=str.upper, choices=STATUSES,
                        help="one status, in any case: " + ", ".join(STATUSES))
    search.add_argument("--category", help="exactly this category")
    search.add_argument("--since", type=timestamp, metavar="TIME",
                        help="created at or after TIME (2026-12-01 or 2026-12-01T17:00Z; UTC "
                        "unless an offset is given)")
    search.add_argument("--until", type=timestamp, metavar="TIME",
                        help="created before TIME")
    search.add_argument("--tag", action="append", default=[],
                        help="emails with this tag (repeatable: all of them)")
    search.add_argument("--meta", action="append", default=[], metavar="KEY=VALUE",
                        help="emails whose metadata has KEY=VALUE (repeatable: all of them)")
    search.add_argument("--limit", type=positive_int, default=20,
                        help="documents per page (default 20)")
    search.add_argument("--page-token", default="",
                        help="the nextPageToken of the previous page, for the next one")
    search.set_defaults(handler=cmd_search)
    cancel = commands.add_parser("cancel", help="cancel a scheduled email before it is due")
    cancel.add_argument("event_id", help="the eventId `send --send-at` printed")
    cancel.set_defaults(handler=cmd_cancel)

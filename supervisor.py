"""mailactors command line: run the services and talk to them.

    python supervisor.py up [--profile embedded]   run until Ctrl-C
    python supervisor.py demo                       run, send three samples, print, exit
    python supervisor.py send --to ADDR --template NAME [--var k=v ...] [--json-var k=JSON ...] [--key KEY]
    python supervisor.py status EVENT_ID            the document, as JSON
    python supervisor.py search [--recipient ..] [--status ..] [--category ..]
    python supervisor.py send --batch FILE          many requests (JSON lines), progress bar
    python supervisor.py dlq list|replay [--limit N] dead letters, with the reasons
    python supervisor.py suppression list|add ADDR|remove ADDR
    python supervisor.py soak --emails N [--faults ...] [--workers W]   the distributed
                                                    profile under faults, every email accounted for
    python supervisor.py console [SERVICE] [--json] live actor trees; --restart PATH, --pause,
                                                    --resume, --dead-letters

``send``, ``status`` and ``search`` talk gRPC to a running ``up``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

import msgspec

from config import ConfigError, load_config

log = logging.getLogger("mailactors.cli")

SAMPLES: list[tuple[str, dict[str, Any]]] = [
    ("verification", {"name": "Ada", "code": "493817", "expires_minutes": 10}),
    ("password-reset", {"name": "Ada", "reset_url": "https://example.com/reset/abc123"}),
    ("welcome", {"name": "Ada", "product": "mailactors"}),
]


def _setup_logging(level: str, fmt: str, config: Any = None) -> None:
    from actors.telemetry.logs import configure
    from actors.telemetry.redact import register_config_secrets

    if config is not None:
        register_config_secrets(config)  # their values never appear in a log line
    configure(level, fmt)


def cmd_up(args: argparse.Namespace) -> int:
    """Embedded: everything in this process. Distributed: one supervised process per service."""
    config = load_config(args.profile)
    _setup_logging(config.service.log_level, config.service.log_format, config)
    if config.bus.kind == "memory":
        from actors.profiles.embedded import run_embedded
        from runtime import run_with_asyncio_host

        run_with_asyncio_host(run_embedded, config)
        return 0
    import trio

    from actors.profiles.launcher import launcher_tree
    from runtime import run_actor_system

    tree = launcher_tree(config, args.profile, workers=args.workers, drain_s=args.drain)
    trio.run(run_actor_system, tree)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """One service in the foreground (for systemd, a container, or `up`)."""
    from actors.profiles.distributed import main_service

    config = load_config(args.profile)
    _setup_logging(config.service.log_level, config.service.log_format, config)
    main_service(args.service, config)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Start the embedded system, send the sample emails, print their final statuses."""
    from actors.auth.service import RequestEmail
    from actors.profiles.embedded import Embedded, run_embedded
    from runtime import run_with_asyncio_host

    config = load_config(args.profile)
    _setup_logging("WARNING", config.service.log_format, config)
    results: list[dict[str, Any]] = []

    async def ready(embedded: Embedded) -> None:
        for template, variables in SAMPLES:
            accepted = await embedded.request(
                RequestEmail(recipient=args.to, template=template, variables=variables)
            )
            doc = await embedded.wait_terminal(accepted.event_id)
            results.append(
                {
                    "eventId": doc.event_id,
                    "template": doc.template,
                    "status": doc.status.value,
                    "provider": doc.provider,
                    "latencyMs": round(doc.latency_ms or 0, 1),
                    "error": doc.error,
                }
            )

    run_with_asyncio_host(run_embedded, config, ready)
    for r in results:
        print(json.dumps(r))
    where = config.provider.maildir_path if config.provider.kind == "maildir" else "SMTP"
    print(f"{sum(r['status'] == 'SENT' for r in results)} of {len(results)} SENT ({where})")
    return 0 if all(r["status"] == "SENT" for r in results) else 1


# -- gRPC client commands ---------------------------------------------------------


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
                raise SystemExit(f"error: --json-var {key}: not JSON: {exc.msg} ({value!r})") from None
    return out


async def _with_client(config: Any, fn: Any, integration: bool = False) -> Any:
    from grpclib.client import Channel

    # Embedded: one server on auth_port serves both APIs. Distributed: integration has its own.
    port = config.grpc.integration_port if integration and config.bus.kind != "memory" else config.grpc.auth_port
    from actors.grpc.security import client_ssl_context

    channel = Channel(config.grpc.host, port, ssl=client_ssl_context(config.grpc))  # TLS if configured
    try:
        return await fn(channel)
    finally:
        channel.close()


def _metadata(config: Any) -> dict[str, str] | None:
    token = config.grpc.token()
    return {"authorization": f"Bearer {token}"} if token else None


def _run_client(config: Any, fn: Any, integration: bool = False) -> int:
    from grpclib.exceptions import GRPCError

    try:
        asyncio.run(_with_client(config, fn, integration))
    except GRPCError as exc:
        print(f"error: {exc.status.name}: {exc.message}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(
            f"error: no mailactors service at {config.grpc.host}:{config.grpc.auth_port} ({exc}); "
            "start one with `python supervisor.py up`",
            file=sys.stderr,
        )
        return 1
    return 0


def _print_doc(doc: Any) -> None:
    from actors.grpc.convert import document_from_proto

    print(msgspec.json.encode(document_from_proto(doc)).decode())


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
        )
    if not (args.to and args.template):
        print("error: send needs --to and --template (or --batch FILE)", file=sys.stderr)
        return 2

    variables = parse_vars(args.var, args.json_var)

    async def send(channel: Any) -> None:
        stub = email_grpc.AuthServiceStub(channel)
        request = email_pb2.RequestEmailRequest(
            recipient=args.to,
            template=args.template,
            variables=variables_to_struct(variables),
            category=args.category,
        )
        if args.subject is not None:
            request.subject = args.subject
        if args.key is not None:
            request.idempotency_key = args.key
        reply = await stub.RequestEmail(request, metadata=_metadata(config))
        print(json.dumps({"eventId": reply.event_id, "duplicate": reply.duplicate}))

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
    from actors.domain.schema import Status
    from actors.grpc.convert import status_to_proto
    from protos import email_grpc, email_pb2

    config = load_config(args.profile)

    async def search(channel: Any) -> None:
        stub = email_grpc.IntegrationServiceStub(channel)
        request = email_pb2.SearchEmailsRequest(page_size=args.limit, page_token=args.page_token)
        if args.recipient:
            request.recipient = args.recipient
        if args.status:
            request.status = status_to_proto(Status(args.status.upper()))
        if args.category:
            request.category = args.category
        reply = await stub.SearchEmails(request, metadata=_metadata(config))
        for doc in reply.documents:
            _print_doc(doc)
        print(json.dumps({"total": reply.total, "nextPageToken": reply.next_page_token}))

    return _run_client(config, search, integration=True)


def cmd_bench(args: argparse.Namespace) -> int:
    """Measure every performance target next to its baseline; last line: one JSON object."""
    from bench.suite import main as bench_main

    return bench_main(args.quick, args.only, args.json)


def cmd_console(args: argparse.Namespace) -> int:
    """The actor trees of the running services, live; or one snapshot / command."""
    from actors.ops.console import main_console

    return main_console(load_config(args.profile), args)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="supervisor.py", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--profile",
        default=os.environ.get("MAILACTORS_PROFILE", "embedded"),
        help="config profile name (config/NAME.toml) or path (default: embedded)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="run the services until Ctrl-C")
    up.add_argument("--workers", type=int, default=1, help="email-server processes (distributed)")
    up.add_argument("--drain", type=float, default=30.0, help="seconds each process gets to stop")
    up.set_defaults(fn=cmd_up)
    run = sub.add_parser("run", help="run one service of the distributed profile in the foreground")
    run.add_argument("service", choices=["integration", "email-server", "auth"])
    run.set_defaults(fn=cmd_run)
    demo = sub.add_parser("demo", help="run, send the three sample emails, print their statuses")
    demo.add_argument("--to", default="ada@example.com")
    demo.set_defaults(fn=cmd_demo)
    send = sub.add_parser("send", help="request one email (through gRPC)")
    send.add_argument("--to")
    send.add_argument("--template")
    send.add_argument("--var", action="append", default=[], metavar="KEY=VALUE",
                      help="a template variable, always a string (repeatable)")
    send.add_argument("--json-var", action="append", default=[], metavar="KEY=JSON",
                      help='a template variable given as JSON: a number, list, object... '
                      "(repeatable; null is refused when the template prints it)")
    send.add_argument("--category", default="transactional")
    send.add_argument("--subject")
    send.add_argument("--key", help="idempotency key: a repeat returns the first eventId")
    send.add_argument("--batch", metavar="FILE", help="send every request of a JSON-lines file "
                      '({"to": ..., "template": ..., "variables": {...}, "key": ...} per line) '
                      "with a progress bar; one JSON answer per line on stdout")
    send.add_argument("--concurrency", type=int, default=32, help="--batch: requests in flight")
    send.add_argument("--quiet", action="store_true", help="--batch: no progress bar")
    send.set_defaults(fn=cmd_send)
    status = sub.add_parser("status", help="one email's document, as JSON")
    status.add_argument("event_id")
    status.set_defaults(fn=cmd_status)
    search = sub.add_parser("search", help="search emails")
    search.add_argument("--recipient")
    search.add_argument("--status", choices=[s.lower() for s in ("PENDING", "SENDING", "RETRYING", "SENT", "FAILED", "SUPPRESSED")])
    search.add_argument("--category")
    search.add_argument("--limit", type=int, default=20)
    search.add_argument("--page-token", default="")
    search.set_defaults(fn=cmd_search)
    from actors.ops.console import __doc__ as console_doc
    from actors.ops.console import add_arguments as console_arguments

    console = sub.add_parser(
        "console",
        help="live view of the actor trees; --json, --restart, --pause/--resume, --dead-letters",
        description=console_doc,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    console_arguments(console)
    console.set_defaults(fn=cmd_console)
    bench = sub.add_parser("bench", help="run the benchmarks (see bench/suite.py)")
    bench.add_argument("--quick", action="store_true", help="small runs, under a minute")
    bench.add_argument("--only", action="append", metavar="NAME", help="run only this benchmark (repeatable)")
    bench.add_argument("--json", metavar="FILE", help="also write the results to FILE")
    bench.set_defaults(fn=cmd_bench)
    from actors.ops.admin import add_commands as add_guarantee_commands

    add_guarantee_commands(sub)  # dlq list|replay, suppression list|add|remove, soak
    args = parser.parse_args(argv)
    try:
        return int(args.fn(args))
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

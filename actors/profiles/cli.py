"""``supervisor.py up``, ``run`` and ``demo``: the commands that run the services.

``register`` adds them to supervisor.py's subcommands, as every subsystem's ``cli``
does: each sets ``handler``, a function of the parsed arguments returning the exit status.
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import signal
import socket
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
import trio

from config import Config, load_config

__all__ = ["SAMPLES", "register"]

log = logging.getLogger("mailactors")

SAMPLES: list[tuple[str, dict[str, Any]]] = [
    ("verification", {"name": "Ada", "code": "493817", "expires_minutes": 10}),
    ("password-reset", {"name": "Ada", "reset_url": "https://example.com/reset/abc123"}),
    ("welcome", {"name": "Ada", "product": "mailactors"}),
]


def _setup_logging(level: str, fmt: str, config: Config) -> None:
    from actors.telemetry.logs import configure
    from actors.telemetry.redact import register_config_secrets

    register_config_secrets(config)  # their values never appear in a log line
    configure(level, fmt)


async def _in_scope(scope: trio.CancelScope, fn: Callable[[], Awaitable[None]]) -> None:
    with scope:
        await fn()


def _bindable(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers bind
        try:
            probe.bind((host, port))
            return True
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            return False


def _free_port(host: str, port: int) -> int:
    """``port`` if nothing listens on it, else one the system picks (the demo only needs one)."""
    if _bindable(host, port):
        return port
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def _check_ports(config: Config, service: str) -> None:
    """Fail before anything starts when the port this process serves gRPC on is taken: the
    operator gets one line (supervisor.py's exits) instead of a tree stopping half-started.
    The servers' own bind stays the authority (something may take the port in between)."""
    g = config.grpc
    port = {"embedded": g.auth_port, "auth": g.auth_port, "integration": g.integration_port}
    wanted = port.get(service)
    if wanted and not _bindable(g.host, wanted):
        raise OSError(
            errno.EADDRINUSE,
            f"error while attempting to bind on address ('{g.host}', {wanted}): "
            "address already in use",
        )


def cmd_up(args: argparse.Namespace) -> int:
    """Embedded: everything in this process. Distributed: one supervised process per service."""
    config = load_config(args.profile)
    _setup_logging(config.service.log_level, config.service.log_format, config)
    if config.bus.kind == "memory":
        _check_ports(config, "embedded")
        from actors.profiles.embedded import run_embedded
        from runtime import run_with_asyncio_host

        run_with_asyncio_host(run_embedded, config)
        return 0

    from actors.profiles.launcher import SaidElsewhere, check_secrets, launcher_tree

    logging.getLogger("runtime.supervisor").addFilter(SaidElsewhere())

    check_secrets(config)  # one line now, rather than each process failing on its own
    for service in ("integration", "auth"):
        _check_ports(config, service)
    from runtime import run_actor_system

    tree = launcher_tree(config, args.profile, workers=args.workers, drain_s=args.drain)
    trio.run(run_actor_system, tree)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """One service in the foreground (for systemd, a container, or `up`)."""
    from actors.profiles.distributed import main_service

    config = load_config(args.profile)
    _setup_logging(config.service.log_level, config.service.log_format, config)
    _check_ports(config, args.service)
    main_service(args.service, config)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Start the embedded system, send the sample emails, print their final statuses."""
    from actors.auth.service import RequestEmail
    from actors.profiles.embedded import Embedded, run_embedded
    from runtime import run_with_asyncio_host

    config = load_config(args.profile)
    # Quiet unless asked (--log-level): the demo's output is its results.
    _setup_logging(getattr(args, "log_level", None) or "WARNING", config.service.log_format, config)
    g = config.grpc
    port = _free_port(g.host, g.auth_port)
    if port != g.auth_port:
        print(
            f"{g.host}:{g.auth_port} is in use; the demo's gRPC API listens on {g.host}:{port} "
            "instead (choose one with MAILACTORS__GRPC__AUTH_PORT=PORT)",
            file=sys.stderr,
        )
        config = msgspec.structs.replace(config, grpc=msgspec.structs.replace(g, auth_port=port))
    results: list[dict[str, Any]] = []
    interrupted = False

    async def samples(embedded: Embedded) -> None:
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

    async def ready(embedded: Embedded) -> None:
        # Ctrl-C as in `up`: the first stops the demo gracefully, a second at once. (Its own
        # receiver: run_embedded's only queues signals while `ready` runs.)
        nonlocal interrupted
        system = embedded.system
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:

                async def send_then_finish() -> None:
                    await samples(embedded)
                    nursery.cancel_scope.cancel()

                async def stopped_then_finish() -> None:
                    await system.stopped.wait()
                    nursery.cancel_scope.cancel()

                sending = trio.CancelScope()
                nursery.start_soon(_in_scope, sending, send_then_finish)
                async for signum in signals:
                    if not interrupted:
                        interrupted = True
                        log.info("demo: stopping (signal %d)", signum)
                        sending.cancel()
                        system.request_stop()
                        nursery.start_soon(stopped_then_finish)
                    else:
                        log.warning("demo: second signal, cancelling")
                        system.cancel()

    run_with_asyncio_host(run_embedded, config, ready)
    if interrupted:
        print(f"interrupted: {len(results)} of {len(SAMPLES)} sample(s) done", file=sys.stderr)
        return 130
    for r in results:
        print(json.dumps(r))
    where = config.provider.maildir_path if config.provider.kind == "maildir" else "SMTP"
    print(f"{sum(r['status'] == 'SENT' for r in results)} of {len(results)} SENT ({where})")
    return 0 if all(r["status"] == "SENT" for r in results) else 1


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``up``, ``run`` and ``demo`` to supervisor.py's subcommands."""
    up = commands.add_parser("up", help="run the services until Ctrl-C")
    up.add_argument("--workers", type=int, default=1, help="email-server processes (distributed)")
    up.add_argument("--drain", type=float, default=30.0, help="seconds each process gets to stop")
    up.set_defaults(handler=cmd_up)
    run = commands.add_parser(
        "run", help="run one service of the distributed profile in the foreground"
    )
    run.add_argument(
        "service",
        choices=["integration", "email-server", "auth"],
        help="the service this process runs (start integration first, auth last)",
    )
    run.set_defaults(handler=cmd_run)
    demo = commands.add_parser(
        "demo", help="run, send the three sample emails, print their statuses"
    )
    demo.add_argument(
        "--to", default="ada@example.com", help="the samples' recipient (default ada@example.com)"
    )
    demo.set_defaults(handler=cmd_demo)

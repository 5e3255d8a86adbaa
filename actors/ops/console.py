"""``supervisor.py console``: the actor trees of running services, live, and commands on them.

It finds the running processes by their control sockets in ``service.run_dir``
(``integration.sock``, ``auth.sock``, ``email-server-0.sock``, ...,
``embedded.sock``), or talks to one TCP endpoint (``--tcp HOST:PORT``, with the
token of ``control.token_env`` / ``control.token_file``). A SERVICE argument
picks one instance (``email-server-1``) or all instances of a service
(``email-server``).

    console [SERVICE]                  live view, refreshed every --interval seconds
    console [SERVICE] --json           one snapshot of every instance as JSON, then exit
    console [SERVICE] --restart PATH   crash PATH on purpose; its supervisor restarts it
    console [SERVICE] --pause | --resume   stop / restart taking new messages from the bus
    console [SERVICE] --dead-letters   the runtime's recent dead letters and the bus's DLQ
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio
from rich import box
from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from actors.ops.client import positive_int
from actors.ops.console_view import Rates, View, ago, render
from actors.ops.exits import Exit
from config import Config, load_config
from runtime import ControlClient, ControlError, ControlRefused

__all__ = [
    "Rates",
    "Target",
    "decode_keys",
    "discover",
    "fetch",
    "fetch_dead_letters",
    "main_console",
    "register",
    "render",
]

CALL_TIMEOUT = 15.0


@dataclass(frozen=True)
class Target:
    """One instance's control endpoint: a Unix socket, or TCP with a token."""

    name: str
    socket: Path | None = None
    tcp: tuple[str, int] | None = None
    token: str | None = field(default=None, repr=False)

    async def connect(self) -> ControlClient:
        if self.socket is not None:
            return await ControlClient.connect_unix(self.socket)
        assert self.tcp is not None and self.token is not None
        return await ControlClient.connect_tcp(*self.tcp, self.token)

    async def call(self, cmd: str, **args: Any) -> Any:
        with trio.fail_after(CALL_TIMEOUT):
            async with await self.connect() as client:
                return await client.call(cmd, **args)


def matches(instance: str, service: str | None) -> bool:
    """``email-server`` matches ``email-server``, ``email-server-0``, ``email-server-1234``."""
    if not service or instance == service:
        return True
    prefix = f"{service}-"
    return instance.startswith(prefix) and instance[len(prefix) :].isdigit()


def discover(run_dir: Path, service: str | None = None) -> list[Target]:
    """The control sockets in ``run_dir`` whose instance matches ``service``, by name."""
    try:
        sockets = sorted(p for p in run_dir.glob("*.sock") if p.is_socket())
    except OSError:
        return []
    return [Target(p.stem, socket=p) for p in sockets if matches(p.stem, service)]


async def fetch(
    targets: list[Target], cmd: str = "snapshot", **args: object
) -> tuple[dict[str, Any], dict[str, str]]:
    """Ask every target at once: (results by instance, errors by instance).

    A stale socket (its process died) is left out silently; other failures
    (permission denied, a refused token, a timeout) are errors.
    """
    results: dict[str, Any] = {}
    errors: dict[str, str] = {}

    async def one(target: Target) -> None:
        try:
            results[target.name] = await target.call(cmd, **args)
        except ConnectionRefusedError:
            if target.tcp is not None:
                errors[target.name] = f"nothing listens at {target.tcp[0]}:{target.tcp[1]}"
        except FileNotFoundError:
            pass  # gone between discovery and connect
        except PermissionError:
            errors[target.name] = (
                f"permission denied on {target.socket} (run as the service's user)"
            )
        except ControlRefused as exc:
            errors[target.name] = str(exc)
        except ControlError as exc:
            errors[target.name] = str(exc)
        except trio.TooSlowError:
            errors[target.name] = f"no answer within {CALL_TIMEOUT:g}s"
        except OSError as exc:
            errors[target.name] = f"{type(exc).__name__}: {exc}"

    async with trio.open_nursery() as nursery:
        for target in targets:
            nursery.start_soon(one, target)
    return dict(sorted(results.items())), dict(sorted(errors.items()))


async def fetch_dead_letters(
    targets: list[Target], limit: int
) -> tuple[dict[str, Any], dict[str, str]]:
    """Every target's runtime dead letters, and the bus's dead-letter queue read once.

    The broker's DLQ is one queue shared by every service: asked through all of
    them it was read by each at once. The first target that answers reads it;
    the others are asked for their runtime dead letters only.
    """
    results: dict[str, Any] = {}
    errors: dict[str, str] = {}
    rest = list(targets)
    while rest:
        first = rest.pop(0)
        answer, error = await fetch([first], "dead_letters", limit=limit)
        results.update(answer)
        errors.update(error)
        if answer:
            break
    if rest:
        answer, error = await fetch(rest, "dead_letters", limit=limit, external=False)
        results.update(answer)
        errors.update(error)
    return dict(sorted(results.items())), dict(sorted(errors.items()))


# -- the command ----------------------------------------------------------------------


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``console`` to supervisor.py's subcommands."""
    parser = commands.add_parser(
        "console",
        help="live view of the actor trees; --json, --restart, --pause/--resume, --dead-letters",
        description=__doc__,
    )
    parser.set_defaults(handler=lambda args: main_console(load_config(args.profile), args))
    parser.add_argument(
        "service",
        nargs="?",
        help="an instance (email-server-1) or a service (email-server: all its workers); "
        "default: every running one",
    )
    parser.add_argument("--json", action="store_true", help="print one snapshot as JSON and exit")
    what = parser.add_mutually_exclusive_group()
    what.add_argument(
        "--restart",
        metavar="PATH",
        help="crash the actor at PATH (e.g. email-server/throttler); its supervisor restarts it",
    )
    what.add_argument("--pause", action="store_true", help="stop taking new messages from the bus")
    what.add_argument("--resume", action="store_true", help="take messages from the bus again")
    what.add_argument(
        "--dead-letters",
        action="store_true",
        help="the runtime's recent dead letters and the bus's dead-letter queue",
    )
    parser.add_argument(
        "--limit", type=positive_int, default=20, help="dead letters to show (default 20)"
    )
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes")
    parser.add_argument(
        "--refreshes",
        type=positive_int,
        default=0,
        help="stop the live view after N refreshes (default: until q or Ctrl-C)",
    )
    parser.add_argument(
        "--all-actors",
        action="store_true",
        help="one row per actor, even numbered siblings (sender-0..31 are one row otherwise; "
        "the key e switches)",
    )
    parser.add_argument(
        "--tcp",
        metavar="HOST:PORT",
        help="one TCP control endpoint instead of the sockets in service.run_dir "
        "(token from control.token_env / control.token_file)",
    )


SERVICES = ("integration", "email-server", "auth")


def _targets(config: Config, args: argparse.Namespace) -> tuple[list[Target], str]:
    if args.tcp:
        host, _, port = args.tcp.rpartition(":")
        token = config.control.token()
        if not token:
            raise SystemExit("--tcp needs the token: set control.token_env or control.token_file")
        return [
            Target(args.service or args.tcp, tcp=(host or "127.0.0.1", int(port)), token=token)
        ], args.tcp
    run_dir = Path(config.service.run_dir)
    targets = discover(run_dir, args.service)
    if targets or not args.service:
        return targets, str(run_dir)
    running = discover(run_dir)
    embedded = [t for t in running if t.name == "embedded"]
    if embedded and any(matches(args.service, service) for service in SERVICES):
        # The embedded profile runs every service in one process: that process it is.
        if not getattr(args, "_told", False):
            print(f"{args.service} runs inside the embedded process: using it", file=sys.stderr)
            args._told = True
        return embedded, str(run_dir)
    names = ", ".join(t.name for t in running) or "none"
    return [], f"{run_dir} for {args.service!r} (running there: {names})"


def _print_json(data: object) -> None:
    print(json.dumps(data, indent=2, sort_keys=False, default=str))


# What a terminal sends for the keys the live view takes, beyond plain characters.
_KEYS = {
    b"\x1b[A": "up", b"\x1b[B": "down", b"\x1b[5~": "pgup", b"\x1b[6~": "pgdn",
    b"\x1b[H": "home", b"\r": "enter", b"\n": "enter",
}  # fmt: skip


def decode_keys(data: bytes) -> list[str]:
    """Keys from what a terminal in cbreak mode sent: arrows and pages, else characters
    (a lone escape is ``esc``)."""
    keys: list[str] = []
    while data:
        for seq, name in _KEYS.items():
            if data.startswith(seq):
                keys.append(name)
                data = data[len(seq) :]
                break
        else:
            if data.startswith(b"\x1b"):
                keys.append("esc")
                data = data[1:]
            else:
                keys.append(data[:1].decode(errors="replace"))
                data = data[1:]
    return keys


async def _read_keys(send: trio.MemorySendChannel[str]) -> None:
    """Keys typed on the terminal, until cancelled; the terminal is put back as it was."""
    import termios
    import tty

    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    tty.setcbreak(fd)
    try:
        async with trio.lowlevel.FdStream(os.dup(fd)) as stdin:
            while data := await stdin.receive_some(64):
                for key in decode_keys(data):
                    await send.send(key)
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _none_running(where: str) -> int:
    """Nothing to show or steer: said on stderr (stdout stays for what was asked), status 1."""
    print(f"no running service found in {where}", file=sys.stderr)
    return Exit.FAILED


def _print_errors(err: Console, errors: Mapping[str, str]) -> None:
    """What went wrong, one line per instance, on stderr: stdout is for what was asked."""
    for name, e in errors.items():
        err.print(f"[red]{name}: {e}[/red]", highlight=False, soft_wrap=True)


async def _live(config: Config, args: argparse.Namespace, console: Console) -> int:
    targets, where = _targets(config, args)
    if not targets:
        return _none_running(where)
    rates = Rates()
    view = View(expand=args.all_actors)
    keys = sys.stdin.isatty()
    shown = 0
    with Live(console=console, auto_refresh=False, redirect_stdout=False) as live:
        async with trio.open_nursery() as nursery:
            send, receive = trio.open_memory_channel[str](16)
            if keys:
                nursery.start_soon(_read_keys, send)

            def draw() -> None:
                size = console.size
                live.update(
                    render(
                        answers,
                        errors,
                        rates,
                        where,
                        width=size.width,
                        height=size.height,
                        view=view,
                        keys=keys,
                    ),
                    refresh=True,
                )

            while True:
                targets, where = _targets(config, args)
                answers, errors = await fetch(targets)
                draw()
                shown += 1
                if args.refreshes and shown >= args.refreshes:
                    nursery.cancel_scope.cancel()
                    return 0
                with trio.move_on_after(args.interval):
                    async for key in receive:
                        if not view.key(key, list(answers)):
                            nursery.cancel_scope.cancel()
                            return 0
                        draw()
    return 0  # not reached: the loop ends by a return


async def _snapshot(
    config: Config, args: argparse.Namespace, console: Console, err: Console
) -> int:
    """Not a terminal (a pipe, a file): the live view drawn once, in full; errors on stderr."""
    targets, where = _targets(config, args)
    answers, errors = await fetch(targets)
    if not answers and not errors:
        return _none_running(where)
    if answers:
        console.print(render(answers, {}, Rates(), where, width=console.width, height=None))
    _print_errors(err, errors)
    return Exit.OK if answers and not errors else Exit.FAILED


async def _command(config: Config, args: argparse.Namespace, console: Console, err: Console) -> int:
    targets, where = _targets(config, args)
    if not targets:
        return _none_running(where)
    if args.restart:
        results, errors = await fetch(targets, "restart", path=args.restart)
        missing = {n: e for n, e in errors.items() if e.startswith("no actor at")}
        errors = {n: e for n, e in errors.items() if n not in missing}
        if args.json:
            _print_json({"restarted": results, "errors": errors})
        for name, r in results.items():
            if args.json:
                continue
            if r["restarted"]:
                console.print(
                    f"{name}: {r['path']} crashed on purpose and restarted by its "
                    f"supervisor (restarts: {r['restarts']})",
                    highlight=False,
                )
            else:
                console.print(
                    f"[yellow]{name}: {r['path']} crashed on purpose; not running again "
                    f"yet (state {r['state']}, restarts: {r['restarts']})[/yellow]",
                    highlight=False,
                )
        _print_errors(err, errors)
        if not results:
            if missing and not errors:
                err.print(
                    f"[red]no actor at {args.restart!r} in {', '.join(sorted(missing))}[/red]",
                    highlight=False,
                    soft_wrap=True,
                )
            return Exit.FAILED
        return Exit.FAILED if errors else Exit.OK
    if args.pause or args.resume:
        cmd = "pause" if args.pause else "resume"
        results, errors = await fetch(targets, cmd)
        if args.json:
            _print_json({cmd: results, "errors": errors})
        else:
            for name, r in results.items():
                state = "paused" if r["intake"]["paused"] else "taking messages"
                console.print(f"{name}: intake {state}" + ("" if r["changed"] else " (already)"))
            _print_errors(err, errors)
        return Exit.OK if results and not errors else Exit.FAILED
    if args.dead_letters:
        results, errors = await fetch_dead_letters(targets, args.limit)
        if args.json:
            _print_json({"dead_letters": results, "errors": errors})
        else:
            _print_dead_letters(console, results)
            _print_errors(err, errors)
        return Exit.OK if results and not errors else Exit.FAILED
    results, errors = await fetch(targets)
    if args.json:
        _print_json({"services": results, "errors": errors})
        return Exit.OK if results and not errors else Exit.FAILED
    raise AssertionError("unreachable")


def _print_dead_letters(console: Console, results: Mapping[str, Any]) -> None:
    for name, r in results.items():
        console.print(Text(f"{name}: {r['count']} dead letters in the runtime", style="bold"))
        if r["recent"]:
            table = Table(box=box.SIMPLE_HEAD)
            for column in ("when", "to", "message", "reason"):
                table.add_column(column)
            for d in r["recent"]:
                table.add_row(ago(d["at"]), d["path"], d["message_type"], d["reason"])
            console.print(table)
        external = r.get("external")
        if external is None:
            continue
        shown = f"the first {len(external)}" if external else "empty"
        console.print(Text(f"{name}: bus dead-letter queue: {shown}", style="bold"))
        if external:
            dlq = Table(box=box.SIMPLE_HEAD)
            for column in ("from queue", "eventId", "reason"):
                dlq.add_column(column)
            for d in external:
                dlq.add_row(d["queue"], d.get("eventId") or "-", d["reason"])
            console.print(dlq)


def main_console(config: Config, args: argparse.Namespace) -> int:
    """Entry point of ``supervisor.py console``."""
    console = Console()
    err = Console(stderr=True)
    live = not (args.json or args.restart or args.pause or args.resume or args.dead_letters)
    try:
        if live:
            if args.interval <= 0 or not math.isfinite(args.interval):
                raise SystemExit("--interval must be a positive number of seconds")
            if not console.is_terminal:
                return trio.run(_snapshot, config, args, console, err)
            return trio.run(_live, config, args, console)
        return trio.run(_command, config, args, console, err)
    except KeyboardInterrupt:
        return Exit.INTERRUPTED
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return Exit.FAILED

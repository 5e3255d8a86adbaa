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
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio
from rich import box
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from config import Config, load_config
from runtime import ControlClient, ControlError, ControlRefused

__all__ = [
    "Target",
    "discover",
    "fetch",
    "fetch_dead_letters",
    "main_console",
    "register",
    "render",
]

CALL_TIMEOUT = 15.0
STATE_STYLES = {
    "running": "green",
    "starting": "cyan",
    "restarting": "yellow",
    "stopping": "magenta",
    "stopped": "red",
}


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


# -- the live view ------------------------------------------------------------------


class Rates:
    """Messages per second per actor: the difference of ``processed`` between two snapshots."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[float, dict[str, int]]] = {}

    def update(self, instance: str, snapshot: Mapping[str, Any]) -> dict[str, float]:
        taken_at = float(snapshot["taken_at"])
        processed = {a["path"]: int(a["processed"]) for a in snapshot["actors"]}
        previous = self._last.get(instance)
        self._last[instance] = (taken_at, processed)
        if previous is None or taken_at <= previous[0]:
            return {}
        elapsed = taken_at - previous[0]
        return {
            path: max(0, n - previous[1].get(path, n)) / elapsed for path, n in processed.items()
        }


def _ago(at: float) -> str:
    seconds = max(0.0, time.time() - at)
    if seconds < 120:
        return f"{seconds:.0f}s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m ago"
    return f"{seconds / 3600:.0f}h ago"


def _short(value: object, limit: int = 48) -> str:
    text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _report_text(extra: Mapping[str, Any] | None) -> str:
    if not extra:
        return ""
    parts = []
    for key, value in extra.items():
        if key == "buckets" or isinstance(value, dict | list):
            continue
        parts.append(f"{key}={value}")
    return _short(" ".join(parts), 48)


def tree_order(actors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Parents before their children, siblings in the order they were registered (started)."""
    index = {a["path"]: i for i, a in enumerate(actors)}

    def key(a: Mapping[str, Any]) -> list[int]:
        parts = a["path"].split("/")
        return [index.get("/".join(parts[: i + 1]), -1) for i in range(len(parts))]

    return sorted(actors, key=key)


def _actor_table(snapshot: Mapping[str, Any], rates: Mapping[str, float]) -> Table:
    table = Table(box=box.SIMPLE_HEAD, expand=True, pad_edge=False)
    table.add_column("actor", no_wrap=True)
    table.add_column("state", no_wrap=True)
    table.add_column("mailbox", no_wrap=True, width=14)
    table.add_column("depth", justify="right", no_wrap=True)
    table.add_column("msg/s", justify="right", no_wrap=True)
    table.add_column("processed", justify="right")
    table.add_column("restarts", justify="right")
    table.add_column("reports", overflow="fold")
    table.add_column("last error", overflow="fold")
    for a in tree_order(snapshot["actors"]):
        path = a["path"]
        depth_level = path.count("/")
        name = path.rsplit("/", 1)[-1]
        label = Text("  " * depth_level + name, style="bold" if a["kind"] == "supervisor" else "")
        state = a["state"]
        capacity = int(a["mailbox_capacity"])
        depth = int(a["mailbox_depth"])
        if capacity:
            bar: RenderableType = ProgressBar(total=capacity, completed=depth, width=14)
            depth_text = f"{depth}/{capacity}"
        else:
            bar, depth_text = Text(""), ""
        rate = rates.get(path)
        error = a.get("last_error")
        error_text = Text("")
        if error:
            error_text = Text(
                f"{error['type']}: {_short(error['message'], 60)} ({_ago(error['at'])})",
                style="red",
            )
        restarts = int(a["restarts"])
        table.add_row(
            label,
            Text(state, style=STATE_STYLES.get(state, "")),
            bar,
            depth_text,
            "-" if rate is None else f"{rate:,.1f}",
            f"{a['processed']:,}",
            Text(str(restarts), style="yellow" if restarts else ""),
            _report_text(a.get("extra")),
            error_text,
        )
    return table


def _throttle_table(snapshot: Mapping[str, Any]) -> RenderableType | None:
    rows = []
    throttlers = 0
    for a in snapshot["actors"]:
        extra = a.get("extra") or {}
        buckets = extra.get("buckets")
        if not isinstance(buckets, dict):
            continue
        throttlers += 1
        for name, b in buckets.items():
            rows.append((a["path"], name, b, extra.get("waits", 0)))
    if not rows:
        return (
            Text("throttle buckets: none (no limits configured)", style="dim")
            if throttlers
            else None
        )
    table = Table(title="throttle buckets", box=box.SIMPLE_HEAD, title_justify="left")
    for column in ("throttler", "bucket", "rate/s", "burst", "tokens", "waiting", "waits"):
        table.add_column(column, justify="left" if column in ("throttler", "bucket") else "right")
    for path, name, b, waits in rows:
        tokens = float(b.get("tokens", 0))
        table.add_row(
            path,
            str(name),
            f"{b.get('rate', 0):g}",
            f"{b.get('burst', 0):g}",
            Text(f"{tokens:.1f}", style="yellow" if tokens < 0 else ""),
            str(b.get("waiting", 0)),
            str(waits),
        )
    return table


def _queue_table(info: Mapping[str, Any]) -> RenderableType | None:
    queues = info.get("queues")
    if queues is None:
        error = info.get("queues_error")
        return Text(f"queues: {error}", style="red") if error else None
    dlq = info.get("dead_letter_queue")
    table = Table(title="bus queues", box=box.SIMPLE_HEAD, title_justify="left")
    table.add_column("queue")
    table.add_column("ready", justify="right")
    for name, depth in sorted(queues.items()):
        style = "red" if name == dlq and depth else ""
        table.add_row(Text(name, style=style), Text(str(depth), style=style))
    return table


def render_instance(name: str, answer: Mapping[str, Any], rates: Mapping[str, float]) -> Panel:
    snapshot = answer["snapshot"]
    info = answer.get("info") or {}
    intake = answer.get("intake") or {}
    title = Text.assemble((name, "bold"), f"  pid {answer.get('pid')}")
    if intake.get("paused"):
        title.append("  INTAKE PAUSED", style="bold yellow")
    header = Text()
    header.append(f"{len(snapshot['actors'])} actors, dead letters {snapshot['dead_letters']}")
    if info.get("metrics"):
        header.append(f", metrics {info['metrics']}")
    parts: list[RenderableType] = [header, _actor_table(snapshot, rates)]
    extras = [t for t in (_throttle_table(snapshot), _queue_table(info)) if t is not None]
    if extras:
        grid = Table.grid(padding=(0, 4))
        for _ in extras:
            grid.add_column()
        grid.add_row(*extras)
        parts.append(grid)
    return Panel(Group(*parts), title=title, title_align="left", border_style="blue")


def render(
    answers: Mapping[str, Any], errors: Mapping[str, str], rates: Rates, where: str
) -> RenderableType:
    panels: list[RenderableType] = []
    for name, answer in answers.items():
        panels.append(render_instance(name, answer, rates.update(name, answer["snapshot"])))
    for name, error in errors.items():
        panels.append(Text(f"{name}: {error}", style="red"))
    if not panels:
        panels.append(Text(f"no running service found in {where}", style="yellow"))
    stamp = time.strftime("%H:%M:%S")
    panels.append(Text(f"{stamp}  {len(answers)} running  (Ctrl-C to quit)", style="dim"))
    return Group(*panels)


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
    parser.add_argument("--limit", type=int, default=20, help="dead letters to show (default 20)")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes")
    parser.add_argument(
        "--refreshes",
        type=int,
        default=0,
        help="stop the live view after N refreshes (default: until Ctrl-C)",
    )
    parser.add_argument(
        "--tcp",
        metavar="HOST:PORT",
        help="one TCP control endpoint instead of the sockets in service.run_dir "
        "(token from control.token_env / control.token_file)",
    )


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
    return discover(run_dir, args.service), str(run_dir)


def _print_json(data: object) -> None:
    print(json.dumps(data, indent=2, sort_keys=False, default=str))


async def _live(config: Config, args: argparse.Namespace, console: Console) -> None:
    rates = Rates()
    shown = 0
    with Live(console=console, auto_refresh=False, redirect_stdout=False) as live:
        while True:
            targets, where = _targets(config, args)
            answers, errors = await fetch(targets)
            live.update(render(answers, errors, rates, where), refresh=True)
            shown += 1
            if args.refreshes and shown >= args.refreshes:
                return
            await trio.sleep(args.interval)


async def _command(config: Config, args: argparse.Namespace, console: Console) -> int:
    targets, where = _targets(config, args)
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
        for name, e in errors.items():
            console.print(f"[red]{name}: {e}[/red]", highlight=False)
        if not results:
            if missing and not errors:
                console.print(
                    f"[red]no actor at {args.restart!r} in {', '.join(sorted(missing))}[/red]",
                    highlight=False,
                )
            elif not targets:
                console.print(f"[red]no running service found in {where}[/red]")
            return 1
        return 1 if errors else 0
    if args.pause or args.resume:
        cmd = "pause" if args.pause else "resume"
        results, errors = await fetch(targets, cmd)
        if args.json:
            _print_json({cmd: results, "errors": errors})
        else:
            for name, r in results.items():
                state = "paused" if r["intake"]["paused"] else "taking messages"
                console.print(f"{name}: intake {state}" + ("" if r["changed"] else " (already)"))
            for name, e in errors.items():
                console.print(f"[red]{name}: {e}[/red]", highlight=False)
        if not targets:
            console.print(f"[red]no running service found in {where}[/red]")
        return 0 if results and not errors else 1
    if args.dead_letters:
        results, errors = await fetch_dead_letters(targets, args.limit)
        if args.json:
            _print_json({"dead_letters": results, "errors": errors})
        else:
            _print_dead_letters(console, results, errors)
        return 0 if results and not errors else 1
    results, errors = await fetch(targets)
    if args.json:
        _print_json({"services": results, "errors": errors})
        return 0 if results and not errors else 1
    raise AssertionError("unreachable")


def _print_dead_letters(
    console: Console, results: Mapping[str, Any], errors: Mapping[str, str]
) -> None:
    for name, r in results.items():
        console.print(Text(f"{name}: {r['count']} dead letters in the runtime", style="bold"))
        if r["recent"]:
            table = Table(box=box.SIMPLE_HEAD)
            for column in ("when", "to", "message", "reason"):
                table.add_column(column)
            for d in r["recent"]:
                table.add_row(_ago(d["at"]), d["path"], d["message_type"], d["reason"])
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
    for name, e in errors.items():
        console.print(f"[red]{name}: {e}[/red]", highlight=False)


def main_console(config: Config, args: argparse.Namespace) -> int:
    """Entry point of ``supervisor.py console``."""
    console = Console()
    live = not (args.json or args.restart or args.pause or args.resume or args.dead_letters)
    try:
        if live:
            if args.interval <= 0 or not math.isfinite(args.interval):
                raise SystemExit("--interval must be a positive number of seconds")
            trio.run(_live, config, args, console)
            return 0
        return trio.run(_command, config, args, console)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1

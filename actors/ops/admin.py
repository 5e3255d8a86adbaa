"""Operator commands on durable state: ``supervisor.py dlq ...`` and ``suppression ...``.

Each function takes a loaded Config, prints what it did (JSON lines, then a
summary line a human can read) and returns the process exit status.

Dead letters live on RabbitMQ (the distributed profile's ``bus.dead_letter_queue``):
``list`` shows them with the reason each was dead-lettered (a consumer's
reject reason, or the broker's: delivery limit reached, and so on) and leaves
them in place; ``replay`` publishes them back to the exchange they came from
(confirmed before each is removed), at most ``--limit`` and never more than
were there when it started, so a message that dies again at once is not
replayed twice by one command. The embedded profile's bus is in-process: its
dead letters live in the memory of the running process only and end with it,
so there is nothing here to list, replay or purge (the command says so, and exits 2).
``purge`` deletes dead letters for good, after a confirmation (typed, or ``--yes``).

The suppression list is the SQLite table beside the claims
(``email_server.idempotency_path``) in the embedded profile, an Elasticsearch
index in the distributed one; see ``actors.email_server.suppression`` and
``actors.email_server.suppression_elasticsearch``. ``export`` writes it as CSV
(address, reason, source, added_at, event_id); ``import`` adds the addresses of a CSV
file with an ``address`` column (and optionally ``reason``), each checked on its own.
"""

from __future__ import annotations

import argparse
import csv
import functools
import json
import sys
from collections.abc import Callable
from typing import Any, ParamSpec

import msgspec
import trio

from actors.email_server.suppression import normalize
from actors.ops.client import positive_int
from config import load_config

__all__ = [
    "dlq_list",
    "dlq_purge",
    "dlq_replay",
    "register",
    "suppression_command",
    "suppression_export",
    "suppression_import",
]

_BODY_CHARS = 300


def _embedded_note(config: Any) -> bool:
    """True (and it says why on stderr) when the profile has no broker to ask."""
    if config.bus.kind == "memory":
        print(
            "error: the embedded profile has no broker: its bus is in-process, and its dead "
            "letters live only in the memory of the running `supervisor.py up` (shown by "
            "`supervisor.py console --dead-letters`) and end with it; nothing to list, replay "
            "or purge from here. Use --profile distributed for RabbitMQ's dead-letter queue.",
            file=sys.stderr,
        )
        return True
    return False


NO_BROKER = 2  # actors.ops.exits.Exit.CONFIG: a command this profile cannot serve


async def _with_bus(config: Any, fn: Any) -> Any:
    from actors.bus.rabbitmq import RabbitBus
    from runtime import open_asyncio_edge

    async with open_asyncio_edge():
        bus = RabbitBus(config.bus, role="tool", connection_name="mailactors-dlq")
        await bus.open()
        try:
            return await fn(bus)
        finally:
            await bus.close()


_P = ParamSpec("_P")


class _Unavailable(Exception):
    pass


def _on_bus(config: Any, fn: Any) -> Any:
    """``await fn(bus)`` on a RabbitBus of its own; a broker that cannot answer is _Unavailable."""
    from actors.domain.edges import BusError
    from runtime import run_with_asyncio_host

    try:
        return run_with_asyncio_host(_with_bus, config, fn)
    except BusError as exc:
        raise _Unavailable(str(exc)) from exc


def _outage_is_one_line(command: Callable[_P, int]) -> Callable[_P, int]:
    """A dlq command whose broker cannot answer says so in one line and exits 1 (written once
    for list, replay and purge)."""

    @functools.wraps(command)
    def run(*args: _P.args, **kwargs: _P.kwargs) -> int:
        try:
            return command(*args, **kwargs)
        except _Unavailable as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1

    return run


def _describe(body: bytes) -> dict[str, Any]:
    try:
        decoded = msgspec.json.decode(body)
    except msgspec.DecodeError:
        decoded = None
    event_id = decoded.get("eventId") if isinstance(decoded, dict) else None
    text = body[:_BODY_CHARS].decode(errors="replace")
    return {"eventId": event_id, "body": text + ("..." if len(body) > _BODY_CHARS else "")}


@_outage_is_one_line
def dlq_list(config: Any, limit: int) -> int:
    if _embedded_note(config):
        return NO_BROKER

    async def go(bus: Any) -> tuple[list[Any], dict[str, int]]:
        return await bus.dead_letters(limit), await bus.queue_depths()

    letters, depths = _on_bus(config, go)
    reasons: dict[str, int] = {}
    for letter in letters:
        print(
            json.dumps({"queue": letter.queue, "reason": letter.reason, **_describe(letter.body)})
        )
        reasons[letter.reason] = reasons.get(letter.reason, 0) + 1
    total = depths.get(config.bus.dead_letter_queue, len(letters))
    print(
        f"{total} dead letter(s) in {config.bus.dead_letter_queue}"
        + (f", {len(letters)} shown" if len(letters) < total else "")
        + "".join(f"; {n} x {reason}" for reason, n in sorted(reasons.items(), key=lambda x: -x[1]))
    )
    return 0


@_outage_is_one_line
def dlq_replay(config: Any, limit: int | None) -> int:
    if _embedded_note(config):
        return NO_BROKER

    async def go(bus: Any) -> int:
        depth = (await bus.queue_depths()).get(config.bus.dead_letter_queue, 0)
        n = depth if limit is None else min(limit, depth)
        return await bus.replay_dead_letters(n) if n > 0 else 0

    replayed = _on_bus(config, go)
    print(json.dumps({"replayed": replayed}))
    return 0


@_outage_is_one_line
def dlq_purge(config: Any, limit: int | None, yes: bool) -> int:
    """Delete dead letters for good, oldest first: after a yes typed on a terminal, or --yes."""
    if _embedded_note(config):
        return NO_BROKER
    queue = config.bus.dead_letter_queue

    async def depth(bus: Any) -> int:
        return int((await bus.queue_depths()).get(queue, 0))

    total = _on_bus(config, depth)
    n = total if limit is None else min(limit, total)
    if n == 0:
        print(json.dumps({"purged": 0}))
        return 0
    if not yes:
        what = f"{n} of {total} dead letter(s) in {queue}, oldest first"
        if not sys.stdin.isatty():
            print(f"error: dlq purge would delete {what}; add --yes to confirm", file=sys.stderr)
            return NO_BROKER
        answer = input(f"delete {what}, for good? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing deleted", file=sys.stderr)
            return 1

    async def go(bus: Any) -> int:
        return int(await bus.purge_dead_letters(n))

    purged = _on_bus(config, go)
    print(json.dumps({"purged": purged}))
    return 0


def suppression_command(
    config: Any,
    action: str,
    address: str | None,
    reason: str,
    limit: int,
    category: str | None = None,
) -> int:
    from actors.email_server.safeguards import open_suppression

    where = (
        config.email_server.idempotency_path
        if config.store.kind == "sqlite"
        else f"the Elasticsearch index {config.email_server.claims_index}-suppressed"
    )

    async def go() -> int:
        async with open_suppression(config) as suppression:
            if action == "list":
                entries = await suppression.entries(limit)
                for entry in entries:
                    print(msgspec.json.encode(entry).decode())
                print(f"{len(entries)} suppressed address(es) in {where}")
                return 0
            assert address is not None
            if "@" not in address:
                print(f"address: not an email address: {address!r}", file=sys.stderr)
                return 2
            if action == "add":
                added = await suppression.add(
                    address, reason, source="operator", category=category or ""
                )
                print(json.dumps({"address": normalize(address), "added": added}))
                return 0
            removed = await suppression.remove(address, category)
            print(json.dumps({"address": normalize(address), "removed": removed}))
            return 0 if removed else 1

    return trio.run(go)


EXPORT_FIELDS = ("address", "reason", "source", "added_at", "event_id")


def suppression_export(config: Any, path: str | None, limit: int) -> int:
    """The suppression list as CSV, newest first, to ``path`` or stdout."""
    from actors.email_server.safeguards import open_suppression

    async def go() -> list[Any]:
        async with open_suppression(config) as suppression:
            return list(await suppression.entries(limit))

    entries = trio.run(go)
    out = open(path, "w", newline="") if path else sys.stdout  # noqa: SIM115 (closed below)
    try:
        writer = csv.writer(out)
        writer.writerow(EXPORT_FIELDS)
        for e in entries:
            writer.writerow(
                [e.address, e.reason, e.source, e.added_at.isoformat(), e.event_id or ""]
            )
    finally:
        if path:
            out.close()
    print(f"{len(entries)} suppressed address(es) exported", file=sys.stderr)
    return 0


def suppression_import(config: Any, path: str, reason: str) -> int:
    """Suppress every address of a CSV file (an ``address`` column; ``reason`` optional).

    Each row on its own: a bad address is named with its line and skipped; the rest are
    added. Exit status 1 when any row was refused."""
    from actors.email_server.safeguards import open_suppression

    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
            columns = rows[0].keys() if rows else set()
    except OSError as exc:
        print(f"error: {path}: {exc.strerror}", file=sys.stderr)
        return 2
    except (csv.Error, UnicodeDecodeError) as exc:
        print(f"error: {path}: not CSV: {exc}", file=sys.stderr)
        return 2
    if rows and "address" not in columns:
        names = ", ".join(columns)
        print(f"error: {path}: no 'address' column (columns: {names})", file=sys.stderr)
        return 2

    async def go() -> tuple[int, int, list[str]]:
        added = already = 0
        refused: list[str] = []
        async with open_suppression(config) as suppression:
            for line, row in enumerate(rows, start=2):  # line 1: the header
                address = (row.get("address") or "").strip()
                if "@" not in address or any(c.isspace() for c in address):
                    refused.append(f"line {line}: not an email address: {address!r}")
                    continue
                why = (row.get("reason") or "").strip() or reason
                if await suppression.add(address, why, source="import"):
                    added += 1
                else:
                    already += 1
        return added, already, refused

    added, already, refused = trio.run(go)
    for problem in refused:
        print(problem, file=sys.stderr)
    print(json.dumps({"added": added, "already": already, "refused": len(refused)}))
    return 1 if refused else 0


# -- the command line --------------------------------------------------------------------


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``dlq`` and ``suppression`` to supervisor.py's subcommands."""
    dlq = commands.add_parser(
        "dlq", help="dead letters: list them with their reasons, replay or purge them"
    )
    dlq_sub = dlq.add_subparsers(dest="dlq_action", required=True)
    listing = dlq_sub.add_parser("list", help="show dead letters (left in place) with the reasons")
    listing.add_argument(
        "--limit", type=positive_int, default=100, help="show at most N (default 100)"
    )
    listing.set_defaults(handler=lambda a: dlq_list(load_config(a.profile), a.limit))
    replay = dlq_sub.add_parser("replay", help="publish dead letters back where they came from")
    replay.add_argument(
        "--limit", type=positive_int, default=None, help="replay at most N (default: all)"
    )
    replay.set_defaults(handler=lambda a: dlq_replay(load_config(a.profile), a.limit))
    purge = dlq_sub.add_parser(
        "purge", help="delete dead letters for good, oldest first (asks first, or --yes)"
    )
    purge.add_argument(
        "--limit", type=positive_int, default=None, help="delete at most N (default: all)"
    )
    purge.add_argument(
        "--yes", action="store_true", help="do not ask (needed when stdin is not a terminal)"
    )
    purge.set_defaults(handler=lambda a: dlq_purge(load_config(a.profile), a.limit, a.yes))

    sup = commands.add_parser(
        "suppression",
        help="the suppression list: list | add ADDR | remove ADDR | export [FILE] | import FILE",
    )
    sup_sub = sup.add_subparsers(dest="suppression_action", required=True)
    sup_list = sup_sub.add_parser("list", help="suppressed addresses, newest first (JSON lines)")
    sup_list.add_argument(
        "--limit", type=positive_int, default=1000, help="at most N (default 1000)"
    )
    sup_list.set_defaults(
        handler=lambda a: suppression_command(load_config(a.profile), "list", None, "", a.limit)
    )
    sup_add = sup_sub.add_parser("add", help="never send to ADDR (its emails end SUPPRESSED)")
    sup_add.add_argument("address", help="the address to suppress")
    sup_add.add_argument(
        "--reason", default="added by an operator", help="why (kept with the entry)"
    )
    sup_add.add_argument(
        "--category", default="", help="only emails of this category (default: all)"
    )
    sup_add.set_defaults(
        handler=lambda a: suppression_command(
            load_config(a.profile), "add", a.address, a.reason, 0, a.category
        )
    )
    sup_remove = sup_sub.add_parser("remove", help="let ADDR receive email again")
    sup_remove.add_argument("address", help="the address to let through again")
    sup_remove.add_argument(
        "--category", default=None, help="remove only this category's entry (default: every entry)"
    )
    sup_remove.set_defaults(
        handler=lambda a: suppression_command(
            load_config(a.profile), "remove", a.address, "", 0, a.category
        )
    )
    sup_export = sup_sub.add_parser(
        "export", help="the list as CSV (address, reason, source, added_at, event_id)"
    )
    sup_export.add_argument("file", nargs="?", help="write to FILE (default: stdout)")
    sup_export.add_argument(
        "--limit", type=positive_int, default=10000, help="at most N, newest first (default 10000)"
    )
    sup_export.set_defaults(
        handler=lambda a: suppression_export(load_config(a.profile), a.file, a.limit)
    )
    sup_import = sup_sub.add_parser(
        "import", help="suppress every address of a CSV file (columns: address[, reason])"
    )
    sup_import.add_argument("file", help="a CSV file with a header row naming 'address'")
    sup_import.add_argument(
        "--reason", default="imported", help="the reason of rows without one (default imported)"
    )
    sup_import.set_defaults(
        handler=lambda a: suppression_import(load_config(a.profile), a.file, a.reason)
    )

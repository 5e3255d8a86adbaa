"""mailactors command line: run the services and talk to them.

    python supervisor.py up [--profile embedded]   run until Ctrl-C
    python supervisor.py demo                       run, send three samples, print, exit
    python supervisor.py send --to ADDR --template NAME [--var k=v ...] [--json-var k=JSON ...]
                              [--key KEY] [--from ADDR] [--cc ADDR] [--bcc ADDR]
                              [--header K=V] [--tag T] [--meta K=V] [--send-at RFC3339]
    python supervisor.py status EVENT_ID            the document, as JSON
    python supervisor.py search [--recipient ..] [--status ..] [--category ..] [--tag ..]
                                [--meta K=V]
    python supervisor.py cancel EVENT_ID            a scheduled email, before it is due
    python supervisor.py send --batch FILE          many requests (JSON lines), progress bar
    python supervisor.py templates list | preview NAME [--var k=v ...]   render, no send
    python supervisor.py dlq list|replay|purge [--limit N] dead letters, with the reasons
    python supervisor.py suppression list|add ADDR|remove ADDR|export [FILE]|import FILE
    python supervisor.py webhooks list-failed|replay [--endpoint NAME]   webhooks given up
    python supervisor.py soak --emails N [--faults ...] [--workers W]   the distributed
                                                    profile under faults, every email accounted for
    python supervisor.py console [SERVICE] [--json] live actor trees; --restart PATH, --pause,
                                                    --resume, --dead-letters
    python supervisor.py dkim show DOMAIN           the DNS TXT record of DOMAIN's DKIM key
    python supervisor.py dkim keygen DOMAIN --selector S [--algorithm rsa|ed25519] --out FILE

``send``, ``status``, ``search`` and ``cancel`` talk gRPC to a running ``up``.

Each command lives with its subsystem, in a module whose ``register(commands)`` adds its
subparsers and sets ``handler`` (parsed arguments -> exit status); this file only holds the
global options, the list of those modules, and the dispatch.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from actors.ops import admin, client, console, exits, soak, templates
from actors.ops import dkim as dkim_cli
from actors.profiles import cli as profiles_cli
from actors.telemetry.logs import LOG_ENV
from actors.webhooks import cli as webhooks_cli
from bench import suite
from config import Config, ConfigError, load_config

if TYPE_CHECKING:  # argparse's classes are not subscriptable at run time
    Register = Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None]

# In the order `--help` lists the commands.
COMMANDS: list[Register] = [
    profiles_cli.register,  # up, run, demo
    client.register,  # send, status, search, cancel
    console.register,  # console
    suite.register,  # bench
    templates.register,  # templates
    admin.register,  # dlq, suppression
    soak.register,  # soak
    webhooks_cli.register,  # webhooks list-failed | replay
    dkim_cli.register,  # dkim show, dkim keygen
]


class _Command(argparse.ArgumentParser):
    """A command's parser: its description, where it has one, is its module's docstring,
    laid out by hand, so help prints it as written."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(**kwargs)


PROFILE_HELP = "config profile name (config/NAME.toml) or path (default: embedded)"


def _global_options(parser: argparse.ArgumentParser, top: bool) -> None:
    """Options every command takes, before or after its name (``up --profile distributed``).

    On a command's parser they default to SUPPRESS, so they only override the top
    level's when given there."""
    default: Any = argparse.SUPPRESS
    parser.add_argument(
        "--profile",
        default=os.environ.get("MAILACTORS_PROFILE", "embedded") if top else default,
        help=PROFILE_HELP,
    )
    parser.add_argument(
        "--debug",
        action="store_true",
        default=False if top else default,
        help="show the traceback of a start-up failure instead of its one-line summary",
    )
    parser.add_argument(
        "--log-level",
        choices=["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
        type=str.upper,
        default=None if top else default,
        help="log level of the services (default: service.log_level of the profile); "
        "libraries' own debug chatter stays out unless named with --log",
    )
    parser.add_argument(
        "--log",
        action="append",
        metavar="LOGGER=LEVEL",
        default=[] if top else default,
        help="the level of one logger by name, e.g. --log hpack=DEBUG --log aiormq=INFO "
        "(repeatable)",
    )


def every_parser(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """The parsers of every command and sub-command under ``parser``."""
    out = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                out.append(sub)
                out.extend(every_parser(sub))
    return out


def parser() -> argparse.ArgumentParser:
    main_doc = (__doc__ or "").split("\n\n")[0]
    top = argparse.ArgumentParser(
        prog="supervisor.py",
        description=main_doc,
        epilog="Exit statuses: 0 done, 1 failed, 2 usage or configuration error, "
        "3 send --batch: some unanswered, 4 an address to listen on is in use, "
        "5 a server it needs cannot be reached, 130 interrupted.",
    )
    _global_options(top, top=True)
    # The register functions need only an ArgumentParser of each command (_Command is one).
    commands = cast(
        "argparse._SubParsersAction[argparse.ArgumentParser]",
        top.add_subparsers(dest="command", required=True, parser_class=_Command),
    )
    for register in COMMANDS:
        register(commands)
    for sub in every_parser(top):
        _global_options(sub, top=False)
    return top


def _apply_log_options(args: argparse.Namespace) -> None:
    """--log-level and --log go through the environment, so that the processes the launcher
    starts run with them too."""
    if args.log_level:
        os.environ["MAILACTORS__SERVICE__LOG_LEVEL"] = args.log_level
    for item in args.log:
        name, sep, level = item.partition("=")
        if not sep or not name or level.upper() not in logging.getLevelNamesMapping():
            raise SystemExit(f"error: --log expects LOGGER=LEVEL (e.g. hpack=DEBUG), got {item!r}")
    if args.log:
        os.environ[LOG_ENV] = ",".join(filter(None, [os.environ.get(LOG_ENV, ""), *args.log]))


def _config_or_none(profile: str) -> Config | None:
    try:
        return load_config(profile)
    except ConfigError:
        return None


def _quiet_stdout() -> None:
    """The reader went away (``search | head``): nothing more to say, and nothing at exit."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    _apply_log_options(args)
    try:
        status = int(args.handler(args))
        sys.stdout.flush()  # here, where a closed pipe is handled, not at exit
        return status
    except BrokenPipeError:
        _quiet_stdout()
        return exits.Exit.OK
    except (Exception, KeyboardInterrupt) as exc:
        if any(isinstance(e, BrokenPipeError) for e in exits.leaves(exc)):
            _quiet_stdout()
            return exits.Exit.OK
        if args.debug and not isinstance(exc, KeyboardInterrupt):
            raise
        known = exits.explain(exc, _config_or_none(args.profile))
        if known is None:
            raise
        status, line = known
        print(
            f"{line}" + ("" if status is exits.Exit.INTERRUPTED else exits.DEBUG_HINT),
            file=sys.stderr,
        )
        return status


if __name__ == "__main__":
    sys.exit(main())

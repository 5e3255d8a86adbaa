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
    python supervisor.py dlq list|replay [--limit N] dead letters, with the reasons
    python supervisor.py suppression list|add ADDR|remove ADDR
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
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from actors.ops import admin, client, console, soak
from actors.ops import dkim as dkim_cli
from actors.profiles import cli as profiles_cli
from actors.webhooks import cli as webhooks_cli
from bench import suite
from config import ConfigError

if TYPE_CHECKING:  # argparse's classes are not subscriptable at run time
    Register = Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None]

# In the order `--help` lists the commands.
COMMANDS: list[Register] = [
    profiles_cli.register,  # up, run, demo
    client.register,  # send, status, search, cancel
    console.register,  # console
    suite.register,  # bench
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


def parser() -> argparse.ArgumentParser:
    main_doc = (__doc__ or "").split("\n\n")[0]
    top = argparse.ArgumentParser(prog="supervisor.py", description=main_doc)
    top.add_argument(
        "--profile",
        default=os.environ.get("MAILACTORS_PROFILE", "embedded"),
        help="config profile name (config/NAME.toml) or path (default: embedded)",
    )
    # The register functions need only an ArgumentParser of each command (_Command is one).
    commands = cast(
        "argparse._SubParsersAction[argparse.ArgumentParser]",
        top.add_subparsers(dest="command", required=True, parser_class=_Command),
    )
    for register in COMMANDS:
        register(commands)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

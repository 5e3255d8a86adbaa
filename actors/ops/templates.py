"""``supervisor.py templates list`` and ``templates preview NAME``: the templates as the
services see them, rendered without sending anything.

``list`` shows each template's name, its parts (text, and HTML when it has one) and the
variables it uses. ``preview`` renders one with ``--var`` / ``--json-var`` exactly as a
request would (the same sandbox, the same refusal of a missing or null variable) and
prints the subject, the text body and the HTML body.
"""

from __future__ import annotations

import argparse
import json
import sys

from actors.domain.templates import HTML_FILE, TemplateError, TemplateRenderer
from actors.ops.client import parse_vars
from config import load_config

__all__ = ["register"]


def _renderer(profile: str) -> TemplateRenderer:
    return TemplateRenderer(load_config(profile).templates.dir)


def cmd_list(args: argparse.Namespace) -> int:
    renderer = _renderer(args.profile)
    for name in renderer.names():
        parts = "text+html" if (renderer.directory / name / HTML_FILE).is_file() else "text"
        variables = sorted(renderer.variables(name))
        if args.json:
            print(json.dumps({"name": name, "parts": parts, "variables": variables}))
        else:
            print(f"{name:<24} {parts:<9} {', '.join(variables) or '-'}")
    if not args.json:
        print(f"{len(renderer.names())} template(s) in {renderer.directory}", file=sys.stderr)
    return 0


def cmd_preview(args: argparse.Namespace) -> int:
    renderer = _renderer(args.profile)
    variables = parse_vars(args.var, args.json_var)
    try:
        email = renderer.render(args.name, variables, args.subject)
    except TemplateError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"subject": email.subject, "text": email.text, "html": email.html}))
        return 0
    print(f"Subject: {email.subject}\n\n--- text ---\n{email.text}", end="")
    if email.html is not None:
        print(f"\n--- html ---\n{email.html}", end="")
    print()
    return 0


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``templates`` to supervisor.py's subcommands."""
    templates = commands.add_parser(
        "templates", help="the email templates: list them, or preview one rendered (no send)"
    )
    sub = templates.add_subparsers(dest="templates_action", required=True)
    listing = sub.add_parser("list", help="names, parts (text, html) and variables")
    listing.add_argument("--json", action="store_true", help="one JSON object per template")
    listing.set_defaults(handler=cmd_list)
    preview = sub.add_parser(
        "preview", help="render NAME with the given variables and print it; nothing is sent"
    )
    preview.add_argument("name", help="a template's name (templates list)")
    preview.add_argument("--var", action="append", default=[], metavar="KEY=VALUE",
                         help="a template variable, always a string (repeatable)")
    preview.add_argument("--json-var", action="append", default=[], metavar="KEY=JSON",
                         help="a template variable given as JSON (repeatable)")
    preview.add_argument("--subject", help="a subject instead of the template's")
    preview.add_argument("--json", action="store_true", help="subject, text and html as JSON")
    preview.set_defaults(handler=cmd_preview)

"""``supervisor.py send --batch FILE``: many requests from a JSON-lines file, with a progress bar.

Each non-blank line is one request::

    {"to": "ada@example.com", "template": "welcome", "variables": {"name": "Ada"},
     "category": "transactional", "subject": null, "key": "signup-42"}

(``recipient`` may stand for ``to``, ``idempotencyKey`` for ``key``.) Requests go
to auth's gRPC API, ``--concurrency`` at a time; one JSON line per request is
printed on stdout as its answer comes (``{"line": 3, "eventId": ..., "duplicate":
false}`` or ``{"line": 4, "error": "INVALID_ARGUMENT: recipient: ..."}``), the
progress bar and the summary go to stderr.

A request whose connection is lost (the server stopped, or was never there) has
no answer: it may or may not have been accepted. It is reported
``{"line": 7, "unanswered": "..."}``, no request is started after that, and the
summary lists the answered, refused and unanswered lines. Exit status: 0 every
request accepted, 1 every request answered but some refused (or bad lines),
3 some requests unanswered (resend those lines; with idempotency keys a resend
never sends twice).
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any, TextIO

from actors.ops.progress import progress_bar

__all__ = ["EXIT_OK", "EXIT_REFUSED", "EXIT_UNANSWERED", "line_ranges", "parse_line",
           "read_batch", "send_batch"]

UNAVAILABLE_RETRIES = 3
EXIT_OK = 0
EXIT_REFUSED = 1  # every request answered, some refused
EXIT_UNANSWERED = 3  # some requests got no answer: their outcome is unknown


class BatchLineError(ValueError):
    pass


def parse_line(text: str) -> dict[str, Any]:
    """One line of a batch file -> the fields of a RequestEmailRequest."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BatchLineError(f"not JSON: {exc.msg} at column {exc.colno}") from None
    if not isinstance(data, dict):
        raise BatchLineError("a request is a JSON object")
    known = {"to", "recipient", "template", "variables", "category", "subject", "key",
             "idempotencyKey", "idempotency_key"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise BatchLineError(f"unknown field {unknown[0]!r}; known: {', '.join(sorted(known))}")
    recipient = data.get("to", data.get("recipient"))
    template = data.get("template")
    if not isinstance(recipient, str) or not recipient:
        raise BatchLineError("to: missing (the recipient's address)")
    if not isinstance(template, str) or not template:
        raise BatchLineError("template: missing")
    variables = data.get("variables", {})
    if not isinstance(variables, dict):
        raise BatchLineError("variables: must be an object")
    key = data.get("key", data.get("idempotencyKey", data.get("idempotency_key")))
    out: dict[str, Any] = {
        "recipient": recipient,
        "template": template,
        "variables": variables,
        "category": data.get("category") or "transactional",
    }
    if data.get("subject") is not None:
        out["subject"] = str(data["subject"])
    if key is not None:
        out["idempotency_key"] = str(key)
    return out


def read_batch(path: str | Path) -> list[tuple[int, dict[str, Any] | BatchLineError]]:
    """(line number, request or the error in that line) for every non-blank line."""
    items: list[tuple[int, dict[str, Any] | BatchLineError]] = []
    with open(path, encoding="utf-8") as f:
        for number, text in enumerate(f, 1):
            if not text.strip():
                continue
            try:
                items.append((number, parse_line(text)))
            except BatchLineError as exc:
                items.append((number, exc))
    return items


class _Tally:
    """What happened to each line: accepted, refused (with a reason) or unanswered."""

    def __init__(self) -> None:
        self.accepted: list[int] = []
        self.duplicates = 0
        self.refused: list[int] = []
        self.unanswered: list[int] = []
        self.lost: str | None = None  # why the connection is gone, once it is
        self.reached = False  # the server answered at least once


def line_ranges(lines: list[int]) -> str:
    """``[1, 2, 3, 7, 9, 10]`` -> ``"1-3, 7, 9-10"``."""
    out: list[str] = []
    for n in sorted(lines):
        if out and out[-1].split("-")[-1] == str(n - 1):
            out[-1] = f"{out[-1].split('-')[0]}-{n}"
        else:
            out.append(str(n))
    return ", ".join(out)


async def _send_all(
    host: str,
    port: int,
    metadata: dict[str, str] | None,
    items: list[tuple[int, dict[str, Any] | BatchLineError]],
    concurrency: int,
    out: TextIO,
    quiet: bool,
    ssl: Any,
) -> _Tally:
    from grpclib.client import Channel
    from grpclib.exceptions import GRPCError, ProtocolError, StreamTerminatedError

    from actors.grpc.convert import variables_to_struct
    from protos import email_grpc, email_pb2

    tally = _Tally()
    channel = Channel(host, port, ssl=ssl)
    stub = email_grpc.AuthServiceStub(channel)
    slots = asyncio.Semaphore(concurrency)

    def emit(record: dict[str, Any]) -> None:
        out.write(json.dumps(record) + "\n")
        out.flush()

    try:
        with progress_bar("sending", total=len(items), unit="emails", disable=quiet) as bar:

            async def one(number: int, item: dict[str, Any] | BatchLineError) -> None:
                try:
                    if isinstance(item, BatchLineError):
                        raise item
                    fields = dict(item)
                    fields["variables"] = variables_to_struct(fields["variables"])
                    request = email_pb2.RequestEmailRequest(**fields)
                    async with slots:
                        if tally.lost is not None:
                            tally.unanswered.append(number)
                            emit({"line": number, "unanswered": f"not sent: {tally.lost}"})
                            return
                        for attempt in range(UNAVAILABLE_RETRIES + 1):
                            try:
                                reply = await stub.RequestEmail(
                                    request, metadata=metadata, timeout=60
                                )
                                break
                            except GRPCError as exc:
                                if (
                                    exc.status.name != "UNAVAILABLE"
                                    or attempt == UNAVAILABLE_RETRIES
                                ):
                                    raise
                                await asyncio.sleep(0.2 * 2**attempt)
                    emit({"line": number, "eventId": reply.event_id, "duplicate": reply.duplicate})
                    tally.reached = True
                    tally.accepted.append(number)
                    tally.duplicates += bool(reply.duplicate)
                except GRPCError as exc:
                    tally.reached = True
                    tally.refused.append(number)
                    emit({"line": number, "error": f"{exc.status.name}: {exc.message}"})
                except (BatchLineError, ValueError, TypeError) as exc:
                    tally.refused.append(number)
                    emit({"line": number, "error": f"bad request: {exc}"})
                except (StreamTerminatedError, ProtocolError, OSError) as exc:
                    # The connection is gone: this request may or may not have been
                    # taken, and nothing more is started (it would only fail too).
                    reason = f"{type(exc).__name__}: {exc}".rstrip(": ")
                    if tally.lost is None:
                        tally.lost = reason
                    tally.unanswered.append(number)
                    emit({"line": number, "unanswered": reason})
                except TimeoutError:
                    tally.unanswered.append(number)
                    emit({"line": number, "unanswered": "no answer within 60 s"})
                finally:
                    bar.advance()
                    problems = len(tally.refused) + len(tally.unanswered)
                    if problems:
                        bar.note(f"[red]{problems} not accepted[/red]")

            await asyncio.gather(*(one(n, item) for n, item in items))
    finally:
        channel.close()
    return tally


def send_batch(
    host: str,
    port: int,
    metadata: dict[str, str] | None,
    path: str | Path,
    *,
    concurrency: int = 32,
    out: TextIO | None = None,
    quiet: bool = False,
    ssl: Any = None,
) -> int:
    """Send every request of ``path``; return the exit status (see the module docstring).

    ``ssl``: the client TLS context (``grpc_security.client_ssl_context``), None for plaintext.
    """
    try:
        items = read_batch(path)
    except OSError as exc:
        print(f"error: cannot read {path}: {exc.strerror}", file=sys.stderr)
        return 1
    if not items:
        print(f"error: {path} holds no requests", file=sys.stderr)
        return 1
    tally = asyncio.run(
        _send_all(host, port, metadata, items, max(1, concurrency), out or sys.stdout, quiet, ssl)
    )
    if tally.lost is not None:
        if tally.reached:
            print(
                f"error: the connection to {host}:{port} was lost ({tally.lost}); "
                "the server stopped during the batch",
                file=sys.stderr,
            )
        else:
            print(
                f"error: no mailactors service at {host}:{port} ({tally.lost}); "
                "start one with `python supervisor.py up`",
                file=sys.stderr,
            )
    answered = len(tally.accepted) + len(tally.refused)
    parts = [f"{len(tally.accepted)} accepted ({tally.duplicates} repeats of an idempotency key)"]
    if tally.refused:
        parts.append(f"{len(tally.refused)} refused (lines {line_ranges(tally.refused)})")
    else:
        parts.append("0 refused")
    if tally.unanswered:
        parts.append(f"{len(tally.unanswered)} unanswered (lines {line_ranges(tally.unanswered)})")
    print(f"{len(items)} requests, {answered} answered: " + ", ".join(parts), file=sys.stderr)
    if tally.unanswered:
        print(
            "unanswered requests may or may not have been accepted: resend those lines "
            "(with a key, a resend never sends twice)",
            file=sys.stderr,
        )
        return EXIT_UNANSWERED
    return EXIT_REFUSED if tally.refused else EXIT_OK

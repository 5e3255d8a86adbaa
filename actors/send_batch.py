"""``supervisor.py send --batch FILE``: many requests from a JSON-lines file, with a progress bar.

Each non-blank line is one request::

    {"to": "ada@example.com", "template": "welcome", "variables": {"name": "Ada"},
     "category": "transactional", "subject": null, "key": "signup-42"}

(``recipient`` may stand for ``to``, ``idempotencyKey`` for ``key``.) Requests go
to auth's gRPC API, ``--concurrency`` at a time; one JSON line per request is
printed on stdout as its answer comes (``{"line": 3, "eventId": ..., "duplicate":
false}`` or ``{"line": 4, "error": "INVALID_ARGUMENT: recipient: ..."}``), the
progress bar and the summary go to stderr. Exit status 1 if any request failed.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any, TextIO

from .progress import progress_bar

__all__ = ["parse_line", "read_batch", "send_batch"]

UNAVAILABLE_RETRIES = 3


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


async def _send_all(
    host: str,
    port: int,
    metadata: dict[str, str] | None,
    items: list[tuple[int, dict[str, Any] | BatchLineError]],
    concurrency: int,
    out: TextIO,
    quiet: bool,
    ssl: Any,
) -> tuple[int, int, int]:
    from grpclib.client import Channel
    from grpclib.exceptions import GRPCError

    from actors.proto_convert import variables_to_struct
    from protos import email_grpc, email_pb2

    ok = duplicates = failed = 0
    channel = Channel(host, port, ssl=ssl)
    stub = email_grpc.AuthServiceStub(channel)
    slots = asyncio.Semaphore(concurrency)

    def emit(record: dict[str, Any]) -> None:
        out.write(json.dumps(record) + "\n")
        out.flush()

    try:
        with progress_bar("sending", total=len(items), unit="emails", disable=quiet) as bar:

            async def one(number: int, item: dict[str, Any] | BatchLineError) -> None:
                nonlocal ok, duplicates, failed
                try:
                    if isinstance(item, BatchLineError):
                        raise item
                    fields = dict(item)
                    fields["variables"] = variables_to_struct(fields["variables"])
                    request = email_pb2.RequestEmailRequest(**fields)
                    async with slots:
                        for attempt in range(UNAVAILABLE_RETRIES + 1):
                            try:
                                reply = await stub.RequestEmail(request, metadata=metadata, timeout=60)
                                break
                            except GRPCError as exc:
                                if exc.status.name != "UNAVAILABLE" or attempt == UNAVAILABLE_RETRIES:
                                    raise
                                await asyncio.sleep(0.2 * 2**attempt)
                    emit({"line": number, "eventId": reply.event_id, "duplicate": reply.duplicate})
                    ok += 1
                    duplicates += bool(reply.duplicate)
                except GRPCError as exc:
                    failed += 1
                    emit({"line": number, "error": f"{exc.status.name}: {exc.message}"})
                except (BatchLineError, ValueError, TypeError) as exc:
                    failed += 1
                    emit({"line": number, "error": f"bad request: {exc}"})
                finally:
                    bar.advance()
                    if failed:
                        bar.note(f"[red]{failed} failed[/red]")

            await asyncio.gather(*(one(n, item) for n, item in items))
    finally:
        channel.close()
    return ok, duplicates, failed


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
    """Send every request of ``path``; return the exit status (0: all accepted).

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
    try:
        ok, duplicates, failed = asyncio.run(
            _send_all(host, port, metadata, items, max(1, concurrency), out or sys.stdout, quiet, ssl)
        )
    except OSError as exc:
        print(f"error: no mailactors service at {host}:{port} ({exc}); "
              "start one with `python supervisor.py up`", file=sys.stderr)
        return 1
    print(f"{ok} accepted ({duplicates} repeats of an idempotency key), {failed} failed",
          file=sys.stderr)
    return 1 if failed else 0

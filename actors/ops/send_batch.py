"""``supervisor.py send --batch FILE``: many requests from a JSON-lines file, with a progress bar.

Each non-blank line is one request::

    {"to": "ada@example.com", "template": "welcome", "variables": {"name": "Ada"},
     "category": "transactional", "subject": null, "key": "signup-42",
     "from": "news@example.com", "fromName": "Example News", "replyTo": "help@example.com",
     "cc": [], "bcc": [], "headers": {"X-Campaign": "dec"}, "tags": ["receipt"],
     "metadata": {"order": "42"}, "sendAt": "2026-12-24T09:00:00+01:00"}

(``recipient`` may stand for ``to``, ``idempotencyKey`` for ``key``; only ``to`` and
``template`` are required.) Requests go to auth's gRPC API in ``RequestEmails`` calls of
``--batch-size`` requests, ``--concurrency`` calls at a time (against a server without
``RequestEmails``, one ``RequestEmail`` per request); one JSON line per request is
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
DEFAULT_BATCH_SIZE = 500  # requests per RequestEmails call (the server's api.max_batch: 1000)
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
             "idempotencyKey", "idempotency_key", *_EXTRAS}
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
    for name, (field, kind) in _EXTRAS.items():
        if data.get(name) is None:
            continue
        value = data[name]
        if kind is str and not isinstance(value, str):
            raise BatchLineError(f"{name}: must be a string")
        if kind is list and not (
            isinstance(value, list) and all(isinstance(v, str) for v in value)
        ):
            raise BatchLineError(f"{name}: must be a list of strings")
        if kind is dict and not (
            isinstance(value, dict) and all(isinstance(v, str) for v in value.values())
        ):
            raise BatchLineError(f"{name}: must be an object of strings")
        out[field] = value
    return out


# Batch-file keys for issue 17's request fields: (RequestEmailRequest field, JSON type).
_EXTRAS: dict[str, tuple[str, type]] = {
    "from": ("from_address", str),
    "fromName": ("from_name", str),
    "replyTo": ("reply_to", str),
    "cc": ("cc", list),
    "bcc": ("bcc", list),
    "headers": ("headers", dict),
    "tags": ("tags", list),
    "metadata": ("metadata", dict),
    "sendAt": ("send_at", str),
}


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
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> _Tally:
    from grpclib.client import Channel
    from grpclib.exceptions import GRPCError, ProtocolError, StreamTerminatedError

    from actors.grpc.convert import variables_to_struct
    from protos import email_grpc, email_pb2

    tally = _Tally()
    channel = Channel(host, port, ssl=ssl)
    stub = email_grpc.AuthServiceStub(channel)
    slots = asyncio.Semaphore(concurrency)
    batched = [True]  # False once the server answered RequestEmails with UNIMPLEMENTED
    lost_errors = (StreamTerminatedError, ProtocolError, OSError)

    def emit(record: dict[str, Any]) -> None:
        out.write(json.dumps(record) + "\n")
        out.flush()

    def build(item: dict[str, Any]) -> Any:
        fields = dict(item)
        fields["variables"] = variables_to_struct(fields["variables"])
        return email_pb2.RequestEmailRequest(**fields)

    async def with_retries(call: Any, request: Any, timeout: float) -> Any:
        for attempt in range(UNAVAILABLE_RETRIES + 1):
            try:
                return await call(request, metadata=metadata, timeout=timeout)
            except GRPCError as exc:
                if exc.status.name != "UNAVAILABLE" or attempt == UNAVAILABLE_RETRIES:
                    raise
                await asyncio.sleep(0.2 * 2**attempt)
        raise AssertionError("unreachable")

    def lose(number: int, reason: str) -> None:
        if tally.lost is None:
            tally.lost = reason
        tally.unanswered.append(number)
        emit({"line": number, "unanswered": reason})

    with progress_bar("sending", total=len(items), unit="emails", disable=quiet) as bar:

        def done(n: int = 1) -> None:
            bar.advance(n)
            problems = len(tally.refused) + len(tally.unanswered)
            if problems:
                bar.note(f"[red]{problems} not accepted[/red]")

        def accepted(number: int, event_id: str, duplicate: bool) -> None:
            emit({"line": number, "eventId": event_id, "duplicate": duplicate})
            tally.reached = True
            tally.accepted.append(number)
            tally.duplicates += bool(duplicate)

        def refused(number: int, why: str) -> None:
            tally.refused.append(number)
            emit({"line": number, "error": why})

        async def one(number: int, request: Any) -> None:
            """A single RequestEmail: the way to a server without RequestEmails."""
            try:
                reply = await with_retries(stub.RequestEmail, request, 60)
                accepted(number, reply.event_id, reply.duplicate)
            except GRPCError as exc:
                tally.reached = True
                refused(number, f"{exc.status.name}: {exc.message}")
            except lost_errors as exc:
                lose(number, f"{type(exc).__name__}: {exc}".rstrip(": "))
            except TimeoutError:
                tally.unanswered.append(number)
                emit({"line": number, "unanswered": "no answer within 60 s"})

        async def chunk(lines: list[tuple[int, dict[str, Any] | BatchLineError]]) -> None:
            requests: list[tuple[int, Any]] = []
            for number, item in lines:
                try:
                    if isinstance(item, BatchLineError):
                        raise item
                    requests.append((number, build(item)))
                except (BatchLineError, ValueError, TypeError) as exc:
                    refused(number, f"bad request: {exc}")
                    done()
            if not requests:
                return
            async with slots:
                if tally.lost is not None:
                    for number, _ in requests:
                        tally.unanswered.append(number)
                        emit({"line": number, "unanswered": f"not sent: {tally.lost}"})
                    done(len(requests))
                    return
                if not batched[0]:
                    await asyncio.gather(*(one(n, r) for n, r in requests))
                    done(len(requests))
                    return
                call = email_pb2.RequestEmailsRequest(requests=[r for _, r in requests])
                try:
                    reply = await with_retries(stub.RequestEmails, call, 120)
                except GRPCError as exc:
                    tally.reached = True
                    if exc.status.name == "UNIMPLEMENTED":
                        batched[0] = False
                        await asyncio.gather(*(one(n, r) for n, r in requests))
                    else:  # the call as a whole (too many, too large): every line says why
                        for number, _ in requests:
                            refused(number, f"{exc.status.name}: {exc.message}")
                    done(len(requests))
                    return
                except lost_errors as exc:
                    for number, _ in requests:
                        lose(number, f"{type(exc).__name__}: {exc}".rstrip(": "))
                    done(len(requests))
                    return
                except TimeoutError:
                    for number, _ in requests:
                        tally.unanswered.append(number)
                        emit({"line": number, "unanswered": "no answer within 120 s"})
                    done(len(requests))
                    return
            tally.reached = True
            for (number, _), result in zip(requests, reply.results, strict=True):
                if not result.error:
                    accepted(number, result.event_id, result.duplicate)
                elif result.error.startswith("UNAVAILABLE"):  # not saved now: resend it
                    tally.unanswered.append(number)
                    emit({"line": number, "unanswered": result.error})
                else:
                    refused(number, f"INVALID_ARGUMENT: {_local_error(result.error)}")
            done(len(requests))

        try:
            size = max(1, batch_size)
            await asyncio.gather(
                *(chunk(items[i : i + size]) for i in range(0, len(items), size))
            )
        finally:
            channel.close()
    return tally


def _local_error(error: str) -> str:
    """``requests[12].recipient: ...`` -> ``recipient: ...``: the line number says which."""
    if error.startswith("requests["):
        _, _, rest = error.partition("].")
        if rest:
            return rest
        _, _, rest = error.partition("]: ")
        return rest or error
    return error


def send_batch(
    host: str,
    port: int,
    metadata: dict[str, str] | None,
    path: str | Path,
    *,
    concurrency: int = 4,
    out: TextIO | None = None,
    quiet: bool = False,
    ssl: Any = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
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
        _send_all(
            host, port, metadata, items, max(1, concurrency), out or sys.stdout, quiet, ssl,
            batch_size,
        )
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

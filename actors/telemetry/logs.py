"""Logging set-up: readable text by default, JSON lines by option.

Every record about an email carries ``event_id`` (pass ``extra={"event_id": ...}``),
so one email can be followed through auth, integration and email-server.
"""

from __future__ import annotations

import logging
import os
import sys
import time

import msgspec
import trio

from actors.telemetry.redact import RedactingFormatter

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        # A message of several lines (a crashed process's last output, as the launcher
        # reports it) keeps its lines: the first is the message, the rest a list.
        first, *rest = record.getMessage().split("\n")
        if rest:
            out["msg"], out["lines"] = first, rest
        for key, value in vars(record).items():
            if key not in _STANDARD:
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return msgspec.json.encode(out, enc_hook=str).decode()


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        event_id = getattr(record, "event_id", None)
        return f"{text} [eventId={event_id}]" if event_id else text


# Libraries whose INFO and DEBUG lines are noise, not information, at any level of ours:
# one line per HTTP request to the store, every HTTP/2 frame and header of gRPC.
# ``--log NAME=LEVEL`` (MAILACTORS_LOG) asks for one of them by name.
LIBRARY_LEVELS = {
    "httpx": logging.WARNING,
    "httpcore": logging.WARNING,
    # elastic_transport warns with a traceback on every retried request; the store says
    # what failed once it gives up.
    "elastic_transport": logging.ERROR,
    "hpack": logging.WARNING,
    "h2": logging.WARNING,
    "grpclib": logging.WARNING,
    "asyncio": logging.WARNING,
    "aio_pika": logging.WARNING,
    # On a broker restart these say, with an internal callback's error and once a try, what
    # the bus says in one line (lost / reconnecting / reconnected); seen as 2+N lines each.
    "aio_pika.tools": logging.CRITICAL,
    "aio_pika.robust_connection": logging.ERROR,
    # aiormq logs an ERROR with a traceback on every failed connection attempt; the bus
    # says the same in one line (not reachable yet / lost / reconnected).
    "aiormq": logging.CRITICAL,
}
LOG_ENV = "MAILACTORS_LOG"


def named_levels(spec: str) -> dict[str, str]:
    """``hpack=DEBUG,aiormq=INFO`` -> {logger: level}; malformed items are left out."""
    out: dict[str, str] = {}
    for item in spec.split(","):
        name, sep, level = item.strip().partition("=")
        if sep and name and level.upper() in logging.getLevelNamesMapping():
            out[name] = level.upper()
    return out


def configure(level: str = "INFO", fmt: str = "text", loggers: str | None = None) -> None:
    """Log to stderr at ``level``; ``loggers`` (default: $MAILACTORS_LOG) sets named ones."""
    handler = logging.StreamHandler(sys.stderr)
    # Every finished line, traceback included, passes through the secret filter.
    handler.setFormatter(RedactingFormatter(JsonFormatter() if fmt == "json" else TextFormatter()))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name, floor in LIBRARY_LEVELS.items():
        logging.getLogger(name).setLevel(max(floor, root.level))
    for name, named in named_levels(
        os.environ.get(LOG_ENV, "") if loggers is None else loggers
    ).items():
        logging.getLogger(name).setLevel(named)


class Sampled:
    """Say the first of a kind of event in each ``period`` seconds; count the others.

    For events that can come in floods (status events for emails nobody has): each is
    still counted by a metric and kept by the console; the log gets one line per period,
    carrying how many were left unsaid since the previous one. Uses Trio's clock.
    """

    def __init__(self, period: float = 10.0) -> None:
        self.period = period
        self._next = -float("inf")
        self._unsaid = 0

    def take(self) -> int | None:
        """None: stay quiet (counted). Else say this one, with that many unsaid before it."""
        now = trio.current_time()
        if now < self._next:
            self._unsaid += 1
            return None
        self._next = now + self.period
        unsaid, self._unsaid = self._unsaid, 0
        return unsaid

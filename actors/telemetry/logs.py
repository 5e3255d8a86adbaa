"""Logging set-up: readable text by default, JSON lines by option.

Every record about an email carries ``event_id`` (pass ``extra={"event_id": ...}``),
so one email can be followed through auth, integration and email-server.
"""

from __future__ import annotations

import logging
import sys
import time

import msgspec

from actors.telemetry.redact import RedactingFormatter

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
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


def configure(level: str = "INFO", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    # Every finished line, traceback included, passes through the secret filter.
    handler.setFormatter(RedactingFormatter(JsonFormatter() if fmt == "json" else TextFormatter()))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # One line per HTTP request to the store is noise, not information.
    for noisy in ("httpx", "elastic_transport", "aiormq", "aio_pika"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))

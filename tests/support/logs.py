"""A logging handler that keeps the records it sees, and says when one it waits for came."""

from __future__ import annotations

import logging

import trio


class RecordingHandler(logging.Handler):
    """Keeps every record; ``seen`` is set once a message containing ``wanted`` arrives.

    Records are emitted in the Trio thread (the actors log there), so the event is set
    directly."""

    def __init__(self, wanted: str) -> None:
        super().__init__()
        self.wanted = wanted
        self.records: list[logging.LogRecord] = []
        self.seen = trio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        if self.wanted in record.getMessage():
            self.seen.set()

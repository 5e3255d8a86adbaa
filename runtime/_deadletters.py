"""Where messages go when nobody can take them: counted, logged, never silent."""

from __future__ import annotations

import logging
import time
from collections import deque

from ._snapshot import DeadLetterInfo

log = logging.getLogger("runtime.deadletters")


class DeadLetters:
    """Counts and remembers the most recent undeliverable messages.

    The first dead letter per path is logged at WARNING, the rest at DEBUG, so a
    stream of messages to a stopped actor cannot flood the log.
    """

    def __init__(self, keep: int = 200) -> None:
        self.count = 0
        self.recent: deque[DeadLetterInfo] = deque(maxlen=keep)
        self._warned: set[str] = set()

    def publish(self, path: str, msg: object, reason: str) -> None:
        self.count += 1
        info = DeadLetterInfo(path, type(msg).__name__, reason, time.time())
        self.recent.append(info)
        level = logging.DEBUG if path in self._warned else logging.WARNING
        self._warned.add(path)
        log.log(level, "dead letter to %s: %s (%s)", path, info.message_type, reason)

"""Fault injection for the soak test (``supervisor.py soak``): inert unless configured.

``MAILACTORS_FAULT_CRASH_AFTER_SAVE=PATH`` makes auth exit at once (``os._exit``,
no clean-up, like a crash) right after integration saved a document and
before its EmailSendEvent is published, on every
``MAILACTORS_FAULT_CRASH_EVERY``-th save (default 100) of a process, as long
as the integer in the file at PATH is positive; each crash decrements it. The
counter lives in a file because the launcher restarts auth with the same
environment: the file makes "N crashes in all" hold across restarts. What
the crash leaves behind, a PENDING document that no event will move, is
what the outbox sweeper is for.

``MAILACTORS_FAULT_CRASH_AFTER_ACCEPT=PATH`` (every
``MAILACTORS_FAULT_CRASH_ACCEPT_EVERY``-th acceptance, default 100) does the
same in an email server right after the provider accepted an email and before
its outcome is recorded: the window a claim's unknown-outcome policy is for,
created on purpose. Tests in one process replace :data:`after_accept`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

__all__ = [
    "CRASH_ACCEPT_EVERY",
    "CRASH_AFTER_ACCEPT",
    "CRASH_AFTER_SAVE",
    "CRASH_EVERY",
    "FAULT_EXIT",
    "after_accept",
    "after_save",
]

CRASH_AFTER_SAVE = "MAILACTORS_FAULT_CRASH_AFTER_SAVE"
CRASH_EVERY = "MAILACTORS_FAULT_CRASH_EVERY"
CRASH_AFTER_ACCEPT = "MAILACTORS_FAULT_CRASH_AFTER_ACCEPT"
CRASH_ACCEPT_EVERY = "MAILACTORS_FAULT_CRASH_ACCEPT_EVERY"
FAULT_EXIT = 70  # the exit status of an injected crash


class _CrashAfter:
    def __init__(self, path_env: str, every_env: str, what: str) -> None:
        path = os.environ.get(path_env, "")
        self.path = Path(path) if path else None
        self.every = max(1, int(os.environ.get(every_env, "100") or 100))
        self.what = what
        self.saves = 0

    def __call__(self) -> None:
        if self.path is None:
            return
        self.saves += 1
        if self.saves % self.every:
            return
        try:
            remaining = int(self.path.read_text().strip() or 0)
        except (OSError, ValueError):
            return
        if remaining <= 0:
            return
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(str(remaining - 1))
        os.replace(tmp, self.path)
        print(
            f"injected fault: crashing after {self.what} ({remaining - 1} left)",
            file=sys.stderr,
            flush=True,
        )
        os._exit(FAULT_EXIT)


after_save: Callable[[], None] = _CrashAfter(CRASH_AFTER_SAVE, CRASH_EVERY, "a save")
after_accept: Callable[[], None] = _CrashAfter(
    CRASH_AFTER_ACCEPT, CRASH_ACCEPT_EVERY, "an acceptance"
)

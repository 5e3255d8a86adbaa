"""Helpers for the feedback tests: the bounce samples, a sink that records what it is given."""

from __future__ import annotations

from pathlib import Path

import trio

from actors.feedback import Feedback

DATA = Path(__file__).resolve().parent.parent / "feedback" / "data"
SAMPLES = sorted(p.stem for p in DATA.glob("*.eml"))


def sample(name: str, event_id: str, verp: str) -> bytes:
    """The sample ``name`` (tests/feedback/data/<name>.eml) about ``event_id``, sent to ``verp``."""
    raw = (DATA / f"{name}.eml").read_bytes()
    return raw.replace(b"{{EVENT_ID}}", event_id.encode()).replace(b"{{VERP}}", verp.encode())


class RecordingSink:
    """A FeedbackSink that keeps what it is given; ``fail`` makes the next reports raise."""

    def __init__(self) -> None:
        self.records: list[Feedback] = []
        self.fail = 0  # how many of the next report() calls raise
        self.calls = 0
        self._changed = trio.Event()

    async def report(self, feedback: Feedback) -> None:
        self.calls += 1
        await trio.lowlevel.checkpoint()
        if self.fail > 0:
            self.fail -= 1
            raise RuntimeError("the sink is down (test)")
        self.records.append(feedback)
        self._changed.set()
        self._changed = trio.Event()

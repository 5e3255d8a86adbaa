"""Emails per second by status and send latency over the last hour, drawn as SVG here.

The figures are the system's own Prometheus metrics (``actors.telemetry.metrics``), read
every ``INTERVAL`` seconds while the web view runs and kept for an hour: the statuses the
store recorded (``mailactors_emails_total{component="integration"}``, the email log's view)
and the request-to-sent histogram (``mailactors_request_to_sent_seconds``), summed over
every process. ``read`` gives their samples: ``Trees.metric_samples`` asks each process's
control endpoint (command ``metrics``), so that in the distributed profile the latency
comes from the email-server processes that observe it. Quantiles come from bucket
differences, interpolated within a bucket as Prometheus's ``histogram_quantile`` does.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from actors.domain.schema import Status

__all__ = ["INTERVAL", "Charts"]

INTERVAL = 5.0
WINDOW = 3600.0
WIDTH, HEIGHT, PAD = 900, 200, 40
# One colour per status, in the Status enum's order (a new status takes the next one).
PALETTE = ("#888", "#39c", "#e90", "#2a2", "#c33", "#85c", "#0aa", "#a60", "#c6c", "#555")


class _Sample:
    __slots__ = ("at", "counts", "buckets")

    def __init__(self, at: float, counts: dict[str, float],
                 buckets: list[tuple[float, float]]) -> None:  # fmt: skip
        self.at = at
        self.counts = counts
        self.buckets = buckets


class Charts:
    """Samples the metrics ``read`` returns (``[name, labels, value]``); draws the last hour."""

    def __init__(
        self, read: Callable[[], Awaitable[list[list[Any]]]], *, interval: float = INTERVAL
    ) -> None:
        self.read = read
        self.interval = interval
        self.samples: deque[_Sample] = deque(maxlen=int(WINDOW / interval) + 1)

    async def sample(self) -> None:
        counts: dict[str, float] = {}
        by_le: dict[float, float] = {}
        for name, labels, value in await self.read():
            if name == "mailactors_emails_total" and labels.get("component") == "integration":
                counts[labels["status"]] = counts.get(labels["status"], 0.0) + value
            elif name == "mailactors_request_to_sent_seconds_bucket":
                le = float(labels["le"])  # summed over the processes that observe it
                by_le[le] = by_le.get(le, 0.0) + value
        self.samples.append(_Sample(trio.current_time(), counts, sorted(by_le.items())))

    async def run(self) -> None:
        """Sample every ``interval`` seconds until cancelled (the HTTP server's lifetime)."""
        while True:
            await self.sample()
            await trio.sleep(self.interval)

    # -- series ------------------------------------------------------------------

    def rates(self) -> dict[str, list[tuple[float, float]]]:
        """(seconds ago, emails/s) per status, for every status of the enum."""
        now = trio.current_time()
        out: dict[str, list[tuple[float, float]]] = {s.value: [] for s in Status}
        pairs = list(zip(list(self.samples)[:-1], list(self.samples)[1:], strict=True))
        for a, b in pairs:
            dt = b.at - a.at
            for status in out:
                delta = b.counts.get(status, 0.0) - a.counts.get(status, 0.0)
                out[status].append((now - b.at, max(delta, 0.0) / dt if dt > 0 else 0.0))
        return out

    def latency(self) -> dict[str, list[tuple[float, float]]]:
        """(seconds ago, ms) of p50 and p95 per interval in which something was SENT."""
        now = trio.current_time()
        out: dict[str, list[tuple[float, float]]] = {"p50": [], "p95": []}
        samples = list(self.samples)
        for a, b in zip(samples[:-1], samples[1:], strict=True):
            before = dict(a.buckets)
            delta = [(le, n - before.get(le, 0.0)) for le, n in b.buckets]
            total = delta[-1][1] if delta else 0.0
            if total <= 0:
                continue
            for name, q in (("p50", 0.5), ("p95", 0.95)):
                out[name].append((now - b.at, 1000 * _quantile(q, delta, total)))
        return out

    # -- drawing -----------------------------------------------------------------

    def svg(self, which: str) -> dict[str, Any]:
        """What the template needs to draw one chart: polylines, axis labels, a legend."""
        series = self.rates() if which == "rates" else self.latency()
        top = max((v for points in series.values() for _, v in points), default=0.0)
        top = _nice(top)
        lines = []
        for i, (name, points) in enumerate(series.items()):
            if not points:
                continue
            xy = " ".join(
                f"{PAD + (WIDTH - 2 * PAD) * (1 - ago / WINDOW):.1f},"
                f"{HEIGHT - PAD - (HEIGHT - 2 * PAD) * (v / top if top else 0):.1f}"
                for ago, v in points
                if ago <= WINDOW
            )
            end = xy.rpartition(" ")[2].split(",") if xy else ["0", "0"]
            lines.append({"name": name, "points": xy, "colour": PALETTE[i % len(PALETTE)],
                          "last": round(points[-1][1], 1), "end": end})  # fmt: skip
        return {
            "width": WIDTH, "height": HEIGHT, "pad": PAD, "top": top,
            "unit": "emails/s" if which == "rates" else "ms",
            "lines": lines, "samples": len(self.samples),
        }  # fmt: skip


def _quantile(q: float, buckets: list[tuple[float, float]], total: float) -> float:
    rank = q * total
    lower_le, lower_n = 0.0, 0.0
    for le, n in buckets:
        if n >= rank:
            if math.isinf(le):
                return lower_le
            span = n - lower_n
            return lower_le + (le - lower_le) * ((rank - lower_n) / span if span else 1.0)
        lower_le, lower_n = le, n
    return lower_le


def _nice(value: float) -> float:
    """A round axis maximum at or above *value* (1, 2, 5 times a power of ten)."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if value <= step * power:
            return float(step * power)
    return float(10 * power)

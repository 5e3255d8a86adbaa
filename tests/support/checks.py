"""What tests measure of a run: rates in a window, event ids received."""

from __future__ import annotations

from collections import Counter
from email import message_from_bytes, policy
from typing import Any


def max_in_any_window(times: list[float], window: float = 1.0) -> int:
    """The most timestamps in any half-open window [t, t + window)."""
    times = sorted(times)
    best = 0
    j = 0
    for i, t in enumerate(times):
        while times[j] <= t - window + 1e-9:
            j += 1
        best = max(best, i - j + 1)
    return best


def received_ids(server: Any) -> Counter[str]:
    return Counter(
        message_from_bytes(m.data, policy=policy.default)["X-Mailactors-Event-Id"]
        for m in server.messages()
    )

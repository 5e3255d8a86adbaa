"""Waiting on another process's state, where there is no event to wait on: poll, bounded."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable

import trio


async def poll_until(
    predicate: Callable[[], bool | Awaitable[bool]],
    *,
    timeout: float,
    what: str,
    interval: float = 0.05,
) -> None:
    """Call ``predicate`` every ``interval`` s until it is true; fail after ``timeout`` s."""
    deadline = trio.current_time() + timeout
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if trio.current_time() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await trio.sleep(interval)

"""A gate on the intake of new work, which an operator can close and open again.

Closing it stops the actors that pull work from outside (a broker queue, a
socket) from taking more, while everything already taken runs to its end:
nothing is cancelled but the wait for the *next* item. It is event-driven: a
closed gate costs its waiters nothing until it opens.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import msgspec
import trio

T = TypeVar("T")

__all__ = ["GateStatistics", "IntakeGate"]


class GateStatistics(msgspec.Struct, frozen=True):
    paused: bool
    paused_at: float | None  # wall-clock time of the pause, epoch seconds
    pauses: int  # how many times it was closed since it was made
    waiting: int  # tasks waiting for it to open


class IntakeGate:
    """Open by default. :meth:`pause` closes it, :meth:`resume` opens it.

    Actors take work with :meth:`take`, which runs the taking call only while
    the gate is open and cancels it when the gate closes, so a pause takes
    effect even for a task already waiting for the next message.
    """

    def __init__(self) -> None:
        self._open = trio.Event()
        self._open.set()
        self._takers: set[trio.CancelScope] = set()
        self._paused_at: float | None = None
        self._pauses = 0
        self._waiting = 0

    @property
    def paused(self) -> bool:
        return not self._open.is_set()

    def pause(self) -> bool:
        """Close the gate; return False if it was closed already."""
        if self.paused:
            return False
        self._open = trio.Event()
        self._paused_at = time.time()
        self._pauses += 1
        for scope in self._takers:
            scope.cancel()
        return True

    def resume(self) -> bool:
        """Open the gate; return False if it was open already."""
        if not self.paused:
            return False
        self._paused_at = None
        self._open.set()
        return True

    async def wait_open(self) -> None:
        """Return once the gate is open (at once, after a checkpoint, if it is)."""
        if not self.paused:
            await trio.lowlevel.checkpoint()
            return
        self._waiting += 1
        try:
            await self._open.wait()
        finally:
            self._waiting -= 1

    async def take(self, fn: Callable[[], Awaitable[T]]) -> T:
        """``await fn()`` while the gate is open and return what it returns.

        If the gate closes while ``fn`` waits, that call is cancelled and made
        again once the gate opens. ``fn`` must therefore be cancel-safe: a
        cancelled call takes nothing (a Trio channel's ``receive`` is).
        """
        while True:
            await self.wait_open()
            with trio.CancelScope() as scope:
                self._takers.add(scope)
                try:
                    return await fn()
                finally:
                    self._takers.discard(scope)

    def statistics(self) -> GateStatistics:
        return GateStatistics(
            paused=self.paused,
            paused_at=self._paused_at,
            pauses=self._pauses,
            waiting=self._waiting,
        )

"""Progress bars for long commands (``send --batch``, ``soak``, ``bench``), on stderr.

stdout stays free for results (JSON lines), so a script can pipe them while a
person watches the bar. rich draws the bar in a terminal; elsewhere (a pipe,
CI) it prints only the final state, once::

    with progress_bar("sending", total=len(requests), unit="emails") as bar:
        for req in requests:
            ...
            bar.advance()
        bar.note("3 failed")             # shown after the bar

    with progress_display() as display:  # several bars, one display
        submitted = display.add("submitted", total=n, unit="emails")
        terminal = display.add("terminal", total=n, unit="emails")

Calls are cheap and thread-safe, so a Trio or asyncio task can call
``advance`` for every item.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

__all__ = [
    "ProgressDisplay",
    "ProgressTracker",
    "progress_bar",
    "progress_display",
    "stderr_console",
]


def stderr_console() -> Console:
    return Console(stderr=True)


class ProgressTracker:
    """One bar: ``advance``, ``update``, ``note``; read ``completed``."""

    def __init__(self, progress: Progress, task: TaskID) -> None:
        self._progress = progress
        self._task = task

    def advance(self, n: float = 1) -> None:
        self._progress.advance(self._task, n)

    def update(
        self,
        *,
        completed: float | None = None,
        total: float | None = None,
        description: str | None = None,
    ) -> None:
        self._progress.update(self._task, completed=completed, total=total, description=description)

    def note(self, text: str) -> None:
        """A short status shown after the bar (e.g. ``"2 failed"``)."""
        self._progress.update(self._task, note=text)

    @property
    def completed(self) -> float:
        return self._progress.tasks[self._task].completed


class ProgressDisplay:
    """Several bars drawn together (e.g. ``submitted`` and ``terminal`` in a soak run)."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress

    def add(
        self, description: str, total: float | None = None, *, unit: str = ""
    ) -> ProgressTracker:
        task = self.progress.add_task(
            description, total=total, note="", unit=f" {unit}" if unit else ""
        )
        return ProgressTracker(self.progress, task)


@contextmanager
def progress_display(
    *, console: Console | None = None, disable: bool = False, transient: bool = False
) -> Iterator[ProgressDisplay]:
    """A display for bars added with :meth:`ProgressDisplay.add`, for the duration of the block.

    Each bar shows count / total, percentage, rate (its ``unit``/s), elapsed and
    remaining time and a note. ``disable=True`` (``--quiet``) keeps the API and
    draws nothing.
    """
    progress = Progress(
        SpinnerColumn(),
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        _RateColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[note]}"),
        console=console or stderr_console(),
        disable=disable,
        transient=transient,
    )
    with progress:
        yield ProgressDisplay(progress)


@contextmanager
def progress_bar(
    description: str,
    total: float | None = None,
    *,
    unit: str = "",
    console: Console | None = None,
    disable: bool = False,
    transient: bool = False,
) -> Iterator[ProgressTracker]:
    """One bar for the duration of the block; ``total=None`` shows a spinner and a count."""
    with progress_display(console=console, disable=disable, transient=transient) as display:
        yield display.add(description, total, unit=unit)


class _RateColumn(ProgressColumn):
    """Items per second, with the task's unit; blank until there is a rate."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        if speed is None:
            return Text("", style="progress.data.speed")
        unit = task.fields.get("unit", "")
        return Text(f"{speed:,.1f}{unit}/s", style="progress.data.speed")

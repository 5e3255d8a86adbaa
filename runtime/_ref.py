"""Cells (what outlives an actor's restarts) and refs (how everyone else reaches it).

A cell owns the mailbox, the counters and the state of one place in the tree.
It is created once, when the tree is built, and kept across restarts, so a ref
taken before a crash still works after it and messages sent during a restart
wait in the mailbox. Only when the place is stopped for good does the cell
close; after that every message goes to the dead letters.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sized
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import trio

from ._errors import ActorStopped, AskTimeout, MailboxFull, MessageTypeError
from ._snapshot import ActorInfo, ActorState, ErrorInfo

if TYPE_CHECKING:
    from ._deadletters import DeadLetters

M = TypeVar("M")
R = TypeVar("R")


class _Reply:
    """The one-shot slot an ``ask`` waits on; the first answer wins.

    First-wins lets the runtime fail every reply still owed when an
    incarnation ends without overwriting one the actor already gave.
    """

    __slots__ = ("event", "value", "error")

    def __init__(self) -> None:
        self.event = trio.Event()
        self.value: Any = None
        self.error: BaseException | None = None

    def set(self, value: Any) -> None:
        if not self.event.is_set():
            self.value = value
            self.event.set()

    def fail(self, error: BaseException) -> None:
        if not self.event.is_set():
            self.error = error
            self.event.set()


class _Ask:
    """Envelope of a request: the message and where its answer goes."""

    __slots__ = ("msg", "reply")

    def __init__(self, msg: object, reply: _Reply) -> None:
        self.msg = msg
        self.reply = reply


class Cell:
    """One place in the tree: mailbox, state and statistics across incarnations."""

    def __init__(
        self,
        path: str,
        kind: str,
        accepts: tuple[type, ...],
        capacity: int,
        dead_letters: DeadLetters,
    ) -> None:
        self.path = path
        self.kind = kind
        self.accepts = accepts
        # Exact types are checked with one set lookup on the hot path; the
        # isinstance fallback (subclasses, ``object``) runs only on a miss.
        self._exact = frozenset(accepts)
        self.capacity = capacity
        self.dead_letters = dead_letters
        self._buffer: Sized | None = None
        if capacity > 0:
            self.send_channel, self.receive_channel = trio.open_memory_channel[object](capacity)
            # Reading the buffer's length is 30x cheaper than statistics(), which
            # matters for snapshots of large trees; fall back if Trio changes.
            buffer = getattr(getattr(self.receive_channel, "_state", None), "data", None)
            if isinstance(buffer, Sized):
                self._buffer = buffer
        self.state = ActorState.STARTING
        self.closed = False
        self.processed = 0
        self.failures = 0
        self.restarts = 0
        self.last_error: ErrorInfo | None = None
        self.started_at = 0.0
        self.report: Any = None  # callable returning extra introspection data, set by the actor
        self._changed = trio.Event()
        self.ref: ActorRef[Any] = ActorRef(self)

    # -- state --------------------------------------------------------------

    def set_state(self, state: ActorState) -> None:
        self.state = state
        if state is ActorState.RUNNING:
            self.started_at = trio.current_time()
        self._changed.set()
        self._changed = trio.Event()

    async def wait_changed(self) -> None:
        """Wait for the next change of state (for tests and tools, not the hot path)."""
        await self._changed.wait()

    def record_failure(self, exc: BaseException) -> None:
        self.failures += 1
        self.last_error = ErrorInfo(type(exc).__name__, str(exc), time.time())

    def close(self, reason: str) -> None:
        """Stop for good: what is still queued goes to the dead letters."""
        if self.closed:
            return
        self.closed = True
        if self.capacity > 0:
            while True:
                try:
                    item = self.receive_channel.receive_nowait()
                except (trio.WouldBlock, trio.ClosedResourceError, trio.EndOfChannel):
                    break
                self._dead(item, reason)
        self.set_state(ActorState.STOPPED)

    def _dead(self, item: object, reason: str) -> None:
        if type(item) is _Ask:
            self.dead_letters.publish(self.path, item.msg, reason)
            item.reply.fail(ActorStopped(self.path, type(item.msg)))
        else:
            self.dead_letters.publish(self.path, item, reason)

    def check_type(self, msg: object) -> None:
        if type(msg) in self._exact or isinstance(msg, self.accepts):
            return
        raise MessageTypeError(self.path, self.kind, type(msg), self.accepts)

    def info(self, now: float) -> ActorInfo:
        running = self.state is ActorState.RUNNING
        if self._buffer is not None:
            depth = len(self._buffer)
        elif self.capacity:
            depth = self.receive_channel.statistics().current_buffer_used
        else:
            depth = 0
        return ActorInfo(
            path=self.path,
            kind=self.kind,
            state=self.state,
            mailbox_depth=depth,
            mailbox_capacity=self.capacity,
            processed=self.processed,
            failures=self.failures,
            restarts=self.restarts,
            last_error=self.last_error,
            uptime=(now - self.started_at) if running else 0.0,
            extra=self.report() if self.report is not None else None,
        )


async def _to_dead_letters(cell: Cell, msg: object) -> None:
    """A message to an actor stopped for good: a checkpoint (a send is one), then the
    dead letters (not when that checkpoint cancels the send)."""
    await trio.lowlevel.checkpoint()
    cell.dead_letters.publish(cell.path, msg, "actor stopped")


class ActorRef(Generic[M]):
    """The address of an actor. Valid for the life of the tree, across restarts.

    ``send`` waits while the mailbox is full (backpressure); ``send_nowait``
    raises :class:`MailboxFull` instead. A message of a type the actor does not
    accept raises :class:`MessageTypeError` here, at the call site. A message to
    an actor stopped for good goes to the dead letters.
    """

    __slots__ = ("_cell",)

    def __init__(self, cell: Cell) -> None:
        self._cell = cell

    @property
    def path(self) -> str:
        return self._cell.path

    def __repr__(self) -> str:
        return f"<ActorRef {self._cell.path} ({self._cell.kind})>"

    async def send(self, msg: M) -> None:
        cell = self._cell
        if type(msg) not in cell._exact:
            cell.check_type(msg)
        if cell.closed:
            await _to_dead_letters(cell, msg)
            return
        try:
            await cell.send_channel.send(msg)
        except trio.ClosedResourceError:
            cell.dead_letters.publish(cell.path, msg, "actor stopped")

    def send_nowait(self, msg: M) -> None:
        cell = self._cell
        if type(msg) not in cell._exact:
            cell.check_type(msg)
        if cell.closed:
            cell.dead_letters.publish(cell.path, msg, "actor stopped")
            return
        try:
            cell.send_channel.send_nowait(msg)
        except trio.WouldBlock:
            raise MailboxFull(cell.path, cell.capacity) from None

    async def ask(self, msg: M, timeout: float = 5.0) -> Any:
        """Send ``msg`` and wait for the value the actor's ``receive`` returns.

        An exception raised by ``receive`` is raised here too (the same object).
        Raises :class:`AskTimeout` after ``timeout`` seconds (``math.inf`` waits
        for ever) and :class:`ActorStopped` if the actor is stopped for good or
        its incarnation ends (crash, restart, cancellation, stop) before it
        answers. The callee's cancellation never crosses into the caller.
        """
        cell = self._cell
        if type(msg) not in cell._exact:
            cell.check_type(msg)
        if cell.closed:
            await _to_dead_letters(cell, msg)
            raise ActorStopped(cell.path, type(msg))
        reply = _Reply()
        with trio.move_on_after(timeout if timeout is not None else math.inf) as scope:
            await cell.send_channel.send(_Ask(msg, reply))
            await reply.event.wait()
        if scope.cancelled_caught:
            raise AskTimeout(cell.path, timeout, type(msg))
        error = reply.error
        if error is not None:
            if not isinstance(error, Exception):
                # A Cancelled (or KeyboardInterrupt) belongs to the callee's scopes;
                # raised here it would cancel whatever nursery encloses the caller.
                raise ActorStopped(cell.path, type(msg), "was cancelled")
            raise error
        return reply.value

    def statistics(self) -> ActorInfo:
        return self._cell.info(trio.current_time())

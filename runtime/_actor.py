"""The Actor base class and the context it runs in."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

import trio

from ._errors import ActorStopped
from ._ref import ActorRef, Cell, _Ask, _Reply
from ._snapshot import ActorState

if TYPE_CHECKING:
    from ._context import SystemContext

M = TypeVar("M")


class ActorContext:
    """What an actor knows about where it runs: its path, its ref, the system."""

    def __init__(
        self, cell: Cell, system: SystemContext, nursery: trio.Nursery, incarnation: _Incarnation
    ) -> None:
        self._cell = cell
        self.system = system
        self._nursery = nursery
        self._incarnation = incarnation

    @property
    def path(self) -> str:
        return self._cell.path

    @property
    def self_ref(self) -> ActorRef[Any]:
        return self._cell.ref

    def lookup(self, path: str) -> ActorRef[Any]:
        """A ref by path; relative paths (no leading ``/``) are tried as siblings first."""
        return self.system.lookup(path, relative_to=self._cell.path)

    def start_soon(self, fn: Callable[..., Awaitable[object]], *args: object) -> None:
        """Run a task that lives and dies with this incarnation of the actor.

        If it raises, the actor fails and its supervisor decides what happens.
        """
        self._nursery.start_soon(fn, *args)

    async def start(self, fn: Callable[..., Awaitable[object]], *args: object) -> object:
        """Like :meth:`start_soon`, waiting for the task's ``task_status.started()``."""
        return await self._nursery.start(fn, *args)

    def mailbox_depth(self) -> int:
        """Messages waiting in this actor's mailbox (for batching: flush when it is empty)."""
        cell = self._cell
        if cell._buffer is not None:
            return len(cell._buffer)
        return cell.receive_channel.statistics().current_buffer_used

    def reply_later(self) -> Reply:
        """Take over answering the ``ask`` being handled now.

        The runtime then does not answer when :meth:`Actor.receive` returns;
        the actor answers through the handle, e.g. after writing a batch.
        Raises ``RuntimeError`` when the message in hand is not an ``ask``.
        """
        inc = self._incarnation
        if inc.current is None:
            raise RuntimeError(f"actor {self.path!r}: reply_later() outside an ask")
        inc.deferred = True
        inc.owed[inc.current] = inc.current_type
        return Reply(inc.current, inc.owed)

    def stop(self) -> None:
        """End this actor normally once the message in hand is done.

        A normal exit: a transient or temporary child is not restarted.
        """
        self._incarnation.request_stop()

    def report(self, fn: Callable[[], dict[str, object]]) -> None:
        """Add what ``fn`` returns to this actor's introspection snapshot."""
        self._cell.report = fn


class Reply:
    """A deferred answer to one ``ask``; the first answer counts.

    If the incarnation that took it ends before answering, the asker gets
    :class:`ActorStopped` at once rather than waiting out its timeout.
    """

    __slots__ = ("_slot", "_owed")

    def __init__(self, slot: _Reply, owed: dict[_Reply, type]) -> None:
        self._slot = slot
        self._owed = owed

    def set(self, value: object) -> None:
        self._slot.set(value)
        self._owed.pop(self._slot, None)

    def fail(self, error: BaseException) -> None:
        self._slot.fail(error)
        self._owed.pop(self._slot, None)


class Actor(Generic[M]):
    """Subclass this and implement :meth:`receive`.

    ``accepts`` lists the message types the actor takes; a ref refuses any other
    at the call site. Each restart calls the factory again, so an incarnation
    starts from fresh state. ``started`` runs before the supervisor sees the
    actor as ready (start the next sibling only after it returns);
    ``stopping`` runs on a graceful stop, after the message in hand is done,
    within the child's shutdown timeout.
    """

    accepts: ClassVar[tuple[type, ...]] = ()
    mailbox: ClassVar[int] = 64
    ctx: ActorContext

    async def started(self) -> None:
        """Acquire resources; raise to fail the start."""

    async def receive(self, msg: M) -> Any:
        """Handle one message. For an ``ask``, the return value is the reply."""
        raise NotImplementedError

    async def stopping(self) -> None:
        """Hand back or finish in-flight work before a graceful stop."""


class _Incarnation:
    """Runs one incarnation of an actor: start, message loop, graceful stop."""

    __slots__ = (
        "cell",
        "actor",
        "stop_requested",
        "busy",
        "idle_scope",
        "current",
        "current_type",
        "deferred",
        "owed",
    )

    def __init__(self, cell: Cell, actor: Actor[Any]) -> None:
        self.cell = cell
        self.actor = actor
        self.stop_requested = False
        self.busy = False
        self.idle_scope = trio.CancelScope()
        self.current: _Reply | None = None
        self.current_type: type = object
        self.deferred = False
        # Replies taken with reply_later() and not answered yet, with the
        # request's type for the error: all fail when the incarnation ends.
        self.owed: dict[_Reply, type] = {}

    def request_stop(self) -> None:
        self.stop_requested = True
        if not self.busy:
            # Waiting for a message: nothing is lost by cancelling the wait.
            self.idle_scope.cancel()

    async def run(self, system: SystemContext, task_status: trio.TaskStatus[None]) -> None:
        try:
            await self._run(system, task_status)
        finally:
            # Runs after the nursery closed: no task of this incarnation can
            # answer any more, so whoever still waits is told now.
            owed, self.owed = self.owed, {}
            for slot, msg_type in owed.items():
                slot.fail(ActorStopped(self.cell.path, msg_type, "ended"))

    async def _run(self, system: SystemContext, task_status: trio.TaskStatus[None]) -> None:
        cell = self.cell
        actor = self.actor
        async with trio.open_nursery() as nursery:
            actor.ctx = ActorContext(cell, system, nursery, self)
            await actor.started()
            cell.set_state(ActorState.RUNNING)
            task_status.started()
            receive = cell.receive_channel.receive
            handle = actor.receive
            with self.idle_scope:
                if self.stop_requested:
                    self.idle_scope.cancel()
                while True:
                    item = await receive()
                    self.busy = True
                    if type(item) is _Ask:
                        self.current = reply = item.reply
                        self.current_type = type(item.msg)
                        self.deferred = False
                        try:
                            value = await handle(item.msg)
                        except Exception as exc:
                            if not self.deferred:
                                reply.fail(exc)
                            raise
                        except BaseException:
                            # Cancelled belongs to this actor's scopes, never the
                            # caller's: the caller learns the actor went away.
                            if not self.deferred:
                                reply.fail(
                                    ActorStopped(cell.path, type(item.msg), "was cancelled")
                                )
                            raise
                        finally:
                            self.current = None
                        if not self.deferred:
                            reply.set(value)
                    else:
                        await handle(item)
                    self.busy = False
                    cell.processed += 1
                    if self.stop_requested:
                        break
            cell.set_state(ActorState.STOPPING)
            await actor.stopping()
            nursery.cancel_scope.cancel()

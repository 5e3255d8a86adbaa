"""The Actor base class and the context it runs in."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

import trio

from ._errors import ActorError, ActorStopped
from ._ref import ActorRef, Cell, _Ask, _Reply
from ._snapshot import ActorState

if TYPE_CHECKING:
    from ._context import SystemContext

M = TypeVar("M")

log = logging.getLogger("runtime.actor")


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

    def reply_later(self, index: int | None = None) -> Reply:
        """Take over answering the ``ask`` being handled now.

        The runtime then does not answer when :meth:`Actor.receive` returns;
        the actor answers through the handle, e.g. after writing a batch.
        In :meth:`Actor.receive_batch`, ``index`` names the message of the
        batch (its result in the returned list is then ignored).
        Raises ``RuntimeError`` when the message in hand is not an ``ask``.
        """
        inc = self._incarnation
        if index is not None:
            slot = inc.batch_slots[index] if 0 <= index < len(inc.batch_slots) else None
            if slot is None:
                raise RuntimeError(f"actor {self.path!r}: reply_later({index}) is not an ask")
            inc.batch_deferred.add(index)
            inc.owed[slot] = type(inc.batch_msgs[index])
            return Reply(slot, inc.owed)
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


class Failed:
    """A result of :meth:`Actor.receive_batch` that fails one message alone.

    Its asker gets ``error`` raised, the other messages of the batch get their
    replies, and the actor keeps running (a failure that should restart the
    actor is raised instead). For a message sent without ``ask`` the error is
    logged and counted in the actor's ``failures``.
    """

    __slots__ = ("error",)

    def __init__(self, error: Exception) -> None:
        self.error = error

    def __repr__(self) -> str:
        return f"Failed({self.error!r})"


class Actor(Generic[M]):
    """Subclass this and implement :meth:`receive` (or, with ``batch``, :meth:`receive_batch`).

    ``accepts`` lists the message types the actor takes; a ref refuses any other
    at the call site. Each restart calls the factory again, so an incarnation
    starts from fresh state. ``started`` runs before the supervisor sees the
    actor as ready (start the next sibling only after it returns);
    ``stopping`` runs on a graceful stop, after the message in hand is done,
    within the child's shutdown timeout.

    ``batch`` above 0 makes the actor take, in one turn, the message that woke
    it and whatever else is already waiting (at most ``batch`` in all) and hand
    them to :meth:`receive_batch`: a batch is formed only from what is queued,
    so nothing ever waits for a batch to fill and a lone message goes alone.
    """

    accepts: ClassVar[tuple[type, ...]] = ()
    mailbox: ClassVar[int] = 64
    batch: ClassVar[int] = 0
    ctx: ActorContext

    async def started(self) -> None:
        """Acquire resources; raise to fail the start."""

    async def receive(self, msg: M) -> Any:
        """Handle one message. For an ``ask``, the return value is the reply."""
        raise NotImplementedError

    async def receive_batch(self, msgs: list[M]) -> Sequence[Any]:
        """Handle the messages waiting, in mailbox order (only with ``batch`` > 0).

        Return one result per message: the reply to its ``ask`` (ignored for a
        send), or :class:`Failed` to fail that message alone. Raising fails every
        ask of the batch not taken with ``ctx.reply_later(i)`` with the error,
        and the actor with it, as :meth:`receive` raising does.
        """
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
        "batch_slots",
        "batch_msgs",
        "batch_deferred",
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
        # The batch in hand (receive_batch): each message's reply slot (None for a
        # send), the messages, and the indexes taken with reply_later(i).
        self.batch_slots: list[_Reply | None] = []
        self.batch_msgs: list[Any] = []
        self.batch_deferred: set[int] = set()

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
            if actor.batch > 0:
                await self._run_batches()
            else:
                # The loop inline, not in a coroutine of its own: one frame less to resume
                # at every message of every actor.
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

    async def _run_batches(self) -> None:
        cell = self.cell
        actor = self.actor
        limit = actor.batch
        channel = cell.receive_channel
        handle = actor.receive_batch
        with self.idle_scope:
            if self.stop_requested:
                self.idle_scope.cancel()
            while True:
                items = [await channel.receive()]
                self.busy = True
                # Only what is already queued: never a wait for the batch to fill.
                while len(items) < limit:
                    try:
                        items.append(channel.receive_nowait())
                    except trio.WouldBlock:
                        break
                msgs: list[Any] = []
                slots: list[_Reply | None] = []
                for item in items:
                    if type(item) is _Ask:
                        msgs.append(item.msg)
                        slots.append(item.reply)
                    else:
                        msgs.append(item)
                        slots.append(None)
                self.batch_slots = slots
                self.batch_msgs = msgs
                deferred = self.batch_deferred = set()
                try:
                    results = await handle(msgs)
                except Exception as exc:
                    self._fail_batch(exc)
                    raise
                except BaseException:
                    self._fail_batch(None)
                    raise
                if len(results) != len(msgs):
                    error = ActorError(
                        f"actor {cell.path!r}: receive_batch returned {len(results)} "
                        f"results for {len(msgs)} messages"
                    )
                    self._fail_batch(error)
                    raise error
                self.batch_slots = []
                i = 0
                for slot, value in zip(slots, results, strict=True):
                    if deferred and i in deferred:
                        pass
                    elif type(value) is Failed:
                        if slot is not None:
                            slot.fail(value.error)
                        else:
                            cell.record_failure(value.error)
                            log.warning(
                                "%s: %s failed: %r", cell.path, type(msgs[i]).__name__, value.error
                            )
                    elif slot is not None:
                        slot.set(value)
                    i += 1
                self.busy = False
                cell.processed += len(items)
                if self.stop_requested:
                    break

    def _fail_batch(self, exc: Exception | None) -> None:
        """``receive_batch`` raised: every ask it did not take over fails (``exc``, or
        ActorStopped for a cancellation, which never crosses into the caller)."""
        slots, self.batch_slots = self.batch_slots, []
        for i, slot in enumerate(slots):
            if slot is not None and i not in self.batch_deferred:
                slot.fail(
                    exc
                    if exc is not None
                    else ActorStopped(self.cell.path, type(self.batch_msgs[i]), "was cancelled")
                )

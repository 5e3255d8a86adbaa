"""Supervisors: child specs and restart policy as data, OTP semantics, Trio structure.

A supervisor starts its children in order, each one only after the previous
reported ready (``task_status.started()``), and stops them in reverse order,
each gracefully first (its message in hand finished, its ``stopping`` hook
run) and cancelled only after its shutdown timeout. When a child exits, the
strategy says which children restart, the child's restart type says whether it
restarts at all, and the intensity says how many restarts in how long the
supervisor tolerates before it stops everything and fails to its own parent.
"""

from __future__ import annotations

import enum
import logging
import math
import random
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import trio

from ._actor import Actor, _Incarnation
from ._errors import ActorError, SupervisorEscalation
from ._ref import Cell
from ._snapshot import ActorState

if TYPE_CHECKING:
    from ._context import SystemContext

log = logging.getLogger("runtime.supervisor")


class Strategy(enum.StrEnum):
    """Which children restart when one exits."""

    ONE_FOR_ONE = "one_for_one"  # only the one that exited
    ONE_FOR_ALL = "one_for_all"  # all of them
    REST_FOR_ONE = "rest_for_one"  # it and every child started after it


class Restart(enum.StrEnum):
    """Whether an exited child restarts."""

    PERMANENT = "permanent"  # always
    TRANSIENT = "transient"  # only after a failure
    TEMPORARY = "temporary"  # never


@dataclass(frozen=True)
class Backoff:
    """Exponential delay between restarts of one child, with jitter.

    The n-th consecutive restart waits ``initial * multiplier**n`` seconds (at
    most ``maximum``), scaled by a random factor in ``1 ± jitter``. A child that
    ran ``reset_after`` seconds without failing counts from zero again.
    """

    initial: float = 0.05
    maximum: float = 5.0
    multiplier: float = 2.0
    jitter: float = 0.2
    reset_after: float = 10.0

    def delay(self, consecutive: int, rng: random.Random) -> float:
        base = min(self.maximum, self.initial * self.multiplier**consecutive)
        if self.jitter:
            base *= 1.0 + rng.uniform(-self.jitter, self.jitter)
        return max(0.0, base)


@dataclass(frozen=True)
class ChildSpec:
    """How to start and restart one actor: data, not code."""

    name: str
    actor: type[Actor[Any]]
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    restart: Restart = Restart.PERMANENT
    shutdown: float = 5.0  # seconds to stop gracefully before being cancelled
    mailbox: int | None = None  # capacity; None takes the actor class's ``mailbox``


@dataclass(frozen=True)
class SupervisorSpec:
    """A supervisor and its children, which may be supervisors in turn."""

    name: str
    children: Sequence[ChildSpec | SupervisorSpec]
    strategy: Strategy = Strategy.ONE_FOR_ONE
    intensity: int = 3  # at most this many restarts ...
    period: float = 5.0  # ... in this many seconds
    backoff: Backoff = Backoff()
    restart: Restart = Restart.PERMANENT
    shutdown: float = 30.0


Spec = ChildSpec | SupervisorSpec


class _Node:
    """A place in the tree, built once from the specs; keeps its cell for life."""

    def __init__(self, spec: Spec, path: str, cell: Cell, children: list[_Node]) -> None:
        self.spec = spec
        self.path = path
        self.cell = cell
        self.children = children
        self.child: _Child | None = None  # the live runtime state, while its parent runs

    def cells(self) -> list[Cell]:
        out = [self.cell]
        for c in self.children:
            out.extend(c.cells())
        return out


class _StartStatus:
    """A ``task_status`` that remembers whether ``started()`` was called."""

    __slots__ = ("_inner", "done")

    def __init__(self, inner: trio.TaskStatus[None]) -> None:
        self._inner = inner
        self.done = False

    def started(self, value: None = None) -> None:
        self.done = True
        self._inner.started()


class _Child:
    """The supervisor's bookkeeping for one child."""

    def __init__(self, node: _Node) -> None:
        self.node = node
        self.spec = node.spec
        self.cell = node.cell
        self.incarnation = 0
        self.running = False
        self.deliberate = False  # stopped by the supervisor, not by itself
        self.scope = trio.CancelScope()
        self.exited = trio.Event()
        self.runner: _Incarnation | Supervisor | None = None
        self.injected: BaseException | None = None
        self.consecutive = 0
        self.started_at = 0.0
        node.child = self

    def request_stop(self) -> None:
        if self.runner is not None:
            self.runner.request_stop()

    def inject(self, exc: BaseException) -> None:
        """Make the running incarnation fail with ``exc`` (tests, operator restarts)."""
        self.injected = exc
        self.scope.cancel()


def _unwrap(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


class ActorStartError(ActorError):
    """A child failed while starting, before it reported ready."""

    def __init__(self, path: str, cause: BaseException) -> None:
        super().__init__(f"actor {path!r} failed to start: {type(cause).__name__}: {cause}")
        self.path = path


_STOP = object()


class Supervisor:
    """One incarnation of a supervisor (restarting it makes a new one)."""

    def __init__(self, node: _Node, system: SystemContext) -> None:
        spec = node.spec
        assert isinstance(spec, SupervisorSpec)
        self.spec = spec
        self.node = node
        self.system = system
        self.children = [_Child(n) for n in node.children]
        self._events_send, self._events = trio.open_memory_channel[Any](math.inf)
        self._restarts: deque[float] = deque()
        self._stopping = False
        self._backoff_scope: trio.CancelScope | None = None
        self._nursery: trio.Nursery | None = None
        self._rng = random.Random()

    @property
    def label(self) -> str:
        return self.node.path or self.system.name

    # -- control ------------------------------------------------------------

    def request_stop(self) -> None:
        self._stopping = True
        self._events_send.send_nowait(_STOP)
        if self._backoff_scope is not None:
            self._backoff_scope.cancel()

    async def add_child(self, node: _Node) -> None:
        """Start a child after the initial ones (dynamic children)."""
        child = _Child(node)
        self.children.append(child)
        self.node.children.append(node)
        error = await self._start(child)
        if error is not None:
            self.children.remove(child)
            self.node.children.remove(node)
            raise ActorStartError(node.path, error) from error

    # -- running ------------------------------------------------------------

    async def run(self, system: SystemContext, task_status: trio.TaskStatus[None]) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for child in self.children:
                if self._stopping:
                    break
                error = await self._start(child)
                if error is not None:
                    # As in OTP: a child that cannot start at all fails its supervisor.
                    await self._stop_all()
                    raise ActorStartError(child.node.path, error) from error
            self.node.cell.set_state(ActorState.RUNNING)
            task_status.started()
            while not self._stopping:
                event = await self._events.receive()
                if event is _STOP:
                    break
                child, incarnation, error = event
                if incarnation != child.incarnation or child.deliberate:
                    continue  # a stop we asked for, or an old incarnation
                await self._on_exit(child, error)
            await self._stop_all()
            nursery.cancel_scope.cancel()

    async def _start(self, child: _Child) -> BaseException | None:
        """Start one child and wait until it is ready; return its start error, if any."""
        assert self._nursery is not None
        child.incarnation += 1
        child.deliberate = False
        child.injected = None
        child.scope = trio.CancelScope()
        child.exited = trio.Event()
        if child.cell.state is not ActorState.RESTARTING:
            child.cell.set_state(ActorState.STARTING)
        try:
            await self._nursery.start(self._child_task, child, child.incarnation)
        except Exception as exc:
            error = _unwrap(exc)
            child.cell.record_failure(error)
            log.error("%s failed to start: %r", child.node.path, error)
            return error
        child.running = not child.exited.is_set()
        child.started_at = trio.current_time()
        return None

    async def _child_task(
        self, child: _Child, incarnation: int, task_status: trio.TaskStatus[None]
    ) -> None:
        spec = child.spec
        runner: _Incarnation | Supervisor
        if isinstance(spec, ChildSpec):
            runner = _Incarnation(child.cell, spec.actor(*spec.args, **spec.kwargs))
        else:
            runner = Supervisor(child.node, self.system)
        child.runner = runner
        status = _StartStatus(task_status)
        error: BaseException | None = None
        try:
            with child.scope:
                try:
                    await runner.run(self.system, status)
                except Exception as exc:
                    if not status.done:
                        raise
                    error = _unwrap(exc)
            if child.injected is not None:
                error = child.injected
        finally:
            child.running = False
            child.exited.set()
        self._events_send.send_nowait((child, incarnation, error))

    async def _on_exit(self, child: _Child, error: BaseException | None) -> None:
        spec = child.spec
        if error is not None:
            child.cell.record_failure(error)
            log.error("%s failed: %s: %s", child.node.path, type(error).__name__, error)
        restart = spec.restart is Restart.PERMANENT or (
            spec.restart is Restart.TRANSIENT and error is not None
        )
        if not restart:
            self._close(child, "actor stopped")
            return
        now = trio.current_time()
        self._restarts.append(now)
        while self._restarts and self._restarts[0] < now - self.spec.period:
            self._restarts.popleft()
        if len(self._restarts) > self.spec.intensity:
            await self._stop_all()
            raise SupervisorEscalation(
                self.label, self.spec.intensity, self.spec.period, child.node.path
            ) from error
        group = self._group(child)
        for other in reversed(group):
            if other is not child and other.running:
                await self._stop_child(other)
        for member in group:
            member.cell.set_state(ActorState.RESTARTING)
        await self._backoff(child, now)
        for member in group:
            if self._stopping:
                return
            if member is not child and member.spec.restart is Restart.TEMPORARY:
                self._close(member, "actor stopped")
                continue
            member.cell.restarts += 1
            error = await self._start(member)
            if error is not None:
                # Counts as another failure of that child; handled like any exit.
                self._events_send.send_nowait((member, member.incarnation, error))
                return

    def _group(self, child: _Child) -> list[_Child]:
        strategy = self.spec.strategy
        live = [c for c in self.children if not c.cell.closed]
        if strategy is Strategy.ONE_FOR_ONE:
            return [child]
        if strategy is Strategy.ONE_FOR_ALL:
            return live
        return [c for c in live if self.children.index(c) >= self.children.index(child)]

    async def _backoff(self, child: _Child, now: float) -> None:
        backoff = self.spec.backoff
        if child.started_at and now - child.started_at >= backoff.reset_after:
            child.consecutive = 0
        delay = backoff.delay(child.consecutive, self._rng)
        child.consecutive += 1
        with trio.CancelScope() as scope:
            self._backoff_scope = scope
            if self._stopping:
                scope.cancel()
            await trio.sleep(delay)
        self._backoff_scope = None

    async def _stop_child(self, child: _Child) -> None:
        """Stop gracefully, then cancel after the child's shutdown timeout."""
        if child.exited.is_set():
            return
        child.deliberate = True
        child.cell.set_state(ActorState.STOPPING)
        child.request_stop()
        with trio.move_on_after(child.spec.shutdown):
            await child.exited.wait()
        if not child.exited.is_set():
            log.warning(
                "%s did not stop within %gs; cancelling it", child.node.path, child.spec.shutdown
            )
            child.scope.cancel()
            await child.exited.wait()

    async def _stop_all(self) -> None:
        for child in reversed(self.children):
            if child.incarnation:
                await self._stop_child(child)

    def _close(self, child: _Child, reason: str) -> None:
        for cell in child.node.cells():
            cell.close(reason)

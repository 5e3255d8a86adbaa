"""The actor system: the registry of paths, the dead letters, and the guardian.

Every tree started in a system hangs under an implicit one-for-one guardian
supervisor; if the guardian itself gives up, the system fails and
:func:`open_actor_system` raises, because nothing above it could decide better.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import trio

from ._deadletters import DeadLetters
from ._errors import ActorNotFound
from ._gate import IntakeGate
from ._ref import ActorRef, Cell
from ._snapshot import TreeSnapshot
from ._supervisor import (
    Backoff,
    ChildSpec,
    Spec,
    Supervisor,
    SupervisorSpec,
    _Node,
)

log = logging.getLogger("runtime.system")


class InjectedCrash(Exception):
    """The failure :meth:`ActorSystem.inject_crash` makes an actor raise by default."""


class ActorSystem:
    """Holds one process's actor trees. Create it with :func:`open_actor_system`."""

    def __init__(
        self,
        name: str,
        *,
        intensity: int = 3,
        period: float = 5.0,
        backoff: Backoff | None = None,
    ) -> None:
        self.name = name
        self.dead_letters = DeadLetters()
        # Closed by an operator to stop actors taking new work from outside (see _gate).
        self.intake = IntakeGate()
        self._nodes: dict[str, _Node] = {}
        guardian_spec = SupervisorSpec(
            name="", children=(), intensity=intensity, period=period, backoff=backoff or Backoff()
        )
        self._guardian_node = _Node(
            guardian_spec, "", Cell("", "guardian", (), 0, self.dead_letters), []
        )
        self._guardian: Supervisor | None = None
        self.stopped = trio.Event()
        # Set by open_actor_system: cancelling them ends the system without grace.
        self._scopes: list[trio.CancelScope] = []

    # -- building -----------------------------------------------------------

    def _build(self, spec: Spec, parent: str) -> _Node:
        path = f"{parent}/{spec.name}" if parent else spec.name
        if not spec.name or "/" in spec.name:
            raise ValueError(f"bad actor name {spec.name!r} under {parent or self.name!r}")
        if path in self._nodes:
            raise ValueError(f"an actor is already registered at {path!r}")
        if isinstance(spec, ChildSpec):
            capacity = spec.mailbox if spec.mailbox is not None else spec.actor.mailbox
            if capacity < 1:
                raise ValueError(f"{path}: mailbox capacity must be >= 1, got {capacity}")
            cell = Cell(path, spec.actor.__name__, spec.actor.accepts, capacity, self.dead_letters)
            node = _Node(spec, path, cell, [])
        else:
            cell = Cell(path, "supervisor", (), 0, self.dead_letters)
            node = _Node(spec, path, cell, [self._build(c, path) for c in spec.children])
        self._nodes[path] = node
        return node

    def _forget(self, node: _Node) -> None:
        self._nodes.pop(node.path, None)
        for c in node.children:
            self._forget(c)

    async def spawn(self, spec: Spec) -> ActorRef[Any]:
        """Start a tree (or a single actor) at the top of this system; return its ref.

        Waits until the whole tree reported ready. Raises ``ActorStartError`` if
        it could not start; nothing is left registered then.
        """
        assert self._guardian is not None, "the system is not running"
        node = self._build(spec, "")
        try:
            await self._guardian.add_child(node)
        except BaseException:
            self._forget(node)
            raise
        return node.cell.ref

    async def _run(self, task_status: trio.TaskStatus[None]) -> None:
        self._guardian = Supervisor(self._guardian_node, self)
        try:
            await self._guardian.run(self, task_status)
        finally:
            for node in self._nodes.values():
                node.cell.close("system stopped")
            self.stopped.set()

    # -- using --------------------------------------------------------------

    def lookup(self, path: str, relative_to: str | None = None) -> ActorRef[Any]:
        """The ref at ``path`` (``a/b/c``). Relative to an actor, siblings are found first."""
        if relative_to and not path.startswith("/"):
            parent = relative_to.rpartition("/")[0]
            candidate = f"{parent}/{path}" if parent else path
            node = self._nodes.get(candidate)
            if node is not None:
                return node.cell.ref
        node = self._nodes.get(path.lstrip("/"))
        if node is None:
            raise ActorNotFound(path)
        return node.cell.ref

    def paths(self) -> list[str]:
        return list(self._nodes)

    def snapshot(self) -> TreeSnapshot:
        """The live tree, frozen: cheap enough for ten times a second on 1,000 actors."""
        now = trio.current_time()
        return TreeSnapshot(
            system=self.name,
            taken_at=time.time(),
            actors=tuple(node.cell.info(now) for node in self._nodes.values()),
            dead_letters=self.dead_letters.count,
        )

    async def inject_crash(self, path: str, error: BaseException | None = None) -> None:
        """Make the actor or supervisor at ``path`` fail now, as if it raised ``error``.

        Returns once the failed incarnation has ended; its supervisor then acts
        on it as on any other failure. Used by the test kit and by operators
        ("restart this actor").
        """
        node = self._nodes.get(path)
        if node is None:
            raise ActorNotFound(path)
        child = node.child
        if child is None or not child.running:
            raise RuntimeError(f"actor {path!r} is not running")
        child.inject(error if error is not None else InjectedCrash(f"crash injected into {path}"))
        await child.exited.wait()

    def request_stop(self) -> None:
        """Begin a graceful stop of every tree, in reverse start order."""
        if self._guardian is not None:
            self._guardian.request_stop()

    def cancel(self) -> None:
        """End the system at once: every actor is cancelled, no graceful stop."""
        for scope in self._scopes:
            scope.cancel()

    async def wait_stopped(self) -> None:
        await self.stopped.wait()


@asynccontextmanager
async def open_actor_system(
    name: str = "system",
    *,
    shutdown: float = 30.0,
    intensity: int = 3,
    period: float = 5.0,
) -> AsyncIterator[ActorSystem]:
    """Run an actor system for the duration of the ``async with`` block.

    On leaving the block the trees stop gracefully in reverse order (bounded
    by ``shutdown`` seconds, then cancelled). If the guardian gives up, the
    block is cancelled and the failure is raised.
    """
    system = ActorSystem(name, intensity=intensity, period=period)
    async with trio.open_nursery() as nursery:
        system._scopes.append(nursery.cancel_scope)
        await nursery.start(system._run)
        try:
            yield system
        finally:
            system.request_stop()
            with trio.move_on_after(shutdown) as scope:
                scope.shield = True
                system._scopes.append(scope)
                await system.stopped.wait()
            nursery.cancel_scope.cancel()


async def run_actor_system(
    spec: Spec,
    *,
    name: str | None = None,
    ready: Callable[[ActorSystem], object] | None = None,
    stop_signals: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM),
) -> None:
    """Run one service's tree until SIGINT/SIGTERM or until it stops by itself.

    The first signal stops the tree gracefully, children in reverse order with
    their shutdown timeouts; a second signal cancels whatever is still running.
    """
    async with open_actor_system(name or spec.name, shutdown=spec.shutdown) as system:
        with trio.open_signal_receiver(*stop_signals) as signals:
            await system.spawn(spec)
            if ready is not None:
                ready(system)
            await serve_until_stopped(system, signals)


async def serve_until_stopped(system: ActorSystem, signals: AsyncIterator[int]) -> None:
    """Wait until ``system`` stops; the first signal stops it gracefully, a second cancels.

    ``signals`` comes from ``trio.open_signal_receiver``, opened by the caller
    before it started anything, so that no signal arrives unhandled.
    """
    async with trio.open_nursery() as nursery:

        async def watch_signals() -> None:
            count = 0
            async for signum in signals:
                count += 1
                if count == 1:
                    log.info("%s: stopping (signal %d)", system.name, signum)
                    system.request_stop()
                else:
                    log.warning("%s: second signal, cancelling", system.name)
                    system.cancel()

        nursery.start_soon(watch_signals)
        await system.stopped.wait()
        nursery.cancel_scope.cancel()

"""Test kit: an actor system per test, probe actors, crash injection.

Everything here waits on events, never on wall-clock sleeps, so it works
under Trio's ``MockClock(autojump_threshold=0)`` (pytest-trio's
``autojump_clock`` fixture): backoff and timeouts then take no real time.

    async def test_restart(actor_system, autojump_clock):
        ref = await actor_system.spawn(SupervisorSpec("svc", [ChildSpec("w", Worker)]))
        await actor_system.inject_crash("svc/w")
        await wait_for_state(actor_system, "svc/w", ActorState.RUNNING)
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from typing import Any, ClassVar, TypeVar

import pytest
import trio

from ._actor import Actor
from ._ref import ActorRef
from ._snapshot import ActorState
from ._supervisor import ChildSpec
from ._system import ActorSystem, open_actor_system

T = TypeVar("T")

__all__ = ["Probe", "actor_system", "spawn_probe", "wait_for", "wait_for_state"]


class _ProbeActor(Actor[Any]):
    accepts: ClassVar[tuple[type, ...]] = (object,)
    mailbox = 1000

    def __init__(self, sink: trio.MemorySendChannel[Any], reply: Any) -> None:
        self._sink = sink
        self._reply = reply

    async def receive(self, msg: Any) -> Any:
        self._sink.send_nowait(msg)
        return self._reply(msg) if callable(self._reply) else self._reply


class Probe:
    """Records what it receives; assert on it with :meth:`expect`."""

    def __init__(self, ref: ActorRef[Any], received: trio.MemoryReceiveChannel[Any]) -> None:
        self.ref = ref
        self._received = received
        self.log: list[Any] = []

    async def expect(self, kind: type[T], timeout: float = 1.0) -> T:
        """The next message; fail if it is not a ``kind`` or none comes in ``timeout``."""
        with trio.move_on_after(timeout):
            msg = await self._received.receive()
            self.log.append(msg)
            if not isinstance(msg, kind):
                raise AssertionError(
                    f"probe {self.ref.path}: expected {kind.__name__}, got {msg!r}"
                )
            return msg
        raise AssertionError(f"probe {self.ref.path}: no {kind.__name__} within {timeout:g}s")

    async def expect_nothing(self, duration: float = 0.1) -> None:
        """Fail if any message arrives within ``duration`` seconds."""
        with trio.move_on_after(duration):
            msg = await self._received.receive()
            raise AssertionError(f"probe {self.ref.path}: expected nothing, got {msg!r}")


async def spawn_probe(system: ActorSystem, name: str = "probe", reply: Any = None) -> Probe:
    """Start a probe at the top of ``system``. ``reply`` answers asks (a value or a function)."""
    send, receive = trio.open_memory_channel[Any](math.inf)
    ref = await system.spawn(ChildSpec(name, _ProbeActor, args=(send, reply)))
    return Probe(ref, receive)


async def wait_for_state(
    system: ActorSystem, path: str, state: ActorState, *, restarts: int = 0, timeout: float = 5.0
) -> None:
    """Wait until the actor at ``path`` is in ``state`` with at least ``restarts`` restarts."""
    cell = system.lookup(path)._cell
    with trio.fail_after(timeout):
        while not (cell.state is state and cell.restarts >= restarts):
            await cell.wait_changed()


async def wait_for(system: ActorSystem, path: str, timeout: float = 5.0) -> None:
    """Wait for the next state change of the actor at ``path``."""
    with trio.fail_after(timeout):
        await system.lookup(path)._cell.wait_changed()


@pytest.fixture
async def actor_system() -> AsyncIterator[ActorSystem]:
    """An actor system that lives for one test and is stopped gracefully after it."""
    async with open_actor_system("test", shutdown=10.0) as system:
        yield system

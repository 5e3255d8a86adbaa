"""The runtime's public surface, tested directly: what ``runtime/__init__.py`` exports.

ProcessActor runs real child processes (``sys.executable -c ...``), so its tests use
the real clock with short timeouts; the rest uses the autojump clock.
"""

from __future__ import annotations

import math
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio
import trio.testing

import runtime
from runtime import (
    Actor,
    ActorContext,
    ActorError,
    ActorInfo,
    ActorNotFound,
    ActorRef,
    ActorStartError,
    ActorState,
    ActorStopped,
    AskTimeout,
    ChildSpec,
    DeadLetterInfo,
    ErrorInfo,
    Failed,
    GateStatistics,
    IntakeGate,
    MailboxFull,
    MessageTypeError,
    ProcessActor,
    ProcessExited,
    SupervisorEscalation,
    SupervisorSpec,
    TreeSnapshot,
    open_actor_system,
    serve_until_stopped,
)
from runtime.testing import wait_for_state

TESTS = Path(__file__).resolve().parent.parent


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (a zombie has exited)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def child(code: str, **kwargs: Any) -> ChildSpec:
    return ChildSpec(
        "p", ProcessActor, args=([sys.executable, "-u", "-c", code],), kwargs=kwargs,
        shutdown=kwargs.pop("shutdown", 5.0),
    )


def pid_of(system: runtime.ActorSystem, path: str = "p") -> int:
    info = system.snapshot().by_path()[path]
    assert info.extra is not None
    pid = info.extra["pid"]
    assert isinstance(pid, int)
    return pid


# -- ProcessActor ------------------------------------------------------------------------

SLEEPER = "import time; print('booting', flush=True); time.sleep(120)"


@pytest.mark.timeout(60)
async def test_process_not_ready_in_time_fails_the_start_and_leaves_no_child() -> None:
    async with open_actor_system("t") as system:
        started = trio.current_time()
        with pytest.raises(ActorStartError, match="not ready within 1s") as info:
            with trio.fail_after(20):
                await system.spawn(child(SLEEPER, ready_marker="READY", ready_timeout=1.0))
        assert trio.current_time() - started >= 1.0
        message = str(info.value)
        assert "booting" in message  # the last output is in the error, for the operator
        match = re.search(r"pid (\d+)", message)
        assert match
        assert not alive(int(match.group(1)))
        assert isinstance(info.value, ActorError)


@pytest.mark.timeout(60)
async def test_process_exiting_before_ready_fails_the_start_at_once() -> None:
    code = "import sys; print('bad config: no port', flush=True); sys.exit(3)"
    async with open_actor_system("t") as system:
        with pytest.raises(ActorStartError) as info:
            with trio.fail_after(10):  # not the 60 s ready timeout
                await system.spawn(child(code, ready_marker="READY", ready_timeout=60.0))
    assert "exit" in str(info.value) and "3" in str(info.value)


@pytest.mark.timeout(60)
async def test_process_ready_marker_forwards_output_with_a_prefix(tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    code = "import time; print('hello'); print('READY', flush=True); time.sleep(120)"
    with out.open("w") as output:
        async with open_actor_system("t") as system:
            with trio.fail_after(20):
                await system.spawn(
                    child(code, ready_marker="READY", prefix="[p] ", output=output)
                )
            pid = pid_of(system)
            assert alive(pid)
            assert system.snapshot().by_path()["p"].state is ActorState.RUNNING
    assert not alive(pid)  # stopped with the system (SIGTERM: default action ends it)
    assert out.read_text().splitlines()[:2] == ["[p] hello", "[p] READY"]


@asynccontextmanager
async def child_process(
    tmp_path: Path, code: str, shutdown: float
) -> AsyncIterator[tuple[int, Path]]:
    """A system running *code* as its one child process, up once it printed READY: its pid
    and the file with its output. The system stops at the end of the block."""
    out = tmp_path / "out.txt"
    with out.open("w") as output:
        async with open_actor_system("t", shutdown=20) as system:
            with trio.fail_after(20):
                await system.spawn(
                    child(code, ready_marker="READY", output=output, shutdown=shutdown)
                )
            yield pid_of(system), out


GRACEFUL = """
import signal, sys, time
def term(*_):
    print('got SIGTERM', flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, term)
print('READY', flush=True)
time.sleep(120)
"""

STUBBORN = """
import signal, time
signal.signal(signal.SIGTERM, lambda *_: print('ignoring SIGTERM', flush=True))
print('READY', flush=True)
while True:
    time.sleep(1)
"""


@pytest.mark.timeout(60)
async def test_process_stop_sends_sigterm_and_waits(tmp_path: Path) -> None:
    async with child_process(tmp_path, GRACEFUL, shutdown=10) as (pid, out):
        t0 = trio.current_time()
    assert trio.current_time() - t0 < 5  # it did not need the shutdown timeout
    assert not alive(pid)
    assert "got SIGTERM" in out.read_text()


@pytest.mark.timeout(60)
async def test_process_ignoring_sigterm_is_killed_after_the_shutdown_timeout(
    tmp_path: Path,
) -> None:
    async with child_process(tmp_path, STUBBORN, shutdown=1.5) as (pid, out):
        t0 = trio.current_time()
    elapsed = trio.current_time() - t0
    assert 1.5 <= elapsed < 10, elapsed  # SIGTERM, the 1.5 s grace, then SIGKILL
    assert not alive(pid)  # no orphan left behind
    assert "ignoring SIGTERM" in out.read_text()  # it really was asked first


STUBBORN_PARENT = """
import signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
print(f"READY grandchild={grandchild.pid}", flush=True)
while True:
    time.sleep(1)
"""


@pytest.mark.timeout(60)
async def test_a_killed_process_takes_its_own_children_with_it(tmp_path: Path) -> None:
    async with child_process(tmp_path, STUBBORN_PARENT, shutdown=1.0) as (pid, out):
        pass
    match = re.search(r"grandchild=(\d+)", out.read_text())
    assert match
    grandchild = int(match.group(1))
    for _ in range(100):  # SIGKILL is sent; its end is another process's state: poll, bounded
        if not alive(grandchild):
            break
        await trio.sleep(0.05)
    assert not alive(grandchild), "the child's own child outlived it"
    assert not alive(pid)


@pytest.mark.timeout(60)
async def test_process_exiting_on_its_own_is_restarted_by_its_supervisor(tmp_path: Path) -> None:
    flag = tmp_path / "ran-once"
    # The first incarnation exits after ready; the second stays.
    code = (
        "import os, sys, time\n"
        f"first = not os.path.exists({str(flag)!r})\n"
        f"open({str(flag)!r}, 'a').close()\n"
        "print('READY', flush=True)\n"
        "sys.exit(7) if first else time.sleep(120)\n"
    )
    async with open_actor_system("t") as system:
        spec = SupervisorSpec("svc", [child(code, ready_marker="READY")])
        with trio.fail_after(20):
            await system.spawn(spec)
            await wait_for_state(system, "svc/p", ActorState.RUNNING, restarts=1, timeout=20)
        info = system.snapshot().by_path()["svc/p"]
        assert info.last_error is not None and info.last_error.type == "ProcessExited"
        assert "exited with 7" in info.last_error.message
        assert isinstance(info.last_error, ErrorInfo)
        pid = pid_of(system, "svc/p")
        assert alive(pid)
    assert not alive(pid)


def test_process_exited_is_an_exception_of_its_own() -> None:
    assert issubclass(ProcessExited, Exception) and not issubclass(ProcessExited, ActorError)


# -- serve_until_stopped -------------------------------------------------------------------


class Hangs(Actor[Any]):
    """Its graceful stop never finishes: only a cancel ends it."""

    accepts = ()
    stops: list[str] = []

    async def stopping(self) -> None:
        Hangs.stops.append("stopping")
        await trio.sleep_forever()


async def _signals(receive: trio.MemoryReceiveChannel[int]) -> Any:
    async for signum in receive:
        yield signum


async def test_serve_until_stopped_first_signal_stops_gracefully_second_cancels(
    autojump_clock: trio.testing.MockClock,
) -> None:
    Hangs.stops = []
    send, receive = trio.open_memory_channel[int](math.inf)
    async with open_actor_system("t", shutdown=math.inf) as system:
        await system.spawn(ChildSpec("h", Hangs, shutdown=math.inf))
        async with trio.open_nursery() as nursery:
            done = trio.Event()

            async def serve() -> None:
                await serve_until_stopped(system, _signals(receive))
                done.set()

            nursery.start_soon(serve)
            send.send_nowait(signal.SIGTERM)
            await trio.sleep(3600)  # an hour of virtual time: the stop hangs
            assert Hangs.stops == ["stopping"]
            assert not done.is_set() and not system.stopped.is_set()
            send.send_nowait(signal.SIGINT)  # the second signal
            with trio.fail_after(1):
                await done.wait()
        assert system.stopped.is_set()


async def test_serve_until_stopped_returns_when_the_system_stops_by_itself(
    autojump_clock: trio.testing.MockClock,
) -> None:
    send, receive = trio.open_memory_channel[int](math.inf)
    async with open_actor_system("t") as system:
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(serve_until_stopped, system, _signals(receive))
                await trio.sleep(1)
                system.request_stop()
        assert system.stopped.is_set()


# -- the errors --------------------------------------------------------------------------


class Ping(msgspec.Struct):
    pass


class Slow(Actor[Ping]):
    accepts = (Ping,)
    mailbox = 1

    async def receive(self, msg: Ping) -> None:
        await trio.sleep_forever()


def test_every_runtime_error_is_an_actor_error_and_its_builtin_kin() -> None:
    expected: dict[type[BaseException], tuple[type[BaseException], ...]] = {
        MessageTypeError: (ActorError, TypeError),
        MailboxFull: (ActorError,),
        AskTimeout: (ActorError, TimeoutError),
        ActorStopped: (ActorError,),
        ActorNotFound: (ActorError, LookupError),
        SupervisorEscalation: (ActorError,),
        ActorStartError: (ActorError,),
    }
    for error, bases in expected.items():
        for base in bases:
            assert issubclass(error, base), (error, base)
    exported = {
        getattr(runtime, n) for n in runtime.__all__
        if isinstance(getattr(runtime, n), type) and issubclass(getattr(runtime, n), ActorError)
    }
    assert exported == {ActorError, *expected}  # a new error gets its line above


async def test_the_errors_are_raised_where_they_should_be(
    actor_system: runtime.ActorSystem, autojump_clock: trio.testing.MockClock
) -> None:
    ref = await actor_system.spawn(ChildSpec("slow", Slow))
    assert isinstance(ref, ActorRef)
    with pytest.raises(ActorNotFound, match="nowhere"):
        actor_system.lookup("nowhere")
    with pytest.raises(MessageTypeError, match="does not accept int"):
        await ref.send(5)  # type: ignore[arg-type]
    with pytest.raises(AskTimeout, match="slow"):
        await ref.ask(Ping(), timeout=1)  # taken, never answered
    ref.send_nowait(Ping())  # fills the one place in the mailbox
    with pytest.raises(MailboxFull) as full:
        ref.send_nowait(Ping())
    assert full.value.capacity == 1
    for error in (ActorNotFound("x"), MailboxFull("x", 1)):
        assert isinstance(error, ActorError) and error.path == "x"


async def test_a_stopped_actor_answers_asks_with_actor_stopped(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_actor_system("t") as system:
        ref = await system.spawn(ChildSpec("slow", Slow, restart=runtime.Restart.TEMPORARY))
        await system.inject_crash("slow")
        await wait_for_state(system, "slow", ActorState.STOPPED)
        with pytest.raises(ActorStopped, match="dead letters"):
            await ref.ask(Ping(), timeout=1)
        [letter] = list(system.dead_letters.recent)
        assert isinstance(letter, DeadLetterInfo)
        assert (letter.path, letter.message_type) == ("slow", "Ping")


def test_failed_is_a_result_not_an_error() -> None:
    # Returned from receive_batch (tests/runtime/test_batches.py), never raised.
    error = ValueError("bad item")
    failed = Failed(error)
    assert failed.error is error and "bad item" in repr(failed)
    assert not isinstance(failed, BaseException)
    assert runtime.Actor.batch == 0  # an actor takes one message per turn unless it says so


# -- the introspection types -------------------------------------------------------------


class Reporter(Actor[Ping]):
    accepts = (Ping,)

    async def started(self) -> None:
        assert isinstance(self.ctx, ActorContext)
        self.ctx.report(lambda: {"answer": 42})

    async def receive(self, msg: Ping) -> str:
        return "pong"


async def test_snapshot_types_and_the_gate_statistics(actor_system: runtime.ActorSystem) -> None:
    ref = await actor_system.spawn(ChildSpec("r", Reporter))
    assert await ref.ask(Ping()) == "pong"
    snap = actor_system.snapshot()
    assert isinstance(snap, TreeSnapshot)
    info = snap.by_path()["r"]
    assert isinstance(info, ActorInfo)
    assert (info.kind, info.state, info.processed, info.extra) == (
        "Reporter", ActorState.RUNNING, 1, {"answer": 42},
    )
    gate = IntakeGate()
    gate.pause()
    stats = gate.statistics()
    assert isinstance(stats, GateStatistics)
    assert stats.paused and stats.pauses == 1


# -- every export is named in a test ---------------------------------------------------------


def test_every_runtime_export_is_named_in_some_test() -> None:
    here = Path(__file__).name
    texts = "\n".join(
        p.read_text() for p in TESTS.rglob("test_*.py") if p.name != here
    ) + Path(__file__).read_text().split("# -- every export is named")[0]
    unnamed = [n for n in runtime.__all__ if not re.search(rf"\b{re.escape(n)}\b", texts)]
    assert not unnamed, f"exported but never named in a test: {unnamed}"
    assert os.path.basename(runtime.__file__ or "") == "__init__.py"

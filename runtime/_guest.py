"""Trio as a guest of asyncio: :func:`run_with_asyncio_host` and the fast guest driver.

The only module of the runtime that touches Trio internals (``trio._core._run``). The edge
(``runtime._edge``) asks it two things: the host wake-up of the current guest run, if any
(:func:`host_wakeup`), and whether ``trio.run`` was called from inside a running asyncio loop
(:func:`nested_in_host_loop`). When the internals are not what it expects, it falls back to
``trio.lowlevel.start_guest_run`` (same semantics, a worker thread's cost).
"""

from __future__ import annotations

import asyncio
import inspect
import os
import weakref
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar, TypeVarTuple, Unpack

import outcome
import trio

__all__ = ["host_wakeup", "nested_in_host_loop", "run_with_asyncio_host"]

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

# --------------------------------------------------------------------------------------
# Running Trio as a guest of asyncio
# --------------------------------------------------------------------------------------


def run_with_asyncio_host(
    async_fn: Callable[[Unpack[Ts]], Awaitable[T]],
    *args: *Ts,
    clock: trio.abc.Clock | None = None,
    instruments: Sequence[trio.abc.Instrument] = (),
    loop_factory: Callable[[], asyncio.AbstractEventLoop] = asyncio.SelectorEventLoop,
) -> T:
    """Run ``async_fn(*args)`` under Trio, as a guest on a fresh asyncio event loop.

    This is the entry point for services: it is :func:`trio.run` plus a real asyncio loop
    in the same thread, so that :func:`open_asyncio_edge` inside picks the fast guest
    bridge. Returns what *async_fn* returns or raises what it raises. The host loop lives
    exactly as long as the Trio run; on the way out it is shut down like ``asyncio.run``
    does (remaining tasks cancelled, async generators and the default executor closed).

    Ctrl-C behaves as under :func:`trio.run` with
    ``restrict_keyboard_interrupt_to_checkpoints=True``: SIGINT raises KeyboardInterrupt
    in *async_fn* at its next checkpoint (and ``trio.open_signal_receiver`` works), never
    inside asyncio code, which would leave the host loop half-stopped. The asyncio loop's
    own SIGINT handling (``asyncio.run`` cancelling its main task) is deliberately not
    installed, so there is one owner of Ctrl-C.

    *clock* and *instruments* are passed to Trio as by :func:`trio.run`. *loop_factory*
    makes the host loop; it is explicit because ``asyncio.new_event_loop()`` returns a
    trio-asyncio loop once trio_asyncio has been imported, which cannot host a guest.
    """

    async def host() -> T:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[outcome.Outcome[T]] = loop.create_future()
        if _FAST_GUEST_AVAILABLE:
            _GuestDriver(loop, async_fn, args, done.set_result, clock, instruments).start()
        else:  # Trio internals not as expected (see _FAST_GUEST_AVAILABLE)
            trio.lowlevel.start_guest_run(
                async_fn,
                *args,
                run_sync_soon_threadsafe=loop.call_soon_threadsafe,
                run_sync_soon_not_threadsafe=loop.call_soon,
                done_callback=done.set_result,
                host_uses_signal_set_wakeup_fd=False,
                clock=clock,
                instruments=instruments,
                restrict_keyboard_interrupt_to_checkpoints=True,
            )
        # Nothing cancels this task (asyncio.Runner.run's SIGINT handler is not installed),
        # so the loop cannot stop under a running guest.
        result = await done
        return result.unwrap()

    # asyncio.Runner without Runner.run(): same loop set-up and shutdown as asyncio.run,
    # minus the SIGINT handler that would take Ctrl-C away from Trio.
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.get_loop().run_until_complete(host())


# The fast driver below reuses the pieces ``trio.lowlevel.start_guest_run`` is built from.
# Trio's own driver blocks in a worker thread on Trio's epoll/kqueue and hands results back
# with call_soon_threadsafe: two thread hand-offs per Trio wake-up, 55-130 us measured here
# against 10-15 us for a whole crossing without them. Here the asyncio selector watches
# Trio's epoll/kqueue fd instead (such an fd is itself pollable), so every wake-up stays on
# the loop thread. Everything touched is checked up front; if anything differs we use
# start_guest_run instead, with the same semantics and the thread's cost.

try:
    from sniffio import thread_local as _sniffio_library
    from trio._core import _run as _trio_run

    _SETUP_RUNNER: Any = _trio_run.setup_runner
    _UNROLLED_RUN: Any = _trio_run.unrolled_run
    _IO_MANAGER: Any = vars(_trio_run)["TheIOManager"]  # epoll or kqueue (IOCP: not pollable)
    _FAST_GUEST_AVAILABLE: bool = (
        list(inspect.signature(_SETUP_RUNNER).parameters)
        == [
            "clock",
            "instruments",
            "restrict_keyboard_interrupt_to_checkpoints",
            "strict_exception_groups",
        ]
        and list(inspect.signature(_UNROLLED_RUN).parameters)[:4]
        == ["runner", "async_fn", "args", "host_uses_signal_set_wakeup_fd"]
        and all(
            hasattr(_trio_run.Runner, attr)
            for attr in (
                "is_guest",
                "guest_tick_scheduled",
                "force_guest_tick_asap",
                "runq",
                "system_nursery",
                "main_task_outcome",
                "io_manager",
            )
        )
        and any(hasattr(_IO_MANAGER, attr) for attr in ("_epoll", "_kqueue"))
        and hasattr(_IO_MANAGER, "get_events")
    )
except (ImportError, AttributeError, KeyError, TypeError, ValueError):  # pragma: no cover
    _FAST_GUEST_AVAILABLE = False

_NO_EVENTS: Any = ()  # an empty EventResult: Trio only iterates it
_host_wakeup_var: trio.lowlevel.RunVar[_HostWakeup | None] = trio.lowlevel.RunVar(
    "runtime.asyncio_host_wakeup", default=None
)


class _HostWakeup:
    """How the edge's asyncio callbacks wake a guest run on the fast driver.

    Kept in a RunVar, so it holds the driver only weakly: Trio's runner must not keep the
    run generator alive, or a host loop that abandoned the run would go unnoticed.
    """

    __slots__ = ("_driver",)

    def __init__(self, driver: _GuestDriver) -> None:
        self._driver = weakref.ref(driver)

    def wake(self, make_runnable: Callable[..., object], *args: Any) -> None:
        """Call ``make_runnable(*args)``, which readies a Trio task, then run the guest tick
        right here if Trio was idle.

        Called from asyncio callbacks and task steps (never from inside a tick): Trio runs
        on at once, without a trip through its wakeup socket and the host selector, and
        without waiting for the next loop iteration.
        """
        driver = self._driver()
        if driver is None or not driver.claim_tick():
            make_runnable(*args)
            return
        try:
            make_runnable(*args)
        finally:
            driver.tick_now()


class _GuestDriver:
    """Drives one Trio run as callbacks on an asyncio loop, waiting for I/O in its selector.

    States: *running* (a tick is queued or executing; ``runner.guest_tick_scheduled`` is
    True) and *idle* (Trio waits for I/O, a deadline or a reschedule; the asyncio selector
    watches Trio's poller fd and a timer is armed). Anything in Trio that needs a wake-up
    while idle (a reschedule from asyncio code, a thread's run_sync_soon, a signal) ends in
    ``force_guest_tick_asap``, which writes Trio's wakeup socket, which makes the poller fd
    readable, which wakes us. :meth:`_HostWakeup.wake` is the cheaper path for the edge's
    own asyncio code: it claims the tick before Trio would write that socket.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        async_fn: Callable[..., Awaitable[Any]],
        args: tuple[Any, ...],
        done_callback: Callable[[outcome.Outcome[Any]], object],
        clock: trio.abc.Clock | None,
        instruments: Sequence[trio.abc.Instrument],
    ) -> None:
        self._loop = loop
        self._done_callback = done_callback
        runner = _SETUP_RUNNER(clock, instruments, True, True)
        runner.is_guest = True
        runner.guest_tick_scheduled = True
        self._runner = runner
        self._io = runner.io_manager
        self._gen = _UNROLLED_RUN(runner, async_fn, args, host_uses_signal_set_wakeup_fd=False)
        poller = getattr(self._io, "_epoll", None) or self._io._kqueue
        # Our own descriptor for Trio's poller: Trio closes its fd inside the last tick,
        # before we can unregister it, and the number could be reused by then.
        self._fd = os.dup(poller.fileno())
        # What the next tick sends into the run generator: Trio's I/O events (or the error
        # getting them raised). A plain value, not an Outcome, on the hot path.
        self._next_send: Any = None
        self._idle = False
        self._io_ready = False
        self._timer: asyncio.TimerHandle | None = None
        _host_wakeup_var.set(_HostWakeup(self))

    def start(self) -> None:
        # Like start_guest_run: run the ticks that set up the system nursery synchronously,
        # so that a TrioInternalError during set-up is raised here.
        runner = self._runner
        next_send: Any = None
        for _ in range(5):
            if runner.system_nursery is not None:
                break
            timeout = self._gen.send(next_send)
            if timeout != 0:  # pragma: no cover
                self._gen.throw(trio.TrioInternalError("guest runner blocked during set-up"))
            next_send = []
        else:  # pragma: no cover
            self._gen.throw(trio.TrioInternalError("guest runner set-up did not finish"))
        self._next_send = next_send
        self._loop.add_reader(self._fd, self._on_io)
        self._loop.call_soon(self._tick)

    def _tick(self) -> None:
        prev_library, _sniffio_library.name = _sniffio_library.name, "trio"
        try:
            next_send, self._next_send = self._next_send, _NO_EVENTS
            if type(next_send) is outcome.Error:
                timeout = next_send.send(self._gen)
            else:
                timeout = self._gen.send(next_send)
        except StopIteration:
            self._finish(self._runner.main_task_outcome)
            return
        except trio.TrioInternalError as exc:
            self._finish(outcome.Error(exc))
            return
        finally:
            _sniffio_library.name = prev_library

        # Poll Trio's I/O only when the host selector saw the poller fd readable, or when
        # Trio asks for a zero-timeout look with nothing to run (wait_all_tasks_blocked,
        # autojump clocks). Otherwise anything pending makes the fd readable and wakes us
        # through the selector, which saves a syscall per crossing.
        if self._io_ready or (timeout <= 0 and not self._runner.runq):
            self._io_ready = False
            events = self._poll()
        else:
            events = _NO_EVENTS
        if timeout <= 0 or events:
            self._next_send = events
            self._loop.call_soon(self._tick)
            return
        self._runner.guest_tick_scheduled = False
        self._idle = True
        # Keep an armed timer if it fires no later than needed: firing early only costs
        # one spare tick, while re-arming on every idle period costs on every crossing.
        when = self._loop.time() + timeout
        timer = self._timer
        if timer is None or timer.when() > when:
            if timer is not None:
                timer.cancel()
            self._timer = self._loop.call_at(when, self._on_timer)

    def _on_io(self) -> None:
        self._io_ready = True
        self._wake()

    def _on_timer(self) -> None:
        self._timer = None
        self._wake()

    def _wake(self) -> None:
        """Poller fd readable or deadline reached: collect Trio's events and tick now."""
        if not self._idle:
            return
        self._idle = False
        self._runner.guest_tick_scheduled = True
        self._io_ready = False
        self._next_send = self._poll()
        self._tick()

    def claim_tick(self) -> bool:
        """If Trio is idle, mark a tick as scheduled (so that a reschedule() does not write
        the wakeup socket) and return True; the caller must then call tick_now()."""
        if not self._idle:
            return False
        self._idle = False
        self._runner.guest_tick_scheduled = True
        return True

    def tick_now(self) -> None:
        self._next_send = _NO_EVENTS
        self._tick()

    def _poll(self) -> Any:
        """Trio's ready I/O events, without blocking (an Error is truthy: it gets sent)."""
        try:
            return self._io.get_events(0)
        except BaseException as exc:  # handed to Trio, as start_guest_run does
            return outcome.Error(exc)

    def _finish(self, run_outcome: outcome.Outcome[Any]) -> None:
        self._loop.remove_reader(self._fd)
        os.close(self._fd)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._done_callback(run_outcome)


def host_wakeup() -> _HostWakeup | None:
    """How the edge wakes the current guest run on the fast driver (None: not on it)."""
    return _host_wakeup_var.get()


def nested_in_host_loop() -> bool:
    """True if ``trio.run`` was called from inside a running asyncio loop, which then stays
    blocked: Trio is not that loop's guest."""
    return _FAST_GUEST_AVAILABLE and not _trio_run.GLOBAL_RUN_CONTEXT.runner.is_guest

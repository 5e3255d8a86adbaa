"""The asyncio edge: how Trio actors call asyncio libraries, and how asyncio calls back.

Actors are Trio code; aio-pika, grpclib and aiosmtplib are asyncio code. Every crossing
goes through one :class:`AsyncioEdge`, opened with :func:`open_asyncio_edge`, so that an
actor never knows (or cares) which bridge carries its calls:

* **guest** -- Trio runs as a guest on a real asyncio loop (:func:`run_with_asyncio_host`).
  Both loops share one thread, asyncio code runs at native speed, and a crossing costs a
  task creation and a callback. This is the bridge for services: measured at >= 0.9x plain
  asyncio on an aio-pika publish/consume loop (``python -m bench.bridge``).
* **trio-asyncio** -- an asyncio loop emulated on top of plain ``trio.run`` by
  ``trio_asyncio.open_loop()``. It needs no special entry point, which suits tests and
  tools, but its loop runs aio-pika at about a quarter of native speed.

Both carry the same semantics, because both are implemented by :class:`_LoopEdge` on top of
an asyncio loop object; only the loop and the way Trio is woken differ:

* results and exceptions cross unchanged (the caller gets the very same exception object);
* cancelling the caller cancels the callee and *waits for it to finish*, in both
  directions, so no orphaned task outlives the call that started it;
* a callee cancelled by its own side (not by the caller) is reported to the caller as
  :class:`EdgeCancelledError`, never as a foreign cancellation exception that the
  caller's library would misread as its own.

The guest driver at the bottom of this module replaces ``trio.lowlevel.start_guest_run``'s
I/O thread with the asyncio selector, because the thread hand-offs cost about 100 us per
crossing (a 4x slowdown for a call that does no I/O). It reaches into Trio internals;
when they are not what it expects it falls back to the public ``start_guest_run``.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import sys
import weakref
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Final, ParamSpec, TypeVar, TypeVarTuple, Unpack

import outcome
import trio

try:  # The C accelerator is never monkeypatched (trio_asyncio patches asyncio.events).
    from _asyncio import _get_running_loop as _host_running_loop
except ImportError:  # pragma: no cover - only pure-Python builds lack _asyncio
    from asyncio.events import _get_running_loop as _host_running_loop

__all__ = [
    "AsyncioEdge",
    "EdgeCancelledError",
    "EdgeStatistics",
    "current_edge",
    "open_asyncio_edge",
    "run_with_asyncio_host",
]

P = ParamSpec("P")
T = TypeVar("T")
Ts = TypeVarTuple("Ts")


@dataclass(frozen=True, slots=True)
class EdgeStatistics:
    """A snapshot of one edge, for introspection and tests.

    Attributes:
      name: ``"guest"`` or ``"trio-asyncio"``: which bridge carries the calls.
      calls_in_flight: calls (both directions) started and not yet finished.
      calls_total: calls (both directions) started since the edge was opened.
    """

    name: str
    calls_in_flight: int
    calls_total: int


class EdgeCancelledError(RuntimeError):
    """The other side of the asyncio edge cancelled a call that this side did not cancel.

    Raised in Trio when the asyncio task running :meth:`AsyncioEdge.run` was cancelled by
    asyncio code (a library, or a loop shutting down), and in asyncio when the Trio task
    running :meth:`AsyncioEdge.call_trio` was cancelled because the edge is closing. It is
    a RuntimeError rather than the other library's cancellation exception because the
    caller was not cancelled: letting ``asyncio.CancelledError`` loose in Trio (or
    ``trio.Cancelled`` in asyncio) would make the caller's own library misread it.
    """


class AsyncioEdge(ABC):
    """The one place where Trio code and asyncio code call each other.

    Get one from :func:`open_asyncio_edge` (or :func:`current_edge` inside it). Which bridge
    is used is decided when the edge is opened, so actor code stays the same under both.
    """

    name: str
    """``"guest"`` or ``"trio-asyncio"``."""

    @abstractmethod
    async def run(self, fn: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
        """From Trio: run ``await fn(*args, **kwargs)`` as an asyncio task and return its result.

        *fn* is called inside the asyncio task, so functions that look up the running loop
        when called (not only when awaited) work too. Exceptions propagate unchanged. If the
        calling Trio task is cancelled, the asyncio task is cancelled and this waits until it
        has finished, then raises ``trio.Cancelled`` (or returns the task's result if it
        chose to finish anyway). If asyncio code cancels the task instead, this raises
        :class:`EdgeCancelledError`. This is a Trio checkpoint.
        """

    @abstractmethod
    async def call_trio(self, fn: Callable[[Unpack[Ts]], Awaitable[T]], *args: *Ts) -> T:
        """From asyncio: run ``await fn(*args)`` as a Trio task and return its result.

        Await this from an asyncio task on the edge's loop (a grpclib handler, an aio-pika
        consumer callback). The Trio task lives in the edge's nursery. Exceptions propagate
        unchanged. If the awaiting asyncio task is cancelled, the Trio task is cancelled and
        this waits until it has finished before re-raising ``asyncio.CancelledError``. If the
        edge closes first, this raises :class:`EdgeCancelledError`.
        """

    @abstractmethod
    def statistics(self) -> EdgeStatistics:
        """Return a frozen snapshot of this edge's counters."""


_current_edge: ContextVar[AsyncioEdge] = ContextVar("runtime.asyncio_edge")


def current_edge() -> AsyncioEdge:
    """Return the edge opened by the nearest enclosing :func:`open_asyncio_edge`.

    Works in Trio tasks started inside the ``async with`` block, and in asyncio tasks started
    through :meth:`AsyncioEdge.run` (they inherit the caller's context).
    """
    try:
        return _current_edge.get()
    except LookupError:
        raise RuntimeError(
            "no asyncio edge is open here: wrap the Trio code that calls asyncio libraries in "
            "'async with runtime.open_asyncio_edge() as edge:' (and start services with "
            "runtime.run_with_asyncio_host(main) to get the fast guest bridge)"
        ) from None


@asynccontextmanager
async def open_asyncio_edge() -> AsyncIterator[AsyncioEdge]:
    """Open the asyncio edge for the Trio code inside the block.

    If Trio is running as a guest on an asyncio loop in this thread (see
    :func:`run_with_asyncio_host`), the edge runs asyncio code on that host loop. Otherwise it
    opens a ``trio_asyncio`` loop for the duration of the block. Either way the edge is
    made current (see :func:`current_edge`) for tasks started inside, and leaving the block
    cancels the Trio tasks still serving :meth:`AsyncioEdge.call_trio` calls.
    """
    host = _host_running_loop()
    if host is not None:
        # Trio ticks run as callbacks of a running asyncio loop: we are its guest.
        async with _open_loop_edge("guest", host, _host_wakeup()) as edge:
            yield edge
        return
    import trio_asyncio  # imported lazily: importing it monkeypatches asyncio globally

    async with trio_asyncio.open_loop() as loop, _open_loop_edge("trio-asyncio", loop) as edge:
        yield edge


@asynccontextmanager
async def _open_loop_edge(
    name: str, loop: asyncio.AbstractEventLoop, wake_host: Callable[[], None] | None = None
) -> AsyncIterator[AsyncioEdge]:
    async with trio.open_nursery() as nursery:
        edge = _LoopEdge(name, loop, nursery, wake_host)
        reset = _current_edge.set(edge)
        try:
            yield edge
        finally:
            _current_edge.reset(reset)
            edge._closed = True
            nursery.cancel_scope.cancel()


class _TrioCall:
    """Shared state of one :meth:`AsyncioEdge.call_trio` crossing."""

    __slots__ = ("future", "scope", "finished", "finished_waiter")

    def __init__(self, future: asyncio.Future[Any]) -> None:
        self.future = future
        self.scope = trio.CancelScope()
        self.finished = False
        self.finished_waiter: asyncio.Future[None] | None = None


class _LoopEdge(AsyncioEdge):
    """An edge onto one asyncio loop object: the host loop (guest) or a trio_asyncio loop.

    *wake_host* is given only for the guest bridge with the fast driver: asyncio callbacks
    call it just before they reschedule a Trio task, so that the Trio tick is queued on the
    host loop directly instead of through Trio's wakeup socket.
    """

    def __init__(
        self,
        name: str,
        loop: asyncio.AbstractEventLoop,
        nursery: trio.Nursery,
        wake_host: Callable[[], None] | None,
    ) -> None:
        self.name = name
        self._loop = loop
        self._nursery = nursery
        self._token = trio.lowlevel.current_trio_token()
        self._wake_host = wake_host
        self._closed = False
        self._in_flight = 0
        self._total = 0

    def statistics(self) -> EdgeStatistics:
        return EdgeStatistics(self.name, self._in_flight, self._total)

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"the {self.name} asyncio edge is closed")

    async def run(self, fn: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
        self._check_open()
        await trio.lowlevel.checkpoint_if_cancelled()
        trio_task = trio.lowlevel.current_task()
        task = self._loop.create_task(_invoke(fn, args, kwargs))
        raise_cancel: Callable[[], Any] | None = None
        wake_host = self._wake_host

        def task_done(_: object) -> None:
            # Runs as an asyncio callback, outside any Trio tick; the task's outcome is read
            # back in Trio so that raise_cancel() is called from the right task.
            if wake_host is not None:
                wake_host()
            trio.lowlevel.reschedule(trio_task)

        def abort(raise_cancel_arg: Callable[[], Any]) -> trio.lowlevel.Abort:
            nonlocal raise_cancel
            raise_cancel = raise_cancel_arg
            task.cancel()
            # FAILED: keep waiting until the asyncio task has really finished.
            return trio.lowlevel.Abort.FAILED

        task.add_done_callback(task_done)
        self._in_flight += 1
        self._total += 1
        try:
            await trio.lowlevel.wait_task_rescheduled(abort)
        finally:
            self._in_flight -= 1
        if task.cancelled():
            if raise_cancel is not None:
                raise_cancel()
            raise EdgeCancelledError(
                f"asyncio task running {_describe(fn)} was cancelled from the asyncio side"
            )
        # result() raises the task's exception object itself, so the caller can match it.
        return task.result()

    async def call_trio(self, fn: Callable[[Unpack[Ts]], Awaitable[T]], *args: *Ts) -> T:
        self._check_open()
        loop = self._loop
        call = _TrioCall(loop.create_future())
        if self._wake_host is not None:
            self._wake_host()
        self._nursery.start_soon(self._serve_call, call, fn, args, name=fn)
        self._in_flight += 1
        self._total += 1
        try:
            result: T = await call.future
            return result
        except asyncio.CancelledError:
            if not call.finished:
                call.finished_waiter = loop.create_future()
                self._token.run_sync_soon(call.scope.cancel)
                await _wait_through_cancellation(call.finished_waiter)
            raise
        finally:
            self._in_flight -= 1

    async def _serve_call(
        self, call: _TrioCall, fn: Callable[[Unpack[Ts]], Awaitable[T]], args: tuple[*Ts]
    ) -> None:
        future = call.future
        try:
            with call.scope:
                try:
                    value = await fn(*args)
                except trio.Cancelled:
                    raise
                except Exception as exc:
                    if not future.done():
                        future.set_exception(exc)
                    return
                except BaseException as exc:
                    # KeyboardInterrupt and friends belong to Trio; raising them inside an
                    # asyncio task would stop the host loop instead.
                    if not future.done():
                        future.set_exception(EdgeCancelledError(f"{_describe(fn)} raised {exc!r}"))
                    raise
                if not future.done():
                    future.set_result(value)
            # Reaching here without a result means call.scope caught the cancellation the
            # asyncio caller asked for; the caller's future is already cancelled.
        except trio.Cancelled:
            if not future.done():
                future.set_exception(
                    EdgeCancelledError(
                        f"Trio task running {_describe(fn)} was cancelled: the asyncio edge is closing"
                    )
                )
            raise
        finally:
            call.finished = True
            if call.finished_waiter is not None and not call.finished_waiter.done():
                call.finished_waiter.set_result(None)


async def _invoke(
    fn: Callable[..., Awaitable[T]], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> T:
    return await fn(*args, **kwargs)


async def _wait_through_cancellation(future: asyncio.Future[None]) -> None:
    """Wait for *future* even if the waiting task is cancelled again meanwhile.

    Used after a cancellation has already been forwarded to Trio: the Trio task is bounded
    by that cancellation, and returning before it finished would orphan it.
    """
    while not future.done():
        try:
            await asyncio.shield(future)
        except asyncio.CancelledError:
            continue


def _describe(fn: object) -> str:
    return getattr(fn, "__qualname__", None) or repr(fn)


# --------------------------------------------------------------------------------------
# Running Trio as a guest of asyncio
# --------------------------------------------------------------------------------------


def run_with_asyncio_host(
    async_fn: Callable[[Unpack[Ts]], Awaitable[T]],
    *args: *Ts,
    clock: trio.abc.Clock | None = None,
    instruments: Sequence[trio.abc.Instrument] = (),
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
    """

    async def host() -> T:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[outcome.Outcome[T]] = loop.create_future()
        if _FAST_GUEST_AVAILABLE:
            _GuestDriver(loop, async_fn, args, done.set_result, clock, instruments).start()
        else:  # pragma: no cover - depends on the installed Trio
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
    with asyncio.Runner() as runner:
        return runner.get_loop().run_until_complete(host())


# The fast driver below reuses the pieces ``trio.lowlevel.start_guest_run`` is built from.
# Trio's own driver blocks in a worker thread on Trio's epoll/kqueue and hands results back
# with call_soon_threadsafe; two thread hand-offs per Trio wake-up cost ~100 us, which is
# a third of an aio-pika publish-with-confirm. Here the asyncio selector watches Trio's
# epoll/kqueue fd instead (an epoll fd is itself pollable), so every wake-up stays on the
# loop thread. Everything touched is checked up front; if anything differs we use
# start_guest_run instead.

try:
    from sniffio import thread_local as _sniffio_library
    from trio._core import _run as _trio_run

    _SETUP_RUNNER: Any = _trio_run.setup_runner
    _UNROLLED_RUN: Any = _trio_run.unrolled_run
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
            for attr in ("is_guest", "guest_tick_scheduled", "force_guest_tick_asap")
        )
        and sys.platform != "win32"
    )
except (ImportError, AttributeError, TypeError, ValueError):  # pragma: no cover
    _FAST_GUEST_AVAILABLE = False

_NO_EVENTS: Final[outcome.Value[list[Any]]] = outcome.Value([])
_host_wakeup_var: trio.lowlevel.RunVar[_HostWakeup | None] = trio.lowlevel.RunVar(
    "runtime.asyncio_host_wakeup", default=None
)


def _host_wakeup() -> Callable[[], None] | None:
    return _host_wakeup_var.get()


class _HostWakeup:
    """Lets asyncio callbacks queue the next guest tick directly.

    Stored in a RunVar, so it holds the driver only weakly: Trio's runner must not keep
    the run generator alive, or a host loop that abandons the run would go unnoticed.
    """

    __slots__ = ("_driver",)

    def __init__(self, driver: _GuestDriver) -> None:
        self._driver = weakref.ref(driver)

    def __call__(self) -> None:
        driver = self._driver()
        if driver is not None:
            driver.wake_soon()


class _GuestDriver:
    """Drives one Trio run as callbacks on an asyncio loop, waiting for I/O in its selector.

    States: *running* (a tick is queued or executing; ``runner.guest_tick_scheduled`` is
    True) and *idle* (Trio waits for I/O, a deadline or a reschedule; the asyncio selector
    watches Trio's poller fd and a timer is armed). Anything in Trio that needs a wake-up
    while idle (a reschedule from asyncio code, a thread's run_sync_soon, a signal) ends in
    ``force_guest_tick_asap``, which writes Trio's wakeup socket, which makes the poller fd
    readable, which wakes us. :meth:`wake_soon` is the cheaper path for our own asyncio
    callbacks: it queues the tick before Trio would write that socket.
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
        self._next_send: outcome.Outcome[Any] = outcome.Value(None)
        self._idle = False
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
        self._next_send = outcome.Value(next_send)
        self._loop.add_reader(self._fd, self._wake)
        self._loop.call_soon(self._tick)

    def _tick(self) -> None:
        prev_library, _sniffio_library.name = _sniffio_library.name, "trio"
        try:
            timeout = self._next_send.send(self._gen)
        except StopIteration:
            self._finish(self._runner.main_task_outcome)
            return
        except trio.TrioInternalError as exc:
            self._finish(outcome.Error(exc))
            return
        finally:
            _sniffio_library.name = prev_library

        events = outcome.capture(self._io.get_events, 0)
        if timeout <= 0 or isinstance(events, outcome.Error) or events.value:
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

    def _on_timer(self) -> None:
        self._timer = None
        self._wake()

    def _wake(self) -> None:
        """Poller fd readable or deadline reached: collect Trio's events and tick now."""
        if not self._idle:
            return
        self._idle = False
        self._runner.guest_tick_scheduled = True
        self._next_send = outcome.capture(self._io.get_events, 0)
        self._tick()

    def wake_soon(self) -> None:
        """An asyncio callback is about to reschedule a Trio task: queue a tick."""
        if not self._idle:
            return
        self._idle = False
        self._runner.guest_tick_scheduled = True
        self._next_send = _NO_EVENTS
        self._loop.call_soon(self._tick)

    def _finish(self, run_outcome: outcome.Outcome[Any]) -> None:
        self._loop.remove_reader(self._fd)
        os.close(self._fd)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._done_callback(run_outcome)

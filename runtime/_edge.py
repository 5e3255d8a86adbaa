"""The asyncio edge: how Trio actors call asyncio libraries, and how asyncio calls back.

Actors are Trio code; aio-pika, grpclib and aiosmtplib are asyncio code. Every crossing
goes through one :class:`AsyncioEdge`, opened with :func:`open_asyncio_edge`, so that an
actor never knows (or cares) which bridge carries its calls:

* **guest** -- Trio runs as a guest on a real asyncio loop in the same thread
  (:func:`run_with_asyncio_host`). asyncio code runs on the stock loop at native speed, and
  a crossing costs an asyncio task, a loop iteration and one Trio scheduler pass (about
  10 us on its own). This is the bridge for services.
* **trio-asyncio** -- an asyncio loop emulated on top of plain ``trio.run`` by
  ``trio_asyncio.open_loop()``. It needs no special entry point, which suits tests and
  tools, but asyncio code runs about three times slower on it.

Crossings are not free, so code on the hot path should make few of them: hand a batch
across rather than an item, or let asyncio code push into Trio (``python -m bench.bridge``
has the figures).

Both carry the same semantics, because both are :class:`_LoopEdge` on top of an asyncio
loop object; only the loop and the way Trio is woken differ:

* results and exceptions cross unchanged (the caller gets the very same exception object);
* cancelling the caller cancels the callee and *waits for it to finish*, in both
  directions, so no orphaned task outlives the call that started it;
* a callee cancelled by its own side (not by the caller) is reported to the caller as
  :class:`EdgeCancelledError`, never as a foreign cancellation exception that the
  caller's library would misread as its own.

The guest driver (``runtime._guest``, the one module that touches Trio internals)
replaces the worker thread of
``trio.lowlevel.start_guest_run`` with the asyncio selector, because that thread's two
hand-offs per Trio wake-up made a crossing cost 55-130 us instead of 12-15 us. It reaches into
Trio internals; when they are not what it expects, it falls back to ``start_guest_run``.
Figures and how they were measured: ``python -m bench.bridge``.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar, TypeVarTuple, Unpack

import outcome
import trio

from ._guest import _HostWakeup, host_wakeup, nested_in_host_loop

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
        :class:`EdgeCancelledError`. This is a Trio checkpoint, cancellation and schedule
        point both, even when *fn* finishes without waiting.

        The asyncio task inherits the caller's contextvars (so :func:`current_edge` works
        there), and the caller resumes as soon as *fn* has returned or raised.
        """

    @abstractmethod
    async def call_trio(self, fn: Callable[[Unpack[Ts]], Awaitable[T]], *args: *Ts) -> T:
        """From asyncio: run ``await fn(*args)`` as a Trio task and return its result.

        Await this from an asyncio task on the edge's loop (a grpclib handler, an aio-pika
        consumer callback). The Trio task lives in the edge's nursery and inherits the
        caller's contextvars. Exceptions propagate unchanged. If the awaiting asyncio task is
        cancelled, the Trio task is cancelled and this waits until it has finished before
        re-raising ``asyncio.CancelledError``. If the edge closes first, or *fn* raises a
        BaseException that is not an Exception (KeyboardInterrupt, which stays in Trio),
        this raises :class:`EdgeCancelledError`.
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
    cancels the Trio tasks still serving :meth:`AsyncioEdge.call_trio` calls and waits for
    them.

    An exception from the block comes out as itself, not wrapped in an ExceptionGroup by
    the nurseries the edge keeps open around it.
    """
    body_error: BaseException | None = None
    async with _open_edge() as edge:
        reset = _current_edge.set(edge)
        try:
            yield edge
        except GeneratorExit:
            raise
        except BaseException as exc:
            # Re-raised below, once outside the nurseries, so that it is not wrapped.
            body_error = exc
        finally:
            _current_edge.reset(reset)
    if body_error is not None:
        raise body_error


@asynccontextmanager
async def _open_edge() -> AsyncIterator[_LoopEdge]:
    host = _host_running_loop()
    if host is not None:
        # Trio ticks run as callbacks of a running asyncio loop: we are its guest, unless
        # trio.run() was called from inside that loop, which then cannot run anything.
        if nested_in_host_loop():
            raise RuntimeError(
                "trio.run() was called from inside a running asyncio loop, which stays "
                "blocked until it returns; start Trio with run_with_asyncio_host() instead"
            )
        async with _open_loop_edge("guest", host, host_wakeup()) as edge:
            yield edge
        return
    import trio_asyncio  # imported lazily: importing it monkeypatches asyncio globally

    async with trio_asyncio.open_loop() as loop, _open_loop_edge("trio-asyncio", loop) as edge:
        yield edge


@asynccontextmanager
async def _open_loop_edge(
    name: str, loop: asyncio.AbstractEventLoop, host: _HostWakeup | None = None
) -> AsyncIterator[_LoopEdge]:
    async with trio.open_nursery() as nursery:
        edge = _LoopEdge(name, loop, nursery, host)
        try:
            yield edge
        finally:
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

    *host* is given only for the guest bridge on the fast driver: the edge's asyncio code
    wakes Trio through it, which runs the guest tick right away instead of through Trio's
    wakeup socket and the host selector.
    """

    def __init__(
        self,
        name: str,
        loop: asyncio.AbstractEventLoop,
        nursery: trio.Nursery,
        host: _HostWakeup | None,
    ) -> None:
        self.name = name
        self._loop = loop
        self._nursery = nursery
        self._token = trio.lowlevel.current_trio_token()
        self._wake: Callable[..., None] = _call if host is None else host.wake
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
        # No checkpoint_if_cancelled() first: if we are cancelled already, the abort below
        # runs at once and cancels the task before its first step, so fn is never called.
        call = _AsyncioCall(trio.lowlevel.current_task(), self._wake)
        task = self._loop.create_task(_invoke(call, fn, args, kwargs))
        task.add_done_callback(call.task_done)
        raise_cancel: Callable[[], Any] | None = None

        def abort(raise_cancel_arg: Callable[[], Any]) -> trio.lowlevel.Abort:
            nonlocal raise_cancel
            raise_cancel = raise_cancel_arg
            task.cancel("the Trio caller was cancelled")
            # FAILED: keep waiting until the asyncio task has really finished.
            return trio.lowlevel.Abort.FAILED

        self._in_flight += 1
        self._total += 1
        try:
            # Returns fn's result, or raises the very exception object fn raised.
            result = await trio.lowlevel.wait_task_rescheduled(abort)
        finally:
            self._in_flight -= 1
        if result is not _TASK_CANCELLED:
            return result  # type: ignore[no-any-return]
        # The task was cancelled, and has finished (we were woken by its done callback).
        if raise_cancel is not None:
            raise_cancel()
        try:
            task.result()
        except asyncio.CancelledError as exc:
            raise EdgeCancelledError(
                f"the asyncio task running {_describe(fn)} was cancelled from the asyncio "
                "side (not by this Trio caller)"
            ) from exc
        raise AssertionError("unreachable: a task without a result must be cancelled")

    async def call_trio(self, fn: Callable[[Unpack[Ts]], Awaitable[T]], *args: *Ts) -> T:
        self._check_open()
        loop = self._loop
        call = _TrioCall(loop.create_future())
        self._in_flight += 1
        self._total += 1
        try:
            # If fn does not block, it has finished by the time wake() returns, and the
            # await below does not suspend at all.
            self._wake(self._start_call, call, fn, args)
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

    def _start_call(
        self, call: _TrioCall, fn: Callable[..., Awaitable[Any]], args: tuple[Any, ...]
    ) -> None:
        self._nursery.start_soon(self._serve_call, call, fn, args, name=fn)

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
                        f"Trio task running {_describe(fn)} was cancelled:"
                        " the asyncio edge is closing"
                    )
                )
            raise
        finally:
            call.finished = True
            if call.finished_waiter is not None and not call.finished_waiter.done():
                call.finished_waiter.set_result(None)


def _call(fn: Callable[..., object], *args: Any) -> None:
    fn(*args)


_TASK_CANCELLED: Any = object()  # what a Trio caller is woken with when its task was cancelled


class _AsyncioCall:
    """Shared state of one :meth:`AsyncioEdge.run` crossing."""

    __slots__ = ("trio_task", "wake", "delivered")

    def __init__(self, trio_task: trio.lowlevel.Task, wake: Callable[..., None]) -> None:
        self.trio_task = trio_task
        self.wake = wake
        self.delivered = False

    def deliver(self, result: outcome.Outcome[Any]) -> None:
        self.delivered = True
        self.wake(trio.lowlevel.reschedule, self.trio_task, result)

    def task_done(self, _: object) -> None:
        # Only a cancelled task (or one cancelled before it started) ends without having
        # delivered; it wakes the Trio caller from here, once it has really finished.
        if not self.delivered:
            self.delivered = True
            self.wake(trio.lowlevel.reschedule, self.trio_task, outcome.Value(_TASK_CANCELLED))


async def _invoke(
    call: _AsyncioCall,
    fn: Callable[..., Awaitable[Any]],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> None:
    """The asyncio task body of :meth:`AsyncioEdge.run`.

    It hands the outcome to the Trio caller from inside the task's last step instead of
    from a done callback: that saves a loop iteration per crossing, and in guest mode the
    Trio caller runs on right away. fn has returned (or raised) by then, so all its
    clean-up has run; exceptions are handed over rather than left in the task, where
    nobody would retrieve them. Cancellation is left to the done callback, so that a
    cancelled call returns only once the task is done.
    """
    result: outcome.Outcome[Any]
    try:
        result = outcome.Value(await fn(*args, **kwargs))
    except (asyncio.CancelledError, GeneratorExit):
        raise
    except BaseException as exc:  # handed to the Trio caller, unchanged
        result = outcome.Error(exc)
    # Outside the except block, so that Trio code running inline here does not see exc as
    # the exception being handled.
    call.deliver(result)


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

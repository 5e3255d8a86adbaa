"""The asyncio edge: the same contract under both bridges.

Every scenario is a Trio function of an open edge. It runs twice: in a plain pytest-trio
test (no asyncio loop around, so the edge is trio-asyncio) and in a sync test through
``run_with_asyncio_host`` (the guest edge), the latter on both guest drivers (our fast one
and Trio's own ``start_guest_run``). Scenarios synchronise through events, never sleeps.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import threading
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
import sniffio
import trio
import trio.testing

from runtime import (
    AsyncioEdge,
    EdgeCancelledError,
    EdgeStatistics,
    _guest,
    current_edge,
    open_asyncio_edge,
    run_with_asyncio_host,
)

Scenario = Callable[[AsyncioEdge], Awaitable[None]]
SCENARIOS: list[Scenario] = []


def scenario(fn: Scenario) -> Scenario:
    SCENARIOS.append(fn)
    return fn


# -- Trio calls asyncio ------------------------------------------------------------------


@scenario
async def result_passes_through(edge: AsyncioEdge) -> None:
    async def add(a: int, b: int, *, scale: int) -> tuple[int, str, bool, AsyncioEdge]:
        await asyncio.sleep(0)
        return (
            (a + b) * scale,
            sniffio.current_async_library(),
            asyncio.current_task() is not None,
            current_edge(),  # asyncio tasks inherit the Trio caller's context
        )

    value, library, in_task, seen_edge = await edge.run(add, 1, 2, scale=10)
    assert value == 30
    assert library == "asyncio"
    assert in_task
    assert seen_edge is edge


@scenario
async def fn_is_called_inside_asyncio(edge: AsyncioEdge) -> None:
    # Functions that need the running loop when *called* (not awaited) must work.
    def make_future() -> asyncio.Future[str]:
        future = asyncio.get_running_loop().create_future()
        future.set_result("ready")
        return future

    assert await edge.run(make_future) == "ready"


@scenario
async def exception_is_the_same_object(edge: AsyncioEdge) -> None:
    error = LookupError("from asyncio")

    async def fail() -> None:
        await asyncio.sleep(0)
        raise error

    with pytest.raises(LookupError) as info:
        await edge.run(fail)
    assert info.value is error


@scenario
async def trio_cancellation_cancels_and_waits_for_the_asyncio_task(edge: AsyncioEdge) -> None:
    started = asyncio.Event()
    log: list[str] = []
    tasks: list[asyncio.Task[object]] = []

    async def slow() -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.append(task)
        started.set()
        try:
            await asyncio.get_running_loop().create_future()  # never resolved
        except asyncio.CancelledError:
            log.append("cancelled")
            raise
        finally:
            for _ in range(3):  # clean-up that takes a few loop iterations
                await asyncio.sleep(0)
            log.append("finished")

    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:

            async def cancel_once_started() -> None:
                await edge.run(started.wait)
                scope.cancel()

            nursery.start_soon(cancel_once_started)
            await edge.run(slow)
    assert scope.cancelled_caught
    # run() returned only after the asyncio task had run its clean-up to the end.
    assert log == ["cancelled", "finished"]
    assert tasks[0].cancelled()
    assert edge.statistics().calls_in_flight == 0


@scenario
async def cancelled_before_the_call_starts_nothing(edge: AsyncioEdge) -> None:
    called = False

    async def never() -> None:
        nonlocal called
        called = True

    with trio.CancelScope() as scope:
        scope.cancel()
        await edge.run(never)
    assert scope.cancelled_caught
    assert not called


@scenario
async def asyncio_side_cancellation_is_a_clear_error(edge: AsyncioEdge) -> None:
    registered = asyncio.Event()
    victims: list[asyncio.Task[object]] = []

    async def victim() -> None:
        task = asyncio.current_task()
        assert task is not None
        victims.append(task)
        registered.set()
        await asyncio.get_running_loop().create_future()

    async def cancel_victim() -> None:
        await registered.wait()
        victims[0].cancel()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(edge.run, cancel_victim)
        with pytest.raises(EdgeCancelledError, match="cancelled from the asyncio side") as info:
            await edge.run(victim)
    assert isinstance(info.value.__cause__, asyncio.CancelledError)


@scenario
async def statistics_count_calls(edge: AsyncioEdge) -> None:
    before = edge.statistics()
    assert isinstance(before, EdgeStatistics)
    assert before.name == edge.name
    release = asyncio.Event()
    entered = asyncio.Event()

    async def held() -> None:
        entered.set()
        await release.wait()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(edge.run, held)
        await edge.run(entered.wait)
        during = edge.statistics()
        release.set()
    after = edge.statistics()
    assert during.calls_in_flight == 1
    assert after.calls_in_flight == 0
    assert after.calls_total == before.calls_total + 2
    with pytest.raises(AttributeError):
        after.calls_total = 0  # type: ignore[misc]


# -- asyncio calls Trio ------------------------------------------------------------------


@scenario
async def call_trio_result_and_exception(edge: AsyncioEdge) -> None:
    error = KeyError("from trio")

    async def double(x: int) -> tuple[int, str]:
        await trio.lowlevel.checkpoint()
        return 2 * x, sniffio.current_async_library()

    async def fail() -> None:
        await trio.lowlevel.checkpoint()
        raise error

    async def handler() -> tuple[tuple[int, str], BaseException | None]:
        value = await edge.call_trio(double, 21)
        try:
            await edge.call_trio(fail)
        except KeyError as exc:
            return value, exc
        return value, None

    value, raised = await edge.run(handler)
    assert value == (42, "trio")
    assert raised is error


@scenario
async def asyncio_cancellation_cancels_and_waits_for_the_trio_task(edge: AsyncioEdge) -> None:
    trio_started = trio.Event()
    log: list[str] = []

    async def trio_side() -> None:
        trio_started.set()
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            log.append("cancelled")
            raise
        finally:
            with trio.CancelScope(shield=True):
                await trio.lowlevel.checkpoint()  # clean-up that takes a tick
            log.append("finished")

    async def handler() -> None:  # like a grpclib handler, in its own asyncio task
        await edge.call_trio(trio_side)

    async def cancel_handler() -> list[str]:
        task = asyncio.ensure_future(handler())
        await edge.call_trio(trio_started.wait)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return list(log)  # what the Trio side had done when the handler finished

    assert await edge.run(cancel_handler) == ["cancelled", "finished"]


@scenario
async def many_concurrent_calls_both_ways(edge: AsyncioEdge) -> None:
    async def echo(i: int) -> int:
        for _ in range(i % 3):
            await asyncio.sleep(0)
        return i

    async def trio_echo(i: int) -> int:
        for _ in range(i % 3):
            await trio.lowlevel.checkpoint()
        return -i

    results: dict[int, int] = {}

    async def one(i: int) -> None:
        results[i] = await edge.run(echo, i)

    async with trio.open_nursery() as nursery:
        for i in range(200):
            nursery.start_soon(one, i)
    assert results == {i: i for i in range(200)}

    async def gather() -> list[int]:
        return await asyncio.gather(*(edge.call_trio(trio_echo, i) for i in range(200)))

    assert await edge.run(gather) == [-i for i in range(200)]
    assert edge.statistics().calls_in_flight == 0


@scenario
async def current_edge_is_the_open_edge(edge: AsyncioEdge) -> None:
    assert current_edge() is edge
    seen: list[AsyncioEdge] = []

    async def child() -> None:
        seen.append(current_edge())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(child)
    assert seen == [edge]


@scenario
async def trio_io_wakes_an_idle_guest(edge: AsyncioEdge) -> None:
    # Trio waits on its own socket while the only other task waits on asyncio: Trio is
    # idle, and the asyncio side's write must wake it.
    raw_a, b = socket.socketpair()
    a = trio.socket.from_stdlib_socket(raw_a)
    with a, b:

        async def write_from_asyncio() -> None:
            await asyncio.sleep(0)
            b.send(b"x")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(edge.run, write_from_asyncio)
            assert await a.recv(1) == b"x"
    # A worker thread finishing goes through Trio's wakeup socket.
    assert await trio.to_thread.run_sync(lambda: 7) == 7
    with trio.fail_after(5):
        await trio.sleep(0.001)  # a real deadline goes through the host timer


# -- running the scenarios under both bridges ----------------------------------------------


def _ids(fn: Scenario) -> str:
    return fn.__name__


@pytest.fixture(params=["fast", "start_guest_run"])
def guest_driver(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "start_guest_run":
        monkeypatch.setattr(_guest, "_FAST_GUEST_AVAILABLE", False)
    else:
        assert _guest._FAST_GUEST_AVAILABLE, "the fast guest driver should work on this Trio"
    driver: str = request.param
    return driver


async def _in_edge(body: Scenario, expected_name: str) -> None:
    with trio.fail_after(10):
        async with open_asyncio_edge() as edge:
            assert edge.name == expected_name
            await body(edge)


@pytest.mark.parametrize("body", SCENARIOS, ids=_ids)
async def test_trio_asyncio_edge(body: Scenario) -> None:
    await _in_edge(body, "trio-asyncio")


@pytest.mark.parametrize("body", SCENARIOS, ids=_ids)
def test_guest_edge(body: Scenario, guest_driver: str) -> None:
    run_with_asyncio_host(_in_edge, body, "guest")


# -- the edge context --------------------------------------------------------------------


async def test_current_edge_outside_an_edge_says_what_to_do() -> None:
    with pytest.raises(RuntimeError, match="open_asyncio_edge"):
        current_edge()


async def test_body_exception_is_not_wrapped_in_a_group() -> None:
    error = ValueError("body")
    with pytest.raises(ValueError) as info:
        async with open_asyncio_edge():
            raise error
    assert info.value is error


def test_body_exception_is_not_wrapped_in_a_group_under_guest() -> None:
    error = ValueError("body")

    async def main() -> None:
        async with open_asyncio_edge():
            raise error

    with pytest.raises(ValueError) as info:
        run_with_asyncio_host(main)
    assert info.value is error


async def test_closed_edge_refuses_calls() -> None:
    async with open_asyncio_edge() as edge:
        pass

    async def noop() -> None:
        pass

    with pytest.raises(RuntimeError, match="closed"):
        await edge.run(noop)


def test_closing_the_edge_cancels_pending_call_trio() -> None:
    # An asyncio task that outlives the edge's block (a server still running, say) and
    # waits in call_trio gets a clear error when the edge closes, not a hang.
    async def main() -> BaseException | None:
        async with open_asyncio_edge() as edge:
            handler_waiting = trio.Event()

            async def trio_side() -> None:
                handler_waiting.set()
                await trio.sleep_forever()

            async def handler() -> None:
                await edge.call_trio(trio_side)

            async def spawn() -> asyncio.Future[None]:
                return asyncio.ensure_future(handler())

            task = await edge.run(spawn)
            await handler_waiting.wait()
        async with open_asyncio_edge() as later:
            await later.run(asyncio.wait, [task])
        return task.exception()

    error = run_with_asyncio_host(main)
    assert isinstance(error, EdgeCancelledError)
    assert "closing" in str(error)


# -- run_with_asyncio_host -----------------------------------------------------------------


def test_run_with_asyncio_host_returns_and_raises() -> None:
    async def answer(x: int) -> int:
        await trio.lowlevel.checkpoint()
        return x * 2

    assert run_with_asyncio_host(answer, 21) == 42

    error = OSError("from trio")

    async def fail() -> None:
        await trio.lowlevel.checkpoint()
        raise error

    with pytest.raises(OSError) as info:
        run_with_asyncio_host(fail)
    assert info.value is error


def test_run_with_asyncio_host_off_the_main_thread() -> None:
    # No signal handling there (Python allows it only on the main thread); the rest works.
    async def main() -> str:
        async with open_asyncio_edge() as edge:
            return await edge.run(_asyncio_library)

    results: list[str] = []
    thread = threading.Thread(target=lambda: results.append(run_with_asyncio_host(main)))
    thread.start()
    thread.join()
    assert results == ["asyncio"]


async def _asyncio_library() -> str:
    return sniffio.current_async_library()


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd")
def test_run_with_asyncio_host_leaves_no_descriptors_behind(guest_driver: str) -> None:
    async def main() -> None:
        async with open_asyncio_edge() as edge:
            await edge.run(asyncio.sleep, 0)

    run_with_asyncio_host(main)  # warm up: lazily created descriptors stay
    before = sorted(os.listdir("/proc/self/fd"))
    run_with_asyncio_host(main)
    assert sorted(os.listdir("/proc/self/fd")) == before


def test_trio_is_a_guest_of_a_real_asyncio_loop() -> None:
    async def loop_and_thread() -> tuple[asyncio.AbstractEventLoop, int]:
        return asyncio.get_running_loop(), threading.get_ident()

    async def main() -> tuple[asyncio.AbstractEventLoop, int, int]:
        async with open_asyncio_edge() as edge:
            loop, thread = await edge.run(loop_and_thread)
            return loop, thread, threading.get_ident()

    loop, asyncio_thread, trio_thread = run_with_asyncio_host(main)
    assert isinstance(
        loop, asyncio.SelectorEventLoop
    )  # a real loop, even with trio_asyncio imported
    assert asyncio_thread == trio_thread


def test_run_with_asyncio_host_passes_the_clock() -> None:
    async def main() -> float:
        await trio.sleep(3600)  # virtual: the autojump clock skips ahead
        return trio.current_time()

    assert run_with_asyncio_host(main, clock=trio.testing.MockClock(autojump_threshold=0)) >= 3600


@pytest.mark.timeout(30)
def test_wait_all_tasks_blocked_works_under_guest() -> None:
    # The fast driver skips I/O polls it does not need; not this zero-timeout one.
    async def main() -> list[str]:
        steps: list[str] = []

        async def worker() -> None:
            steps.append("worker ran")
            await trio.sleep_forever()

        with trio.fail_after(10):  # a missed poll hangs here instead of returning
            async with trio.open_nursery() as nursery:
                nursery.start_soon(worker)
                await trio.testing.wait_all_tasks_blocked()
                steps.append("all blocked")
                nursery.cancel_scope.cancel()
        return steps

    # It returned only once the worker had run and blocked, never before.
    assert run_with_asyncio_host(main) == ["worker ran", "all blocked"]


def test_trio_run_inside_a_running_loop_gets_a_clear_error() -> None:
    # The loop is blocked while trio.run() runs, so a guest edge on it would hang.
    async def trio_main() -> None:
        async with open_asyncio_edge():
            pass

    async def asyncio_main() -> None:
        trio.run(trio_main)

    # A stock loop: once trio_asyncio is imported, asyncio.run() would make one of its own.
    with pytest.raises(RuntimeError, match="run_with_asyncio_host"):
        with asyncio.Runner(loop_factory=asyncio.SelectorEventLoop) as runner:
            runner.run(asyncio_main())


@pytest.fixture
def default_sigint() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals are delivered to the main thread only")
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    yield
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_sigint_raises_keyboard_interrupt_in_the_trio_function(
    default_sigint: None, guest_driver: str
) -> None:
    reached_cleanup = False

    async def main() -> None:
        nonlocal reached_cleanup
        try:
            # Delivered to the process while Trio waits: a worker thread sends it, so the
            # main thread is blocked in the host loop's selector at that moment.
            await trio.to_thread.run_sync(os.kill, os.getpid(), signal.SIGINT)
            await trio.sleep_forever()
        finally:
            reached_cleanup = True

    with pytest.raises(KeyboardInterrupt):
        run_with_asyncio_host(main)
    assert reached_cleanup


def test_signal_receiver_works_under_guest(default_sigint: None) -> None:
    async def main() -> int:
        with trio.open_signal_receiver(signal.SIGUSR1) as signals:
            await trio.to_thread.run_sync(os.kill, os.getpid(), signal.SIGUSR1)
            async for signum in signals:
                return signum
        raise AssertionError("unreachable")

    assert run_with_asyncio_host(main) == signal.SIGUSR1


# -- a real aio-pika round trip through the edge -----------------------------------------


async def _rabbitmq_round_trip(url: str, edge: AsyncioEdge) -> None:
    import aio_pika

    bodies = [f"message {i}".encode() * 20 for i in range(25)]
    connection = await edge.run(aio_pika.connect, url)
    try:
        channel = await edge.run(connection.channel, publisher_confirms=True)
        queue = await edge.run(
            channel.declare_queue, f"test.asyncio_edge.{uuid.uuid4().hex}", auto_delete=True
        )
        for body in bodies:
            confirmation = await edge.run(
                channel.default_exchange.publish,
                aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                routing_key=queue.name,
            )
            assert confirmation is not None  # the broker confirmed it
        received = []
        iterator = await edge.run(_open_iterator, queue)
        for _ in bodies:
            message = await edge.run(iterator.__anext__)
            received.append(message.body)
            await edge.run(message.ack)
        await edge.run(iterator.close)
        assert received == bodies
    finally:
        await edge.run(connection.close)


async def _open_iterator(queue: Any) -> Any:
    # QueueIterator() looks up the running loop: construct it on the asyncio side too.
    return queue.iterator()


@pytest.mark.services
async def test_rabbitmq_round_trip_through_trio_asyncio_edge(rabbitmq_url: str) -> None:
    with trio.fail_after(30):
        async with open_asyncio_edge() as edge:
            assert edge.name == "trio-asyncio"
            await _rabbitmq_round_trip(rabbitmq_url, edge)


@pytest.mark.services
def test_rabbitmq_round_trip_through_guest_edge(rabbitmq_url: str) -> None:
    async def main() -> None:
        with trio.fail_after(30):
            async with open_asyncio_edge() as edge:
                assert edge.name == "guest"
                await _rabbitmq_round_trip(rabbitmq_url, edge)

    run_with_asyncio_host(main)

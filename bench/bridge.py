"""What the asyncio edge costs: aio-pika publish-with-confirm and consume, three ways.

The same aio-pika workload runs as plain asyncio (the baseline), from Trio through the
guest edge (``run_with_asyncio_host``) and from Trio through the trio-asyncio edge
(``trio.run`` + ``trio_asyncio.open_loop``), in two shapes:

* **per call** (the main figures): Trio drives aio-pika the way an actor does, one
  ``edge.run(...)`` crossing for every aio-pika call the plain version awaits: one per
  published message, two per consumed message (next message, ack). This is the bridge's
  cost on the hot path.
* **loop** (``*_loop_*`` figures): each phase is one asyncio coroutine run through a single
  ``edge.run``. This is the speed of the asyncio loop itself under each bridge: the host
  loop for guest, the emulated loop for trio-asyncio.

Workload: declare a fresh auto-delete queue; publish *n* persistent messages of
``MESSAGE_BYTES`` bytes through the default exchange on a channel with publisher confirms,
one at a time, each awaited until confirmed; then consume and ack the *n* messages
(prefetch ``PREFETCH``). Each run happens in a fresh interpreter (importing trio_asyncio
monkeypatches asyncio for the whole process) and the runs take turns, *rounds* times, so
that broker, disk and neighbour noise spreads over all of them; figures are medians.

Also measured, without the broker: the cost of one empty crossing each way (best of five
runs of 5000), for the guest edge on our driver, on Trio's stock ``start_guest_run`` driver,
and for the trio-asyncio edge. It is the figure least disturbed by a busy machine.

Run it: ``python -m bench.bridge [--n 3000] [--rounds 3] [--url amqp://...]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/"
MESSAGE_BYTES = 600
PREFETCH = 100
VARIANTS = ("plain", "guest", "trio_asyncio")
# (variant, shape) pairs, in the order one round runs them. Plain has only one shape.
RUNS = (
    ("plain", "per_call"),
    ("guest", "per_call"),
    ("trio_asyncio", "per_call"),
    ("guest", "loop"),
    ("trio_asyncio", "loop"),
)

# How the workload awaits one aio-pika call: plain asyncio awaits it directly; the
# per-call shape passes it to edge.run().
Call = Callable[..., Awaitable[Any]]


async def _direct(fn: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any) -> Any:
    return await fn(*args, **kwargs)


async def _open_iterator(queue: Any) -> Any:
    # QueueIterator() looks up the running loop when constructed: do it on the asyncio side.
    return queue.iterator()


class _Phase:
    """Wall and CPU time of one phase."""

    def __init__(self) -> None:
        self.wall = time.perf_counter()
        self.cpu = time.process_time()

    def done(self, n: int) -> dict[str, float]:
        wall = time.perf_counter() - self.wall
        cpu = time.process_time() - self.cpu
        return {"rate": n / wall, "cpu_us": cpu / n * 1e6}


async def _publish(call: Call, exchange: Any, routing_key: str, n: int) -> dict[str, float]:
    import aio_pika

    body = os.urandom(MESSAGE_BYTES // 2).hex().encode()
    persistent = aio_pika.DeliveryMode.PERSISTENT
    phase = _Phase()
    for i in range(n):
        message = aio_pika.Message(body, delivery_mode=persistent, message_id=str(i))
        await call(exchange.publish, message, routing_key=routing_key)
    return phase.done(n)


async def _consume(call: Call, queue: Any, n: int) -> dict[str, float]:
    iterator = await call(_open_iterator, queue)
    await call(iterator.consume)
    phase = _Phase()
    for _ in range(n):
        incoming = await call(iterator.__anext__)
        await call(incoming.ack)
    result = phase.done(n)
    await call(iterator.close)
    return result


async def _workload(call: Call, phase_call: Call, n: int, url: str) -> dict[str, Any]:
    """Publish then consume *n* messages.

    *call* awaits the set-up calls; *phase_call* awaits each whole phase and hands it the
    *call* to use inside (per-call shape: phase_call is direct and call crosses the edge;
    loop shape: the other way round).
    """
    import aio_pika

    connection = await call(aio_pika.connect, url)
    try:
        channel = await call(connection.channel, publisher_confirms=True)
        await call(channel.set_qos, prefetch_count=PREFETCH)
        queue = await call(
            channel.declare_queue, f"bench.bridge.{uuid.uuid4().hex}", auto_delete=True
        )
        inner = call if phase_call is _direct else _direct
        publish = await phase_call(_publish, inner, channel.default_exchange, queue.name, n)
        consume = await phase_call(_consume, inner, queue, n)
        await call(queue.delete, if_unused=False, if_empty=False)
    finally:
        await call(connection.close)
    return {"publish": publish, "consume": consume}


async def _noop() -> None:
    pass


async def _best_seconds(
    call: Callable[[], Awaitable[object]], n: int, repeats: int
) -> tuple[float, float]:
    """The fastest of *repeats* runs of *n* calls, in seconds of wall and of CPU (the
    process's, both threads): the run least disturbed by the rest of the machine. Plain
    awaits only, so it runs on either side of the edge."""
    best, best_cpu = float("inf"), float("inf")
    for _ in range(repeats):
        started, cpu = time.perf_counter(), time.process_time()
        for _ in range(n):
            await call()
        best = min(best, time.perf_counter() - started)
        best_cpu = min(best_cpu, time.process_time() - cpu)
    return best, best_cpu


async def _crossing_costs(edge: Any, n: int, repeats: int = 5) -> dict[str, float]:
    """Microseconds per crossing for a call that does nothing, best of *repeats*."""

    async def from_asyncio() -> tuple[float, float]:
        return await _best_seconds(partial(edge.call_trio, _noop), n, repeats)

    best_run, cpu_run = await _best_seconds(partial(edge.run, _noop), n, repeats)
    best_call_trio, cpu_call_trio = await edge.run(from_asyncio)
    return {
        "run": best_run / n * 1e6,
        "call_trio": best_call_trio / n * 1e6,
        "run_cpu": cpu_run / n * 1e6,
        "call_trio_cpu": cpu_call_trio / n * 1e6,
    }


def crossing_once(variant: str, n: int = 5000) -> dict[str, float]:
    """Cost of one empty crossing each way, in this process, for *variant*: ``guest``,
    ``guest_start_guest_run`` (Trio's stock guest driver) or ``trio_asyncio``."""
    import trio

    from runtime import _edge, _guest

    async def main() -> dict[str, float]:
        async with _edge.open_asyncio_edge() as edge:
            return await _crossing_costs(edge, n)

    if variant == "trio_asyncio":
        return trio.run(main)
    if variant == "guest_start_guest_run":
        _guest._FAST_GUEST_AVAILABLE = False
    elif variant != "guest":
        raise ValueError(f"unknown crossing variant {variant!r}")
    return _guest.run_with_asyncio_host(main)


def run_once(variant: str, shape: str, n: int, url: str) -> dict[str, Any]:
    """Run the workload once in this process, as *variant* and *shape* say."""
    if variant == "plain":
        return asyncio.run(_workload(_direct, _direct, n, url))

    import trio

    from runtime import open_asyncio_edge, run_with_asyncio_host

    async def main() -> dict[str, Any]:
        async with open_asyncio_edge() as edge:
            if shape == "per_call":
                result = await _workload(edge.run, _direct, n, url)
            elif shape == "loop":
                result = await _workload(edge.run, edge.run, n, url)
            else:
                raise ValueError(f"unknown shape {shape!r}")
            result["edge"] = edge.name
            return result

    if variant == "guest":
        return run_with_asyncio_host(main)
    if variant == "trio_asyncio":
        return trio.run(main)
    raise ValueError(f"unknown variant {variant!r}; expected one of {VARIANTS}")


def _run_child(variant: str, shape: str, n: int, url: str) -> dict[str, Any]:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    argv = [sys.executable, "-m", "bench.bridge", "--child", f"{variant}:{shape}"]
    proc = subprocess.run(
        [*argv, "--n", str(n), "--url", url],
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"bench run {variant}:{shape} failed:\n{proc.stderr}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def measure(n: int = 3000, url: str = DEFAULT_URL, rounds: int = 3) -> dict[str, Any]:
    """Measure all variants and shapes; return msgs/s, CPU per message and ratios to plain.

    Keys: ``{variant}_{phase}`` (per-call msgs/s), ``{variant}_loop_{phase}`` (loop shape),
    ``ratio_{variant}`` and ``ratio_{variant}_loop`` (the worse of the publish and consume
    ratios to plain, so one number says whether the bridge keeps up on both halves),
    ``cpu_us`` (median CPU microseconds per message) and ``cpu_ratio_*`` (the same
    ratios from CPU per message, which neighbours on the machine disturb far less),
    ``samples`` and ``conditions``. ``ratio_guest_loop`` itself comes from back-to-back
    pairs (:func:`_paired_guest_loop`), with its spread, every pair ratio and CPU ratio.
    """
    samples: dict[str, list[dict[str, Any]]] = {}
    load_before = os.getloadavg()
    for round_no in range(rounds):
        # Rotate the order so that no run always goes first on a cold broker.
        shift = round_no % len(RUNS)
        for variant, shape in RUNS[shift:] + RUNS[:shift]:
            key = variant if shape == "per_call" else f"{variant}_loop"
            samples.setdefault(key, []).append(_run_child(variant, shape, n, url))

    result: dict[str, Any] = {}
    cpu: dict[str, float] = {}
    for key, runs in samples.items():
        for phase in ("publish", "consume"):
            result[f"{key}_{phase}"] = round(statistics.median(r[phase]["rate"] for r in runs), 1)
            cpu[f"{key}_{phase}"] = round(statistics.median(r[phase]["cpu_us"] for r in runs), 1)
    for key in ("guest", "trio_asyncio", "guest_loop", "trio_asyncio_loop"):
        result[f"ratio_{key}"] = round(
            min(
                result[f"{key}_publish"] / result["plain_publish"],
                result[f"{key}_consume"] / result["plain_consume"],
            ),
            3,
        )
    result["cpu_us"] = cpu
    # CPU per message is far steadier than wall time on a shared machine; plain/variant
    # CPU is what the wall ratio would be if every phase were CPU-bound.
    for key in ("guest", "trio_asyncio", "guest_loop", "trio_asyncio_loop"):
        result[f"cpu_ratio_{key}"] = round(
            min(cpu[f"plain_{phase}"] / cpu[f"{key}_{phase}"] for phase in ("publish", "consume")),
            3,
        )
    of_medians = result["ratio_guest_loop"]
    result.update(_paired_guest_loop(n, url, pairs=max(8, 4 * rounds)))
    result["ratio_guest_loop_of_medians"] = of_medians
    result["crossing_us"] = {
        variant: {k: round(v, 1) for k, v in _run_child("crossing", variant, 5000, url).items()}
        for variant in ("guest", "guest_start_guest_run", "trio_asyncio")
    }
    result["samples"] = {
        key: [{phase: round(r[phase]["rate"], 1) for phase in ("publish", "consume")} for r in runs]
        for key, runs in samples.items()
    }
    result["conditions"] = {
        "n": n,
        "message_bytes": MESSAGE_BYTES,
        "delivery_mode": "persistent",
        "publisher_confirms": True,
        "publish": "sequential, each awaited until confirmed",
        "consume": f"queue iterator, ack each, prefetch {PREFETCH}",
        "rounds": rounds,
        "statistic": "median over rounds, every run in a fresh interpreter",
        "load_average_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "versions": _versions(),
        "url": url,
    }
    result["target"] = "ratio_guest_loop >= 0.9"
    return result


def pairs_once(n: int, url: str, pairs: int) -> list[dict[str, Any]]:
    """In this process, *pairs* times: the plain workload, then the guest-loop one (the order
    alternating), back to back, each on its own connection and queue."""
    out = []
    for i in range(pairs):
        order = ["plain", "guest"] if i % 2 == 0 else ["guest", "plain"]
        runs = {variant: run_once(variant, "per_call" if variant == "plain" else "loop", n, url)
                for variant in order}
        out.append(runs)
    return out


def _paired_guest_loop(n: int, url: str, pairs: int) -> dict[str, Any]:
    """``ratio_guest_loop`` from back-to-back pairs: each guest-loop run against the plain run
    right beside it in the same interpreter, the order alternating; the median of the pair
    ratios (each pair's ratio of the time for both phases).

    A broker shared with other work drifts by tens of percent within a minute; two runs a
    fraction of a second apart see nearly the same broker, so their ratio keeps little of
    the drift. ``spread`` is half the interquartile range of the pair ratios. (trio-asyncio
    is not in these pairs: importing it patches asyncio for the whole process.)
    """
    ratios: list[float] = []
    cpu_ratios: list[float] = []
    phases = ("publish", "consume")
    for runs in _run_child("pairs", str(pairs), n, url)["pairs"]:
        plain, guest = runs["plain"], runs["guest"]
        # Both phases together (the time for n published and n consumed): the worse of
        # two noisy ratios, as the rounds above take, is biased low by the noise itself.
        ratios.append(
            sum(1 / plain[p]["rate"] for p in phases) / sum(1 / guest[p]["rate"] for p in phases)
        )
        cpu_ratios.append(
            sum(plain[p]["cpu_us"] for p in phases) / sum(guest[p]["cpu_us"] for p in phases)
        )
    quartiles = statistics.quantiles(ratios, n=4) if len(ratios) >= 2 else [ratios[0]] * 3
    return {
        "ratio_guest_loop": round(statistics.median(ratios), 3),
        "ratio_guest_loop_spread": round((quartiles[2] - quartiles[0]) / 2, 3),
        "cpu_ratio_guest_loop": round(statistics.median(cpu_ratios), 3),
        "ratio_guest_loop_pairs": [round(r, 3) for r in ratios],
        "pair_n": n,
    }


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    return {p: version(p) for p in ("trio", "trio-asyncio", "aio-pika", "aiormq")}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bridge", description=__doc__)
    parser.add_argument("--n", type=int, default=3000, help="messages per phase")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--url", default=DEFAULT_URL)
    parser.add_argument("--child", help=argparse.SUPPRESS)  # "variant:shape", one run
    args = parser.parse_args(argv)
    if args.child:
        variant, _, shape = args.child.partition(":")
        if variant == "crossing":
            print(json.dumps(crossing_once(shape, args.n)))
        elif variant == "pairs":
            print(json.dumps({"pairs": pairs_once(args.n, args.url, int(shape))}))
        else:
            print(json.dumps(run_once(variant, shape, args.n, args.url)))
        return

    result = measure(args.n, args.url, args.rounds)
    print(
        f"{'run':<20}{'publish/s':>11}{'consume/s':>11}{'ratio':>8}"
        f"{'cpu us/msg pub':>16}{'con':>6}{'cpu ratio':>11}"
    )
    for key in ("plain", "guest", "trio_asyncio", "guest_loop", "trio_asyncio_loop"):
        plain = key == "plain"
        ratio = "1.000" if plain else f"{result[f'ratio_{key}']:.3f}"
        cpu_ratio = "1.000" if plain else f"{result[f'cpu_ratio_{key}']:.3f}"
        cpu = result["cpu_us"]
        print(
            f"{key:<20}{result[f'{key}_publish']:>11.0f}{result[f'{key}_consume']:>11.0f}"
            f"{ratio:>8}{cpu[f'{key}_publish']:>16.0f}{cpu[f'{key}_consume']:>6.0f}"
            f"{cpu_ratio:>11}"
        )
    print("one empty crossing, best of 5 x 5000 (us):")
    for variant, costs in result["crossing_us"].items():
        print(
            f"  {variant:<24} run {costs['run']:>6.1f} (CPU {costs['run_cpu']:>6.1f})   "
            f"call_trio {costs['call_trio']:>6.1f} (CPU {costs['call_trio_cpu']:>6.1f})"
        )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

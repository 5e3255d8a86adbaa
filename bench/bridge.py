"""What the asyncio edge costs: aio-pika publish-with-confirm and consume, three ways.

The same aio-pika workload runs as plain asyncio (the baseline), from Trio through the
guest edge (``run_with_asyncio_host``) and from Trio through the trio-asyncio edge
(``trio.run`` + ``trio_asyncio.open_loop``), in two shapes:

* **per call**: Trio drives aio-pika the way an actor does, one ``edge.run(...)`` crossing
  for every aio-pika call the plain version awaits: one per published message, two per
  consumed message (next message, ack). This is the bridge's cost on the hot path.
* **loop** (``*_loop`` figures, the target): each cycle of messages (below) is one asyncio
  coroutine run through a single ``edge.run``. This is the speed of the asyncio loop itself
  under each bridge: the host loop for guest, the emulated loop for trio-asyncio.

Workload, in cycles of *chunk* messages: publish the chunk's persistent messages of
``MESSAGE_BYTES`` bytes through the default exchange on a channel with publisher confirms,
one at a time, each awaited until confirmed, then consume and ack them from the variant's
own auto-delete queue (prefetch ``PREFETCH``; deliveries start arriving while the publishes
are still being confirmed). A cycle ends with the queue empty and nothing in flight, so a
pause between cycles changes nothing for the next one.

How it is measured: the five variants run at once, each in its own interpreter (importing
trio_asyncio monkeypatches asyncio for the whole process), connected to the broker the whole
time, and take turns cycle by cycle, one variant at a time, the others standing still: plain
between the two guest variants (which swap sides every round), then the trio-asyncio ones.
So every variant's cycle k ran within a fraction of a second of plain's cycle k, on nearly
the same broker and machine; a broker shared with other work drifts by tens of percent
within a minute. Each cycle records its wall time and the process's CPU time, and pairs
with plain's cycle of the same round: its ratio is plain's time over the variant's.

The cycles come in *batches*, each from fresh interpreters: one interpreter can run a few
percent fast or slow throughout (memory layout, hash seed), which no number of its own
cycles averages out, so the figure samples many (the interpreters of one batch share a hash
seed, so a pair differs in the bridge, not in dict layouts). Figures are medians of all
pair ratios, with a 95% confidence interval of the median by two-stage bootstrap (batches,
then cycles within them): the figure's spread, how far another run's median may land. A
busy machine widens it; then more batches are run, up to *max_batches*. The primary ratio
is from CPU time, which neighbours on a shared machine disturb far less than wall time;
the wall ratio stands beside it with its own spread.

Also measured, without the broker: the cost of one empty crossing each way (best of five
runs of 2000), for the guest edge on our driver, on Trio's stock ``start_guest_run`` driver,
and for the trio-asyncio edge.

Run it: ``python -m bench.bridge [--chunk 25] [--cycles 10] [--batches 16] [--max-batches 32]
[--url amqp://...]`` (cycles per batch).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import IO, Any

DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/"
MESSAGE_BYTES = 600
PREFETCH = 100
# What each variant is: (bridge, shape). Plain asyncio has only one shape.
VARIANTS = {
    "plain": ("plain", "per_call"),
    "guest": ("guest", "per_call"),
    "trio_asyncio": ("trio_asyncio", "per_call"),
    "guest_loop": ("guest", "loop"),
    "trio_asyncio_loop": ("trio_asyncio", "loop"),
}
# Edge crossings per message in the per-call shape: publish 1, consume 2 (next, ack).
CROSSINGS_PER_MESSAGE = 3
# How far a run's median may lie from another run's for the figure to count as stable: the
# issue's "repeated runs agree within +-0.05".
TOLERANCE = 0.05
WARMUP_CYCLES = 2  # per variant, not counted: the connection and code paths warm up
EXTRA_BATCHES = 4  # added at a time while the target's CI is wider than TOLERANCE
MAX_LOST_BATCHES = 3  # batches thrown away (a variant died) before the run gives up
RETRY_PAUSE = 5.0  # seconds before running a lost batch again

# How the workload awaits one aio-pika call: plain asyncio awaits it directly; the
# per-call shape passes it to edge.run().
Call = Callable[..., Awaitable[Any]]


async def _direct(fn: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any) -> Any:
    return await fn(*args, **kwargs)


async def _open_iterator(queue: Any) -> Any:
    # QueueIterator() looks up the running loop when constructed: do it on the asyncio side.
    return queue.iterator()


async def _cycle(
    call: Call, exchange: Any, routing_key: str, body: bytes, iterator: Any, n: int
) -> dict[str, float]:
    """Publish *n* messages, then consume and ack them; wall and CPU seconds (CPU: the whole
    process, every thread)."""
    import aio_pika

    persistent = aio_pika.DeliveryMode.PERSISTENT
    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(n):
        message = aio_pika.Message(body, delivery_mode=persistent, message_id=str(i))
        await call(exchange.publish, message, routing_key=routing_key)
    for _ in range(n):
        incoming = await call(iterator.__anext__)
        await call(incoming.ack)
    return {"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu}


def _reply(value: object) -> None:
    print(json.dumps(value), flush=True)


async def _serve(call: Call, cycle_call: Call, chunk: int, url: str, edge: str) -> None:
    """Answer the parent's commands (one a line: ``cycle`` or ``quit``), each with the wall
    and CPU seconds of one cycle of *chunk* messages.

    *call* awaits the set-up calls; *cycle_call* awaits each cycle and hands it the *call*
    to use inside (per-call shape: cycle_call is direct and call crosses the edge; loop
    shape: the other way round).
    """
    import aio_pika

    connection = await call(aio_pika.connect, url)
    try:
        channel = await call(connection.channel, publisher_confirms=True)
        await call(channel.set_qos, prefetch_count=PREFETCH)
        queue = await call(
            channel.declare_queue, f"bench.bridge.{uuid.uuid4().hex}", auto_delete=True
        )
        iterator = await call(_open_iterator, queue)
        await call(iterator.consume)
        inner = call if cycle_call is _direct else _direct
        body = os.urandom(MESSAGE_BYTES // 2).hex().encode()
        _reply({"ready": edge})
        # A blocking read: between its cycles this process stands still, as the others do.
        while (command := sys.stdin.readline().strip()) != "quit":
            if command != "cycle":
                raise ValueError(f"unknown command {command!r}: expected cycle or quit")
            _reply(
                await cycle_call(
                    _cycle, inner, channel.default_exchange, queue.name, body, iterator, chunk
                )
            )
        await call(iterator.close)
        await call(queue.delete, if_unused=False, if_empty=False)
    finally:
        await call(connection.close)


def serve(key: str, chunk: int, url: str) -> None:
    """Run variant *key*'s side of :func:`measure` in this process (see :func:`_serve`)."""
    if key not in VARIANTS:
        raise ValueError(f"unknown variant {key!r}; expected one of {', '.join(VARIANTS)}")
    bridge, shape = VARIANTS[key]
    if bridge == "plain":
        asyncio.run(_serve(_direct, _direct, chunk, url, "none"))
        return

    import trio

    from runtime import open_asyncio_edge, run_with_asyncio_host

    async def main() -> None:
        async with open_asyncio_edge() as edge:
            cycle_call = edge.run if shape == "loop" else _direct
            await _serve(edge.run, cycle_call, chunk, url, edge.name)

    if bridge == "guest":
        run_with_asyncio_host(main)
    else:
        trio.run(main)


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


def crossing_once(variant: str, n: int = 2000) -> dict[str, float]:
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


_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _child_argv(child: str, *options: str) -> list[str]:
    return [sys.executable, "-m", "bench.bridge", "--child", child, *options]


def _crossing_child(variant: str) -> dict[str, float]:
    proc = subprocess.run(
        _child_argv(f"crossing:{variant}"), cwd=_ROOT, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"bench crossing run {variant} failed:\n{proc.stderr}")
    result: dict[str, float] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


class _Server:
    """One variant's interpreter (:func:`serve`), driven a cycle at a time over its stdin."""

    def __init__(self, key: str, chunk: int, url: str, hash_seed: int) -> None:
        self.key = key
        self._stderr: IO[str] = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - closed in close()
        self._proc = subprocess.Popen(
            _child_argv(f"serve:{key}", "--chunk", str(chunk), "--url", url),
            cwd=_ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            env={**os.environ, "PYTHONHASHSEED": str(hash_seed)},
        )

    def answer(self) -> Any:
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line:
            self._proc.wait()
            raise RuntimeError(
                f"bench variant {self.key} exited ({self._proc.returncode}): {self._last_error()}"
            )
        return json.loads(line)

    def _last_error(self) -> str:
        # The traceback's last line says what went wrong (a broker that went away, mostly);
        # the bench's table has no room for the rest.
        self._stderr.seek(0)
        lines = [line for line in self._stderr.read().splitlines() if line.strip()]
        return lines[-1] if lines else "nothing on stderr"

    def ask(self, command: str) -> Any:
        assert self._proc.stdin is not None
        self._proc.stdin.write(command + "\n")
        self._proc.stdin.flush()
        return self.answer()

    def close(self, clean: bool) -> None:
        """Ask it to quit and wait (*clean*), or kill it (something went wrong already)."""
        try:
            if clean:
                assert self._proc.stdin is not None
                self._proc.stdin.write("quit\n")
                self._proc.stdin.close()
                if self._proc.wait(timeout=60) != 0:
                    raise RuntimeError(
                        f"bench variant {self.key} failed at exit: {self._last_error()}"
                    )
        finally:
            if self._proc.poll() is None:
                self._proc.kill()
                self._proc.wait()
            self._stderr.close()


def bootstrap_ci95(
    batches: Sequence[Sequence[float]], resamples: int = 2000
) -> tuple[float, float]:
    """A 95% confidence interval of the median of all values in *batches*, by a two-stage
    bootstrap: draw batches with replacement, then values within each drawn batch.

    Values of one batch come from the same interpreters, which may all run a little fast
    or slow (memory layout, the load at the time): drawing whole batches carries that
    into the interval, where an interval over the pooled values would not see it.
    """
    draw = random.Random(0).choice  # a fixed seed: the same figures give the same interval

    def resample() -> list[float]:
        drawn = [draw(batches) for _ in batches]
        return [draw(batch) for batch in drawn for _ in batch]

    medians = sorted(statistics.median(resample()) for _ in range(resamples))
    return medians[int(0.025 * resamples)], medians[int(0.975 * resamples) - 1]


def summarize(batches: Sequence[Sequence[float]]) -> dict[str, Any]:
    """Median of the pair ratios (one sequence per batch of interpreters), its 95% CI
    (:func:`bootstrap_ci95`), how far that reaches from the median (``spread``, and whether
    it is within :data:`TOLERANCE`), each batch's median, the quartiles and extremes."""
    ratios = [r for batch in batches for r in batch]
    median = statistics.median(ratios)
    low, high = bootstrap_ci95(batches)
    quartiles = statistics.quantiles(ratios, n=4) if len(ratios) >= 2 else [ratios[0]] * 3
    # Judged as shown (three decimals), so that the printed spread and verdict agree.
    spread = round(max(median - low, high - median), 3)
    return {
        "median": round(median, 3),
        "ci95": [round(low, 3), round(high, 3)],
        "spread": spread,
        "within_tolerance": spread <= TOLERANCE,
        "batch_medians": [round(statistics.median(batch), 3) for batch in batches],
        "iqr": [round(quartiles[0], 3), round(quartiles[2], 3)],
        "min": round(min(ratios), 3),
        "max": round(max(ratios), 3),
        "pairs": [round(r, 3) for r in ratios],
    }


def _orders(rounds: int) -> list[list[str]]:
    """The order of the variants in each round of cycles. Plain sits between the two guest
    variants (the target figure's and the per-call one), which swap sides every round, so
    each is always next to the plain cycle it is paired with and goes first half the time;
    the trio-asyncio variants follow, rotating."""
    rest = ["trio_asyncio_loop", "trio_asyncio"]
    orders = []
    for i in range(rounds):
        guests = ["guest_loop", "plain", "guest"]
        if i % 2:
            guests.reverse()
        shift = i % len(rest)
        orders.append([*guests, *rest[shift:], *rest[:shift]])
    return orders


class _Batches:
    """Per-variant cycle times by batch, and the batches lost (a variant died) on the way."""

    def __init__(self) -> None:
        self.times: dict[str, list[list[dict[str, float]]]] = {key: [] for key in VARIANTS}
        self.lost: list[str] = []


def run_cycles(
    chunk: int,
    cycles: int,
    url: str,
    batches: int,
    into: _Batches | None = None,
    retries: int = MAX_LOST_BATCHES,
) -> _Batches:
    """Every variant's wall and CPU seconds for *cycles* cycles of *chunk* messages, taken
    in turns, in each of *batches* batches of fresh interpreters (each after
    :data:`WARMUP_CYCLES` uncounted cycles): ``.times[key][batch][k]``, added to *into*.

    A batch in which a variant dies (the shared broker restarted under it, say) is thrown
    away whole and run again, up to *retries* times in all; ``.lost`` says why each went.
    """
    result = into if into is not None else _Batches()
    for _ in range(batches):
        while True:
            try:
                times = _run_batch(chunk, cycles, url)
                break
            except RuntimeError as exc:
                if len(result.lost) >= retries:
                    raise
                result.lost.append(str(exc))
                time.sleep(RETRY_PAUSE)  # a broker restart takes a few seconds
        for key in VARIANTS:
            result.times[key].append(times[key])
    return result


def _run_batch(chunk: int, cycles: int, url: str) -> dict[str, list[dict[str, float]]]:
    # One hash seed for the batch: str hashes (dict and set layouts) differ between
    # interpreters and so does their speed; the pairs share it, the batches sample it.
    hash_seed = random.randrange(2**32)
    servers = {key: _Server(key, chunk, url, hash_seed) for key in VARIANTS}
    times: dict[str, list[dict[str, float]]] = {key: [] for key in VARIANTS}
    clean = False
    try:
        for server in servers.values():
            server.answer()  # ready
        for k, order in enumerate(_orders(WARMUP_CYCLES + cycles)):
            for key in order:
                result = servers[key].ask("cycle")
                if k >= WARMUP_CYCLES:
                    times[key].append(result)
        clean = True
    finally:
        for server in servers.values():
            server.close(clean)
    return times


def _ratios_summary(
    times: dict[str, list[list[dict[str, float]]]], key: str, clock: str
) -> dict[str, Any]:
    """:func:`summarize` of plain's *clock* time over variant *key*'s, cycle by cycle."""
    return summarize(
        [
            [p[clock] / v[clock] for p, v in zip(plain_batch, batch, strict=True)]
            for plain_batch, batch in zip(times["plain"], times[key], strict=True)
        ]
    )


def measure(
    chunk: int = 25,
    cycles: int = 10,
    batches: int = 16,
    max_batches: int = 32,
    url: str = DEFAULT_URL,
) -> dict[str, Any]:
    """Measure all variants and shapes, paired cycle by cycle with plain asyncio: *batches*
    batches of *cycles* cycles of *chunk* messages, and more batches (up to *max_batches*)
    while the target's CI reaches further than :data:`TOLERANCE`.

    Keys: ``msgs_per_s`` (per variant, messages published and consumed per second, median
    over cycles); ``cpu_us_per_msg`` (median CPU microseconds per message published and
    consumed); ``ratio_{variant}`` (the primary figure: the median over cycles of plain's
    CPU time for the cycle over the variant's) with ``ratio_{variant}_spread`` (how far its
    95% CI reaches from it) and ``ratio_{variant}_stable`` (that spread within
    :data:`TOLERANCE`); ``wall_ratio_{variant}`` and its spread and stability, the same
    from wall time; ``pairs`` (for each variant and clock the summary of
    :func:`summarize`, every pair ratio included); ``cpu_us_per_crossing`` (the per-call
    shape's extra CPU per message over plain's, per crossing); ``crossing_us`` (empty
    crossings); ``conditions``.
    """
    load_before = os.getloadavg()
    started = time.perf_counter()
    if not 1 <= batches <= max_batches:
        raise ValueError(f"batches ({batches}) must be between 1 and max_batches ({max_batches})")
    batched = run_cycles(chunk, cycles, url, batches)
    # A busy machine can leave the target's interval wider than the tolerance: then more
    # batches, up to max_batches, rather than a figure that cannot be judged.
    while (
        len(batched.times["plain"]) < max_batches
        and _ratios_summary(batched.times, "guest_loop", "cpu")["spread"] > TOLERANCE
    ):
        more = min(EXTRA_BATCHES, max_batches - len(batched.times["plain"]))
        run_cycles(chunk, cycles, url, more, into=batched)
    times = batched.times
    cycles_seconds = time.perf_counter() - started
    plain = times["plain"]
    flat = {key: [t for batch in runs for t in batch] for key, runs in times.items()}
    result: dict[str, Any] = {
        "msgs_per_s": {
            key: round(chunk / statistics.median(t["wall"] for t in runs), 1)
            for key, runs in flat.items()
        },
        "cpu_us_per_msg": {
            key: round(statistics.median(t["cpu"] for t in runs) / chunk * 1e6, 1)
            for key, runs in flat.items()
        },
    }
    pairs: dict[str, dict[str, Any]] = {}
    for key in VARIANTS:
        if key == "plain":
            continue
        pairs[key] = {}
        for clock, prefix in (("cpu", "ratio"), ("wall", "wall_ratio")):
            summary = pairs[key][clock] = _ratios_summary(times, key, clock)
            result[f"{prefix}_{key}"] = summary["median"]
            result[f"{prefix}_{key}_spread"] = summary["spread"]
            result[f"{prefix}_{key}_stable"] = summary["within_tolerance"]
    result["pairs"] = pairs
    result["cpu_us_per_crossing"] = {
        key: round(
            statistics.median(
                (v["cpu"] - p["cpu"]) / (chunk * CROSSINGS_PER_MESSAGE) * 1e6
                for p, v in zip(flat["plain"], flat[key], strict=True)
            ),
            1,
        )
        for key in ("guest", "trio_asyncio")
    }
    result["crossing_us"] = {
        variant: {k: round(v, 1) for k, v in _crossing_child(variant).items()}
        for variant in ("guest", "guest_start_guest_run", "trio_asyncio")
    }
    result["conditions"] = {
        "chunk": chunk,
        "cycles_per_batch": cycles,
        "batches": len(plain),
        "batches_planned": batches,
        "max_batches": max_batches,
        "batches_lost_and_rerun": batched.lost,
        "warmup_cycles": WARMUP_CYCLES,
        "message_bytes": MESSAGE_BYTES,
        "delivery_mode": "persistent",
        "publisher_confirms": True,
        "cycle": (
            f"publish {chunk} sequentially, each awaited until confirmed, then consume and ack "
            f"them (queue iterator, prefetch {PREFETCH})"
        ),
        "statistic": (
            f"{len(plain)} batches of fresh interpreters ({batches} planned, more while "
            f"the target's CI was wider than +-{TOLERANCE}, up to {max_batches}), one "
            "per variant, all connected at once, taking turns cycle by cycle; pair k = "
            "plain's cycle k against the variant's; median of the pair ratios with a 95% "
            "CI of the median by two-stage bootstrap (batches, then cycles); primary ratio "
            "from process CPU time, wall beside it"
        ),
        "tolerance": TOLERANCE,
        "cycles_seconds": round(cycles_seconds, 1),
        "load_average_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "versions": _versions(),
        "url": url,
    }
    result["target"] = "ratio_guest_loop >= 0.9 (CPU), 95% CI within +-0.05"
    return result


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    return {p: version(p) for p in ("trio", "trio-asyncio", "aio-pika", "aiormq")}


def stability_line(result: dict[str, Any]) -> str:
    """The target figure, its spread and whether another run should agree within +-0.05."""
    cpu, wall = result["pairs"]["guest_loop"]["cpu"], result["pairs"]["guest_loop"]["wall"]

    def says(summary: dict[str, Any]) -> str:
        verdict = "yes" if summary["within_tolerance"] else "NO"
        return (
            f"{summary['median']:.3f}, 95% CI {summary['ci95'][0]:.3f}-{summary['ci95'][1]:.3f} "
            f"(±{summary['spread']:.3f}: within ±{TOLERANCE}: {verdict}; pairs "
            f"{summary['min']:.2f}-{summary['max']:.2f})"
        )

    return f"ratio_guest_loop CPU {says(cpu)}; wall {says(wall)}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bridge", description=__doc__)
    parser.add_argument("--chunk", type=int, default=25, help="messages per cycle")
    parser.add_argument("--cycles", type=int, default=10, help="counted cycles per batch")
    parser.add_argument(
        "--batches", type=int, default=16, help="fresh interpreters this many times"
    )
    parser.add_argument(
        "--max-batches", type=int, default=32, help="more while the CI is too wide, up to"
    )
    parser.add_argument("--url", default=DEFAULT_URL)
    parser.add_argument("--child", help=argparse.SUPPRESS)  # "serve:KEY" or "crossing:VARIANT"
    args = parser.parse_args(argv)
    if args.chunk < 1 or args.cycles < 1 or not 1 <= args.batches <= args.max_batches:
        parser.error("--chunk and --cycles must be at least 1, --batches 1 to --max-batches")
    if args.child:
        role, _, name = args.child.partition(":")
        if role == "crossing":
            print(json.dumps(crossing_once(name)))
        elif role == "serve":
            serve(name, args.chunk, args.url)
        else:
            parser.error(f"unknown child role {role!r}")
        return

    result = measure(args.chunk, args.cycles, args.batches, args.max_batches, args.url)
    print(
        f"{'run':<19}{'msgs/s':>8}{'CPU us/msg':>12}{'CPU ratio':>11}{'95% CI':>13}"
        f"{'wall ratio':>12}{'95% CI':>13}"
    )
    for key in VARIANTS:
        row = (
            f"{key:<19}{result['msgs_per_s'][key]:>8.0f}{result['cpu_us_per_msg'][key]:>12.0f}"
        )
        if key != "plain":
            for clock, width in (("cpu", 11), ("wall", 12)):
                s = result["pairs"][key][clock]
                row += f"{s['median']:>{width}.3f}{s['ci95'][0]:>8.3f}-{s['ci95'][1]:.3f}"
        print(row)
    print(stability_line(result))
    print("CPU per crossing in the per-call workload (us):", result["cpu_us_per_crossing"])
    print("one empty crossing, best of 5 x 2000 (us):")
    for variant, costs in result["crossing_us"].items():
        print(
            f"  {variant:<24} run {costs['run']:>6.1f} (CPU {costs['run_cpu']:>6.1f})   "
            f"call_trio {costs['call_trio']:>6.1f} (CPU {costs['call_trio_cpu']:>6.1f})"
        )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

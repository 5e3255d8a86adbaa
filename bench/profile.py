"""Where the embedded pipeline's CPU goes: the embedded benchmark under cProfile, by component.

    python -m bench.profile [N]        (N emails, default 5000)

Prints the share of the main thread's profiled time (own time of each function, summed by the
package or module it belongs to), so that "what costs most per email" is one
command away. cProfile slows Python code down about 2x, unevenly, so shares
are what to read, not the emails/s it prints. For the distributed profile,
attach py-spy to the service processes while ``python -m bench.distributed
distributed_e2e`` runs; ``cpu_ms_per_email`` in its result splits the
machine's CPU between the processes.
"""

from __future__ import annotations

import cProfile
import pstats
import sys
import tempfile
from collections import Counter
from pathlib import Path

import trio

ROOT = Path(__file__).resolve().parent.parent


def component(filename: str, function: str) -> str:
    """A readable owner for a profiled function: package, project module or builtin."""
    if "site-packages/" in filename:
        return filename.split("site-packages/", 1)[1].split("/", 1)[0]
    if str(ROOT) in filename:
        return filename.split(str(ROOT) + "/", 1)[1]
    if filename.startswith("~"):
        if "epoll" in function or "select" in function:
            return "waiting in epoll (idle, or threads holding the GIL)"
        return "C: " + function.removeprefix("<").removesuffix(">")[:60]
    return "stdlib: " + Path(filename).name


def main(n: int = 5000) -> None:
    sys.path.insert(0, str(ROOT))
    from bench.embedded import _run

    profiler = cProfile.Profile()
    with tempfile.TemporaryDirectory() as directory:
        result = trio.run(_run, n, directory, 512, profiler)
    stats = pstats.Stats(profiler)
    shares: Counter[str] = Counter()
    total = 0.0
    for (filename, _line, function), row in stats.stats.items():  # type: ignore[attr-defined]
        own = row[2]
        shares[component(filename, function)] += own
        total += own
    print(
        f"{n} emails under cProfile: {result['emails_per_s']} emails/s (profiled, slower than real)"
    )
    for name, seconds in shares.most_common(25):
        print(f"{100 * seconds / total:5.1f}%  {name}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5000)

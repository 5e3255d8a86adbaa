"""Pictures of the bench's figures (``supervisor.py bench --plot DIR``), drawn with matplotlib.

Five PNGs, each stating the machine, the commit and the conditions it was measured under:

throughput.png   the embedded pipeline's rate against concurrent callers, beside the plain
                 script's (one loop, no concurrency), and distributed_e2e beside its
                 aiosmtplib baseline
latency_cdf.png  request-to-send latency distribution at 25%, 50% and 75% of the maximum
                 rate, one panel per profile
cpu.png          CPU milliseconds per email by process (stacked): the distributed cluster
                 next to the plain aiosmtplib script and its sink
scaling.png      the slow-provider rate against email-server workers, next to the ideal
bridge.png       the asyncio edge against plain asyncio: every paired cycle's ratio per
                 variant, CPU and wall, with the median, its 95% CI and the target

A picture whose figures are missing from the results (a benchmark not run) is skipped.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def commit_label() -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown commit"
    return out + ("+changes" if dirty else "")


def _stamp(results: dict[str, Any], conditions: str) -> str:
    m = results.get("machine", {})
    machine = (
        f"{m.get('cpus', '?')} CPUs, Python {m.get('python', '?')}, "
        f"load at start {m.get('load_average_at_start', '?')}, at end "
        f"{m.get('load_average', '?')}, {m.get('when', '?')}"
        f"{' (quick)' if m.get('quick') else ''}"
    )
    return f"{machine}; commit {results.get('commit', commit_label())}\n{conditions}"


def draw(results: dict[str, Any], directory: str | Path) -> list[Path]:
    """Write the pictures the results allow into ``directory``; return their paths."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, fn in (
        ("throughput.png", _throughput),
        ("latency_cdf.png", _latency),
        ("cpu.png", _cpu),
        ("scaling.png", _scaling),
        ("bridge.png", _bridge),
    ):
        fig = fn(results)
        if fig is not None:
            path = out / name
            fig.savefig(path, dpi=110, bbox_inches="tight")
            written.append(path)
            import matplotlib.pyplot as plt

            plt.close(fig)
    return written


def _figure(title: str, panels: int = 1) -> tuple[Any, Any]:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, panels, figsize=(6.4 * panels, 4.6), squeeze=False)
    fig.suptitle(title)
    return fig, axes[0]


def _note(fig: Any, text: str) -> None:
    fig.text(0.01, -0.02, text, fontsize=7, va="top", ha="left", wrap=True)


def _throughput(results: dict[str, Any]) -> Any:
    emb = results.get("embedded_e2e", {})
    points = emb.get("by_concurrency")
    if not points:
        return None
    dist = results.get("distributed_e2e", {})
    fig, (ax, ax2) = _figure("Throughput against concurrency", 2)
    callers = [p["callers"] for p in points]
    ax.plot(callers, [p["emails_per_s"] for p in points], "o-", label="embedded pipeline")
    if "plain_script_per_s" in emb:
        ax.axhline(emb["plain_script_per_s"], color="grey", ls="--",
                   label="plain script (one loop)")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("concurrent callers")
    ax.set_ylabel("emails/s (request to SENT)")
    ax.set_ylim(bottom=0)
    ax.legend()
    ax.set_title("embedded (SQLite, Maildir, 16 batching senders)")
    if "emails_per_s" in dist:
        bars = {
            "mailactors\n(64 gRPC callers)": dist["emails_per_s"],
            "plain aiosmtplib\nscript": dist["raw_aiosmtplib_per_s"],
            "SMTP transport\nalone": dist["raw_transport_per_s"],
        }
        ax2.bar(list(bars), list(bars.values()), color=["C0", "grey", "lightgrey"])
        ax2.set_ylabel("emails/s")
        ax2.set_title(f"distributed: ratio {dist.get('ratio')}x the plain script")
    else:
        ax2.set_visible(False)
    _note(fig, _stamp(results, f"embedded: {emb.get('conditions', '')}\n"
                      f"distributed: {dist.get('conditions', 'not measured')}"))
    return fig


def _latency(results: dict[str, Any]) -> Any:
    panels = [(name, results[name]) for name in ("latency_embedded", "latency")
              if "loads" in results.get(name, {})]
    if not panels:
        return None
    fig, axes = _figure("Latency from request to SENT, by load", len(panels))
    notes = []
    for ax, (name, r) in zip(axes, panels, strict=True):
        for load in r["loads"]:
            values = load.get("cdf_ms") or []
            if not values:
                continue
            share = [i / (len(values) - 1) for i in range(len(values))]
            ax.plot(values, share, label=(
                f"{round(load['fraction'] * 100)}% = {load['rate_per_s']}/s: "
                f"p50 {load['p50_ms']}, p99 {load['p99_ms']} ms"
            ))
        ax.set_xscale("log")
        ax.set_xlabel("ms (log scale)")
        ax.set_ylabel("share of emails")
        ax.set_title(f"{'embedded' if name == 'latency_embedded' else 'distributed'} "
                     f"(max {r.get('max_rate_per_s')}/s)")
        ax.legend(fontsize=8)
        notes.append(f"{name}: {r.get('conditions', '')}")
    _note(fig, _stamp(results, "\n".join(notes)))
    return fig


def _cpu(results: dict[str, Any]) -> Any:
    dist = results.get("distributed_e2e", {})
    cluster: dict[str, float] = dist.get("cpu_ms_per_email") or {}
    if not cluster:
        return None
    baseline: dict[str, float] = dist.get("raw_aiosmtplib_cpu_ms_per_email") or {}
    fig, (ax,) = _figure("CPU per email, by process")
    columns = {"mailactors distributed": cluster, "plain aiosmtplib script": baseline}
    names = sorted({k for c in columns.values() for k in c if k != "other"})
    bottoms = [0.0] * len(columns)
    for i, name in enumerate(names):
        heights = [c.get(name, 0.0) for c in columns.values()]
        ax.bar(list(columns), heights, bottom=bottoms, label=name, color=f"C{i % 10}")
        bottoms = [b + h for b, h in zip(bottoms, heights, strict=True)]
    for x, total in enumerate(bottoms):
        ax.text(x, total, f"{total:.2f} ms", ha="center", va="bottom")
    ax.set_ylabel("CPU ms per email")
    ax.legend(fontsize=8, loc="upper right")
    other = cluster.get("other")
    _note(fig, _stamp(results, f"{dist.get('conditions', '')}; other work on the machine "
                      f"during the run (not shown): {other} ms per email"))
    return fig


def _scaling(results: dict[str, Any]) -> Any:
    points = results.get("scaling", {}).get("points")
    if not points:
        return None
    fig, (ax,) = _figure("Scaling with email-server workers (provider-bound)")
    workers = [p["workers"] for p in points]
    ax.plot(workers, [p["ideal_per_s"] for p in points], "--", color="grey", label="ideal")
    ax.plot(workers, [p["emails_per_s"] for p in points], "o-", label="measured")
    for p in points:
        ax.annotate(f"{p['ratio']}x", (p["workers"], p["emails_per_s"]),
                    textcoords="offset points", xytext=(5, -12))
    ax.set_xticks(workers)
    ax.set_xlabel("email-server workers")
    ax.set_ylabel("emails/s")
    ax.set_ylim(bottom=0)
    ax.legend()
    _note(fig, _stamp(results, results["scaling"].get("conditions", "")))
    return fig


def _bridge(results: dict[str, Any]) -> Any:
    bridge = results.get("bridge", {})
    pairs = bridge.get("pairs")
    if not pairs:
        return None
    fig, axes = _figure("The asyncio edge against plain asyncio (aio-pika, paired cycles)", 2)
    keys = list(pairs)
    for ax, clock, label in zip(axes, ("cpu", "wall"), ("CPU time", "wall time"), strict=True):
        summaries = [pairs[key][clock] for key in keys]
        ax.boxplot([s["pairs"] for s in summaries], showfliers=False)
        positions = range(1, len(keys) + 1)
        medians = [s["median"] for s in summaries]
        ax.errorbar(
            positions, medians,
            yerr=[[m - s["ci95"][0] for m, s in zip(medians, summaries, strict=True)],
                  [s["ci95"][1] - m for m, s in zip(medians, summaries, strict=True)]],
            fmt="o", color="C3", capsize=4, label="median, 95% CI",
        )
        for x, s in zip(positions, summaries, strict=True):
            ax.annotate(f"{s['median']:.3f}\n±{s['spread']:.3f}", (x, s["median"]),
                        textcoords="offset points", xytext=(34, 0), fontsize=7, va="center")
        ax.axhline(0.9, color="grey", ls="--", label="target for guest_loop (0.9)")
        ax.axhline(1.0, color="lightgrey", ls=":")
        ax.set_xticks(list(positions), [k.replace("_", "\n", 1) for k in keys], fontsize=8)
        ax.set_ylabel(f"plain / variant, {label} per cycle")
        ax.set_ylim(bottom=0)
        ax.set_title(f"{label} (boxes: quartiles of the pairs)")
        ax.legend(fontsize=7, loc="lower right")
    _note(fig, _stamp(results, str(bridge.get("conditions", {}).get("statistic", ""))
                      + f"; {bridge.get('conditions', {}).get('cycle', '')}"))
    return fig

"""bench --plot: the five pictures from a results dict, and only those its figures allow."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.distributed import cdf
from bench.plot import draw


def results() -> dict[str, Any]:
    load = {"p50_ms": 5.0, "p99_ms": 40.0, "samples": 3, "cdf_ms": cdf([1.0, 5.0, 40.0])}
    loads = [
        {"fraction": f, "rate_per_s": int(400 * f), **load} for f in (0.25, 0.5, 0.75)
    ]
    return {
        "machine": {"cpus": 2, "python": "3.11", "load_average": [1.0], "when": "now"},
        "commit": "abc1234",
        "embedded_e2e": {
            "by_concurrency": [{"callers": c, "emails_per_s": 100 * c} for c in (1, 4, 16)],
            "plain_script_per_s": 900,
            "conditions": "test",
        },
        "latency_embedded": {"loads": loads, "max_rate_per_s": 400},
        "latency": {"loads": loads, "max_rate_per_s": 400},
        "distributed_e2e": {
            "emails_per_s": 500, "raw_aiosmtplib_per_s": 700, "raw_transport_per_s": 1400,
            "ratio": 0.71,
            "cpu_ms_per_email": {"auth": 0.7, "email-server": 1.0, "other": 0.2},
            "raw_aiosmtplib_cpu_ms_per_email": {"client": 1.3, "smtp-sink": 0.1},
        },
        "bridge": {
            "pairs": {
                key: {
                    clock: {"median": m, "ci95": [m - 0.02, m + 0.02], "spread": 0.02,
                            "pairs": [m - 0.1, m, m + 0.1]}
                    for clock in ("cpu", "wall")
                }
                for key, m in (("guest", 0.8), ("guest_loop", 0.97), ("trio_asyncio", 0.3))
            },
            "conditions": {"statistic": "test", "cycle": "test"},
        },
        "scaling": {
            "points": [
                {"workers": w, "emails_per_s": 38.0 * w, "ideal_per_s": 40.0 * w, "ratio": 0.95}
                for w in (1, 2, 4)
            ]
        },
    }


def test_draws_the_five_pictures(tmp_path: Path) -> None:
    written = draw(results(), tmp_path / "out")
    assert sorted(p.name for p in written) == [
        "bridge.png", "cpu.png", "latency_cdf.png", "scaling.png", "throughput.png"
    ]
    for path in written:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000


def test_a_picture_without_its_figures_is_skipped(tmp_path: Path) -> None:
    partial = results()
    del partial["scaling"], partial["distributed_e2e"], partial["bridge"]
    assert sorted(p.name for p in draw(partial, tmp_path)) == ["latency_cdf.png", "throughput.png"]


def test_cdf_has_every_percentile_from_min_to_max() -> None:
    values = [float(v) for v in range(1, 1001)]
    points = cdf(values)
    assert len(points) == 101 and points[0] == 1.0 and points[-1] == 1000.0
    assert points[50] == 500.0 or points[50] == 501.0
    assert cdf([]) == []

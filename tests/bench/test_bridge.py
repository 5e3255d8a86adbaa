"""bench.bridge: the statistics behind the bridge figure, the order of the paired cycles, and
one short run of every variant against the broker."""

from __future__ import annotations

import pytest

from bench import bridge
from bench.bridge import (
    TOLERANCE,
    VARIANTS,
    _orders,
    bootstrap_ci95,
    run_cycles,
    summarize,
)


def test_the_interval_carries_differences_between_batches() -> None:
    # Within each batch the pairs agree exactly; only the interpreters differ. An interval
    # over the pooled values would be as narrow for 0.8/1.0 batches as for identical ones.
    steady = [[1.0] * 20 for _ in range(8)]
    assert bootstrap_ci95(steady) == (1.0, 1.0)
    split = [[0.8] * 20, [1.0] * 20] * 4
    low, high = bootstrap_ci95(split)
    assert low == pytest.approx(0.8) and high == pytest.approx(1.0)


def test_summary_says_whether_the_spread_is_within_tolerance() -> None:
    tight = summarize([[0.95, 0.96, 0.97, 0.96, 0.95] for _ in range(6)])
    assert tight["median"] == 0.96 and tight["within_tolerance"]
    assert tight["spread"] <= TOLERANCE and tight["ci95"][0] <= 0.96 <= tight["ci95"][1]
    assert tight["batch_medians"] == [0.96] * 6 and len(tight["pairs"]) == 30
    wide = summarize([[0.7] * 5, [1.1] * 5, [0.9] * 5, [0.8] * 5, [1.0] * 5])
    assert not wide["within_tolerance"] and wide["spread"] > TOLERANCE
    assert (wide["min"], wide["max"]) == (0.7, 1.1)


def test_each_guest_variant_runs_next_to_plain_and_first_half_the_time() -> None:
    orders = _orders(10)
    assert all(sorted(order) == sorted(VARIANTS) for order in orders)
    for order in orders:
        where = order.index("plain")
        assert {order[where - 1], order[where + 1]} == {"guest", "guest_loop"}
    before = [order.index("guest_loop") < order.index("plain") for order in orders]
    assert sum(before) == 5
    assert {order[3] for order in orders} == {"trio_asyncio", "trio_asyncio_loop"}


@pytest.mark.services
def test_every_variant_answers_its_cycles_against_the_broker(rabbitmq_url: str) -> None:
    batched = run_cycles(chunk=3, cycles=2, url=rabbitmq_url, batches=2)
    times = batched.times
    assert set(times) == set(VARIANTS) and batched.lost == []
    for batches in times.values():
        # Two counted cycles in each of two batches of fresh interpreters, warm-up not counted.
        assert [len(batch) for batch in batches] == [2, 2]
        assert all(t["wall"] > 0 and t["cpu"] > 0 for batch in batches for t in batch)


def test_a_variant_that_dies_is_named_with_its_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bridge, "RETRY_PAUSE", 0.0)
    nothing_listens = "amqp://guest:guest@127.0.0.1:1/"
    dead = r"bench variant \w+ exited \(1\): .*Connect call failed"
    with pytest.raises(RuntimeError, match=dead):
        run_cycles(chunk=3, cycles=1, url=nothing_listens, batches=1, retries=1)

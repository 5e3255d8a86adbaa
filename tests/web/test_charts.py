"""The charts: rates and latency quantiles from the metrics' differences, drawn per status."""

from __future__ import annotations

import trio

from actors.domain.schema import Status
from actors.telemetry.metrics import EmailMetrics
from actors.web.charts import Charts


async def test_rates_and_latency_from_sampled_metrics(autojump_clock: trio.abc.Clock) -> None:
    metrics = EmailMetrics()
    charts = Charts(metrics.chart_samples, interval=5.0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(charts.run)
        await trio.sleep(1)  # first sample: all zero
        metrics.emails.labels("integration", "SENT").inc(50)
        metrics.emails.labels("integration", "FAILED").inc(5)
        metrics.emails.labels("email-server", "SENT").inc(999)  # not the store's view
        for ms in [20] * 90 + [800] * 10:
            metrics.latency.observe(ms / 1000)
        await trio.sleep(5)  # second sample
        await trio.sleep(5)  # third: nothing happened in between
        nursery.cancel_scope.cancel()
    rates = charts.rates()
    assert set(rates) == {s.value for s in Status}  # every status, new ones included
    assert [round(v, 3) for _, v in rates["SENT"]] == [10.0, 0.0]
    assert [round(v, 3) for _, v in rates["FAILED"]] == [1.0, 0.0]
    latency = charts.latency()
    (p50,) = [v for _, v in latency["p50"]]  # one interval had SENT emails
    (p95,) = [v for _, v in latency["p95"]]
    assert 10 <= p50 <= 25  # in the 10-25 ms bucket
    assert 500 <= p95 <= 1000  # in the 0.5-1 s bucket
    drawn = charts.svg("rates")
    assert {line["name"] for line in drawn["lines"]} == {s.value for s in Status}
    assert drawn["top"] == 10.0

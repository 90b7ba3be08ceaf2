"""The stream benchmark's sustained figure: what a consumer that keeps up scores, on a real short run."""

from __future__ import annotations

import numpy as np
import pytest

from bench.bench_stream import stream_run, sustained_rate


def test_a_consumer_that_keeps_up_scores_the_rate_offered() -> None:
    # 2,000 events/s for 2 s into the embedded log: far under what the consumer drains, so every event is
    # persisted within milliseconds, and the figure must be the producer's own rate, not less.
    run = stream_run("local", rate=2000, seconds=2, drain=20, decode_process=False)
    assert run["persisted"] == run["produced"] > 3000
    assert run["within_5s"] == 1.0
    offered = run["produced"] / run["offer_seconds"]
    assert run["sustained_events_per_s"] == pytest.approx(offered, rel=0.01)
    assert 1.9 <= run["offer_seconds"] <= 3.0
    # The figure before it timed from the producer's start (its interpreter and imports included) and cut at
    # its exit: under the rate offered, with every event persisted.
    assert run["producer_startup_s"] > 0.05
    assert run["window_events_per_s"] < 0.98 * offered


def test_events_persisted_late_do_not_count() -> None:
    # 10 s offered at 1,000/s; the consumer falls behind by 1 ms an event: the last 5,000 are over 5 s late.
    latencies = np.arange(10_000, dtype=np.float64)
    assert sustained_rate(latencies, offer_seconds=10.0) == pytest.approx(500.1)
    assert sustained_rate(latencies, offer_seconds=10.0, bound_ms=20_000) == pytest.approx(1000.0)

"""The stream benchmark's sustained figure: what a consumer that keeps up scores, on a real short run."""

from __future__ import annotations

import numpy as np
import pytest

from bench.bench_stream import stream_run, sustained_limits, sustained_rate


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


def _run(sustained: float, *, within_5s: float) -> dict[str, float]:
    return {"sustained_events_per_s": sustained, "produced_per_s": 49_008, "p99_ms": 1_655.0, "p50_ms": 336.0,
            "within_5s": within_5s}


def test_a_run_with_every_event_in_time_meets_the_peak_though_the_producer_ran_a_hair_long() -> None:
    # The sitting of 2026-12-05: 2,940,490 events offered at 49k/s, every one persisted within 5 s, but the
    # producer's own span was 60.02 s, so the figure is 48,989 a second. The spec's bound is 99.9 % in 5 s.
    rows = {r["path"]: r for r in sustained_limits(_run(48_989, within_5s=1.0), at="kafka 49k/s", rate=49_000,
                                                   alone=125_006, floor=None)}
    sustained = rows["kafka 49k/s offered: persisted within 5 s, per second offered / consumer alone"]
    assert sustained["met"] and sustained["target"] == pytest.approx(48_951)
    assert sustained["limit"] == 125_006
    assert rows["kafka 49k/s: p99 / p50"]["met"] and rows["kafka 49k/s: share within 5 s"]["met"]
    # 0.2 % of the peak not persisted within 5 s is a miss, and so is its share
    late = sustained_limits(_run(48_900, within_5s=0.998), at="kafka 49k/s", rate=49_000, alone=125_006, floor=None)
    assert [r["met"] for r in late] == [False, True, False]


def test_a_run_without_the_drain_says_its_limit_is_the_rate_offered() -> None:
    floor = {"bare_consumer": {"events_per_s": 208_736}, "producer_events_per_s": 208_091}
    rows = sustained_limits(_run(48_989, within_5s=1.0), at="kafka 49k/s, linger 25 ms", rate=49_000, alone=None,
                            floor=floor)
    assert rows[0]["path"].endswith("per second offered / offered") and rows[0]["limit"] == 49_000
    assert [r["limit"] for r in rows[1:3]] == [208_736, 208_091]
    assert not any("consumer alone" in r["path"] for r in rows)

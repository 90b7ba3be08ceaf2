"""The DR drill on a small sample (the demo-size run is ``bench/bench_dr.py``): lose the data directory
while events flow and the worker delivers; restore; replay; RPO 0 acknowledged events with the stream
retained, RTO well under 60 s."""

from __future__ import annotations

from pathlib import Path

from tests.backup.dr_harness import run_drill


def test_dr_drill_with_the_stream_retained_loses_no_acknowledged_event(tmp_path: Path) -> None:
    report = run_drill(tmp_path, retained=True, rate=400, run_s=6, after_s=3, notifications=200)
    print("\nDR drill:", report.line())
    assert report.acked > 1000
    assert report.lost_acked == 0 and report.persisted_acked == report.acked
    assert report.rto_api_s < 60 and report.rto_worker_s < 60
    assert report.deliveries_total > report.deliveries_before


def test_dr_drill_losing_the_stream_too_loses_at_most_the_replication_lag(tmp_path: Path) -> None:
    report = run_drill(tmp_path, retained=False, rate=400, run_s=6, after_s=3, notifications=200)
    print("\nDR drill:", report.line())
    assert report.acked > 1000
    assert report.lost_window_s <= 5.0  # Litestream ships the WAL every 200 ms; the goal is <= 5 min
    assert report.rto_api_s < 60 and report.rto_worker_s < 60

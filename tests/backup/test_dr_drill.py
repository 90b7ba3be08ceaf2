"""The DR drill on a small sample (the demo-size run is ``bench/bench_dr.py``): lose the data directory
while events flow and the worker delivers; restore; replay; RPO 0 acknowledged events with the stream
retained, RTO well under 60 s."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.backup.dr_harness import DrillReport, run_drill
from tests.faults.record import record

pytestmark = pytest.mark.faults


def _record(report: DrillReport, *, goal_lost: int | None) -> None:
    record(
        f"DR drill, {report.scenario}", injected="kill -9 of all services + rm -rf data dir",
        invariants={"no acknowledged event lost" if goal_lost == 0 else "lost window <= 5 s":
                    report.lost_acked == 0 if goal_lost == 0 else report.lost_window_s <= 5.0,
                    "RTO <= 60 s": report.rto_api_s < 60 and report.rto_worker_s < 60},
        acked=report.acked, lost=report.lost_acked, rto_api_s=report.rto_api_s, rto_worker_s=report.rto_worker_s,
        resent=report.duplicate_deliveries,
    )


def test_dr_drill_with_the_stream_retained_loses_no_acknowledged_event(tmp_path: Path) -> None:
    report = run_drill(tmp_path, retained=True, rate=400, run_s=6, after_s=3, notifications=200)
    print("\nDR drill:", report.line())
    _record(report, goal_lost=0)
    assert report.acked > 1000
    assert report.lost_acked == 0 and report.persisted_acked == report.acked
    assert report.rto_api_s < 60 and report.rto_worker_s < 60
    assert report.deliveries_total > report.deliveries_before


def test_dr_drill_losing_the_stream_too_loses_at_most_the_replication_lag(tmp_path: Path) -> None:
    report = run_drill(tmp_path, retained=False, rate=400, run_s=6, after_s=3, notifications=200)
    print("\nDR drill:", report.line())
    _record(report, goal_lost=None)
    assert report.acked > 1000
    assert report.lost_window_s <= 5.0  # Litestream ships the WAL every 200 ms; the goal is <= 5 min
    assert report.rto_api_s < 60 and report.rto_worker_s < 60

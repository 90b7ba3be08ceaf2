"""Crash test: kill -9 the consumer at random points while events flow; every event persisted exactly once."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.events import crash_harness


def test_two_kill_9s_during_20k_events_lose_and_duplicate_nothing(tmp_path: Path) -> None:
    report = crash_harness.run(tmp_path, events=20_000, kills=2, seed=4, rate=5_000, kill_window=(1.2, 2.5))
    print("\ncrash test:", report.line())
    assert report.ok, report.line()


@pytest.mark.slow
def test_five_kill_9s_during_1m_events_lose_and_duplicate_nothing(tmp_path: Path) -> None:
    report = crash_harness.run(tmp_path, events=1_000_000, kills=5, seed=11, rate=20_000, kill_window=(3.0, 15.0))
    print("\ncrash test:", report.line())
    assert report.ok, report.line()

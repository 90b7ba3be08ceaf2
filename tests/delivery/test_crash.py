"""kill -9 the `notify worker` while it delivers, restart it: nothing lost, duplicates below 0.01%."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pytest

from tests.delivery.crash_harness import run_crash_test


def _check(report_dict: dict[str, object], n: int) -> None:
    print(f"\ncrash test: {report_dict}")
    assert report_dict["lost"] == 0
    assert report_dict["delivered"] == n
    assert report_dict["store_statuses"] == {"sent": n}


def test_crash_small_5k_two_kills(tmp_path: Path) -> None:
    report = run_crash_test(tmp_path, n=5000, kills=2, seed=3, timeout_s=240)
    _check(asdict(report), 5000)
    assert report.duplicates <= 10  # a few in-flight sends per kill at most


@pytest.mark.slow
def test_crash_100k_five_kills(tmp_path: Path) -> None:
    report = run_crash_test(tmp_path, n=100_000, kills=5, seed=7, timeout_s=1200)
    _check(asdict(report), 100_000)
    assert report.duplicate_rate < 0.0001

"""The Dagster instance the embedded default runs (the repo's ``dagster.yaml``) forgets old sensor and
automation ticks: by Dagster's defaults only skipped ones went (after 7 days), and every tick that launched
a run, failed (each 30-60 s while the Store is down) or never finished was kept for good."""

from __future__ import annotations

from pathlib import Path

from dagster._core.definitions.run_request import InstigatorType
from dagster._core.scheduler.instigation import TickStatus

from tests.pipeline.instances import repo_instance


def test_the_instance_purges_every_kind_of_old_tick(tmp_path: Path) -> None:
    instance = repo_instance(tmp_path)
    try:
        for kind in (InstigatorType.SENSOR, InstigatorType.AUTO_MATERIALIZE, InstigatorType.SCHEDULE):
            days = instance.get_tick_retention_settings(kind)
            assert set(days) == set(TickStatus), kind
            assert all(0 < n <= 30 for n in days.values()), (kind, days)
    finally:
        instance.dispose()

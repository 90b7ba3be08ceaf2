"""The delivery stage in Dagster: one pass (fast-forwarded) and the delivery-execution check."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import dagster as dg

from notify_assets.delivery import delivery_execution, delivery_run
from notify_core.clock import ManualClock
from notify_core.delivery import read_outbox
from notify_core.delivery.synthetic import seed_due
from notify_core.store.sqlite import SqliteStore
from notify_resources.resources import NotifyResource
from tests.delivery.conftest import NOW


def test_delivery_run_fast_forwards_the_next_minutes_into_the_outbox_and_the_check_passes(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "store.sqlite", clock=ManualClock(NOW))
    soon = NOW + timedelta(minutes=10)  # due in 10 minutes of the run's clock
    seed_due(store, n=30, start=soon)
    store.close()
    notify_asset = dg.AssetSpec("notification_plan")
    result = dg.materialize([notify_asset, delivery_run, delivery_execution],
                            resources={"notify": NotifyResource(data_dir=str(tmp_path), clock_start=NOW.isoformat())},
                            selection=[delivery_run.key], run_config={"ops": {"delivery_run": {"config": {
                                "fast_forward_minutes": 15}}}})
    assert result.success
    [mat] = result.asset_materializations_for_node("delivery_run")
    assert mat.metadata["delivered"].value == 30 and mat.metadata["dead_lettered"].value == 0
    [check] = result.get_asset_check_evaluations()
    assert check.passed
    assert len(read_outbox(tmp_path / "outbox" / "notifications.jsonl")) == 30

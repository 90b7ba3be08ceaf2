"""Time zones: one set of accepted zones (timezones.known_zones) for the API, ingestion and the planner, and
a stored profile outside it is planned in UTC without failing anyone else's plan."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from notify_core.clock import ManualClock
from notify_core.scheduling.checks import plan_violations
from notify_core.scheduling.service import plan_and_store
from notify_core.scheduling.timezones import is_known_zone, known_zones
from notify_core.store.sqlite import SqliteStore
from tests.scheduling.conftest import STORE_DAY, STORE_NOW, campaigns, candidates, users

CAMPS = campaigns([(f"c{j}", 3, 0, None) for j in range(3)])


def test_known_zones_are_the_zones_polars_can_convert_to() -> None:
    zones = known_zones()
    assert {"Factory", "localtime", "posixrules"}.isdisjoint(zones)
    assert {"UTC", "Europe/London", "Australia/Lord_Howe"} <= zones
    stamp = pl.Series([datetime(2026, 1, 1, tzinfo=UTC)])
    for zone in zones:
        stamp.dt.convert_time_zone(zone)  # raises for a zone polars refuses
    assert not is_known_zone("Factory") and not is_known_zone("") and not is_known_zone(None)


@pytest.mark.parametrize("zone", ["Factory", "localtime", "Mars/Olympus_Mons", "utc", ""])
def test_a_stored_profile_with_an_unusable_zone_is_planned_in_utc_and_fails_nobody(tmp_path: Path,
                                                                                  zone: str) -> None:
    us = users([(f"u{k}", "Europe/Paris", 5, None, None) for k in range(3)] + [("odd", zone, 5, None, None)])
    cands = candidates([(u, f"c{j}", 0.9) for u in us["user_id"] for j in range(3)])
    store = SqliteStore(tmp_path / "s.sqlite", clock=ManualClock(STORE_NOW))
    try:
        run = plan_and_store(store, users=us, campaigns=CAMPS, candidates=cands, plan_day=STORE_DAY, now=None,
                             pipeline=False, writer_process=False)
    finally:
        store.close()
    assert run.stats.users_planned == 4
    assert run.stats.unknown_timezones == 1
    assert sum(run.violations.values()) == 0, run.violations


def test_the_plan_checks_read_an_unusable_zone_as_utc() -> None:
    """checks.plan_violations converts with polars; it maps zones the planner's way instead of raising."""
    send = datetime(STORE_DAY.year, STORE_DAY.month, STORE_DAY.day, 12, tzinfo=UTC)
    plan = pl.DataFrame({"user_id": ["odd"], "send_at": [send], "plan_day": [STORE_DAY.isoformat()]},
                        schema={"user_id": pl.String, "send_at": pl.Datetime("us", "UTC"), "plan_day": pl.String})
    us = users([("odd", "Factory", 5, 11, 13)])  # 12:00 UTC is inside quiet hours when read as UTC
    assert plan_violations(plan, us, capacity=10)["quiet_hours"] == 1

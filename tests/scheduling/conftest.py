"""Fixtures and frame builders for the scheduling tests (small, explicit inputs)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import polars as pl
import pytest

from notify_core.clock import ManualClock
from notify_core.scheduling.models import CAMPAIGNS, CANDIDATES, HISTORY, INTERACTIONS, USERS
from notify_core.store.sqlite import SqliteStore


def users(rows: Sequence[tuple[str, str, int | None, int | None, int | None]]) -> pl.DataFrame:
    """(user_id, timezone, daily_cap, quiet_start_hour, quiet_end_hour) rows."""
    return pl.DataFrame([dict(zip(USERS, r, strict=True)) for r in rows], schema=USERS)


def campaigns(rows: Sequence[tuple[str, int, int, int | None]]) -> pl.DataFrame:
    """(campaign_id, priority, cooldown_hours, daily_budget) rows."""
    return pl.DataFrame([dict(zip(CAMPAIGNS, r, strict=True)) for r in rows], schema=CAMPAIGNS)


def candidates(rows: Sequence[tuple[str, str, float]]) -> pl.DataFrame:
    return pl.DataFrame([dict(zip(CANDIDATES, r, strict=True)) for r in rows], schema=CANDIDATES)


def history(rows: Sequence[tuple[str, str, datetime, bool]]) -> pl.DataFrame:
    return pl.DataFrame([dict(zip(HISTORY, r, strict=True)) for r in rows], schema=HISTORY)


def interactions(rows: Sequence[tuple[str, datetime, str]]) -> pl.DataFrame:
    return pl.DataFrame([dict(zip(INTERACTIONS, r, strict=True)) for r in rows], schema=INTERACTIONS)


def local(ts: datetime, zone: str) -> datetime:
    return ts.astimezone(ZoneInfo(zone))


def at(day: date, hour: int, minute: int = 0, zone: str = "UTC") -> datetime:
    """A local wall-clock time as an aware UTC datetime."""
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=ZoneInfo(zone)).astimezone(UTC)


# The Store tests' own "now" and the day they plan: the day after, so every slot lies ahead. The Store
# judges TTLs by this clock, so the tests hold on any calendar date.
STORE_NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
STORE_DAY = (STORE_NOW + timedelta(days=1)).date()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    s = SqliteStore(tmp_path / "store.sqlite", clock=ManualClock(STORE_NOW))
    yield s
    s.close()


def deliver_due(store: SqliteStore, clock: ManualClock, *, since: datetime, until: datetime) -> None:
    """A real delivery worker at ``until`` catching up on everything due since ``since`` (a scripted channel
    that accepts every send), as the day's sends happen before a re-plan."""
    from notify_core.delivery import DeliveryWorker, WorkerOptions
    from tests.delivery.conftest import ScriptedChannel

    clock.set(until)
    minutes = int((until - since).total_seconds() // 60) + 1
    # every one of them sent, however late by this clock: they stand for the sends of the day so far
    worker = DeliveryWorker(store, ScriptedChannel(), public_base_url="http://t", clock=clock,
                            options=WorkerOptions(concurrency=2, lookback_minutes=minutes, prefetch_s=0.0,
                                                  heartbeat_s=0, lease_s=30, max_late_s=minutes * 60.0))
    try:
        worker.run_until_idle()
    finally:
        worker.close()

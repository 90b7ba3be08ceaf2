"""Re-planning "tomorrow" (by UTC) after it has begun east of UTC (Auckland: from 11:00 UTC the day before).
The automation re-plans today and tomorrow when embeddings change. ``effective_now`` once judged by the UTC
date and planned such a day whole: sends in its past, and a send the worker holds not counted."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import polars as pl

from notify_core.clock import ManualClock
from notify_core.lifecycle import CANCELLED, CLAIMED, PENDING, SENT
from notify_core.scheduling.service import effective_now, plan_and_store
from notify_core.scheduling.timezones import first_local_midnight
from notify_core.store import tables
from notify_core.store.port import Condition
from notify_core.store.sqlite import SqliteStore
from tests.scheduling.conftest import campaigns, candidates, users

TODAY = date(2026, 11, 23)
DAY = TODAY + timedelta(days=1)  # "tomorrow" by UTC
ZONE = "Pacific/Auckland"  # UTC+13 in November: local DAY starts at TODAY 11:00 UTC
USERS = users([("u1", ZONE, 5, 22, 8)])  # quiet 22:00-08:00 local
CAMPS = campaigns([(f"c{j}", 3, 0, None) for j in range(10)])
CANDS = candidates([("u1", f"c{j}", 0.9 - j * 0.05) for j in range(10)])


def _run(store: SqliteStore, clock_now: datetime, cands: pl.DataFrame = CANDS) -> None:
    # what service._plan does with the caller's clock
    plan_and_store(store, users=USERS, campaigns=CAMPS, candidates=cands, plan_day=DAY,
                   now=effective_now(DAY, now=clock_now), pipeline=False, writer_process=False)


def _ts(item: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(str(item["send_at"]).replace("Z", "+00:00"))


def _schedules(store: SqliteStore) -> list[dict[str, Any]]:
    return [i for i in store.table(tables.SCHEDULES).scan() if i.get("user_id") == "u1"]


def test_a_day_no_zone_has_begun_is_planned_whole_and_one_begun_anywhere_from_now() -> None:
    start = first_local_midnight(DAY)
    assert start == datetime(2026, 11, 23, 10, tzinfo=UTC)  # 00:00 at UTC+14 (Kiritimati)
    assert effective_now(DAY, now=start - timedelta(seconds=1)) is None
    assert effective_now(DAY, now=start) == start
    late = datetime(2026, 11, 24, 18, tzinfo=UTC)
    assert effective_now(DAY, now=late) == late and effective_now(TODAY, now=late) == late


def test_plan_of_tomorrow_made_after_it_began_in_the_users_zone_places_nothing_in_the_past(tmp_path: Path) -> None:
    now = datetime(2026, 11, 23, 21, 30, tzinfo=UTC)  # 10:30 on DAY in Auckland
    store = SqliteStore(tmp_path / "s.sqlite", clock=ManualClock(now))
    try:
        _run(store, now)
        planned = _schedules(store)
    finally:
        store.close()
    assert planned
    past = sorted(_ts(i).astimezone(ZoneInfo(ZONE)).strftime("%H:%M") for i in planned if _ts(i) < now)
    assert not past, f"planned before now (10:30 local): {past}"


def test_replan_of_tomorrow_while_a_send_is_in_flight_keeps_cap_and_gaps(tmp_path: Path) -> None:
    morning = datetime(2026, 11, 23, 6, 0, tzinfo=UTC)  # tomorrow's first plan (Auckland: still TODAY 19:00)
    store = SqliteStore(tmp_path / "s.sqlite", clock=ManualClock(morning))
    try:
        _run(store, morning)
        planned = sorted(_schedules(store), key=_ts)
        assert len(planned) == 5
        # the worker sent the first two (outcome and plans item flushed) and holds the third (claimed)
        for item in planned[:2]:
            store.table(tables.SCHEDULES).update(item["pk"], item["sk"], set={
                "status": SENT, "delivered_at": item["send_at"]}, condition=Condition.matches(status=PENDING))
            store.table(tables.PLANS).update("u1", f"{DAY.isoformat()}#{item['notification_id']}", set={
                "status": SENT, "sent_at": item["send_at"], "interacted": True})
        held = planned[2]
        store.table(tables.SCHEDULES).update(held["pk"], held["sk"], set={
            "status": CLAIMED, "claim_token": "t", "lease_until": _ts(held).timestamp() + 60},
            condition=Condition.matches(status=PENDING))
        now = _ts(held) + timedelta(minutes=1)  # a re-plan a minute later (new embeddings re-rank: c9 first)
        assert now.date() == TODAY  # still "today" in UTC: the automation re-plans tomorrow's partition
        _run(store, now, candidates([("u1", f"c{j}", 0.4 + j * 0.05) for j in range(10)]))
        live = sorted((i for i in _schedules(store) if i["status"] != CANCELLED), key=_ts)
    finally:
        store.close()
    shown = [(i["campaign_id"], i["send_at"], i["status"]) for i in live]
    assert len(live) <= 5, f"{len(live)} live notifications for u1's {DAY}: {shown}"
    gaps = [(_ts(b) - _ts(a)).total_seconds() / 60 for a, b in zip(live, live[1:], strict=False)]
    assert min(gaps) >= 60, f"notifications {min(gaps)} min apart: {shown}"

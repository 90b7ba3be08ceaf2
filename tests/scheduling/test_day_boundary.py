"""Cooldowns and the minimum gap hold across the plan-day boundary, whichever day is planned first.

The daily plan of tomorrow is made before today's evening notifications are sent, and a re-plan of today can
come after tomorrow was planned. The planner saw only what was already *sent* (its history), so a campaign
with a 36-hour cooldown planned for 22:xx today was planned again at 22:yy tomorrow, and a notification at
23:5x today could be followed by one at 00:0x tomorrow, under the 60-minute gap. Found by an audit
(session 38); these fail on the code before.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from notify_core.clock import ManualClock
from notify_core.lifecycle import CANCELLED
from notify_core.scheduling.models import PlanOptions
from notify_core.scheduling.service import plan_and_store
from notify_core.store import tables
from notify_core.store.sqlite import SqliteStore
from tests.scheduling.conftest import campaigns, candidates, deliver_due, history, users

TODAY = date(2026, 11, 24)
TOMORROW = TODAY + timedelta(days=1)
EVE_BEFORE = datetime(2026, 11, 23, 20, 0, tzinfo=UTC)
NOON = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
GAP = PlanOptions().min_gap_minutes
COOLDOWN_H = 36

# Awake 22:00-02:00 only (quiet 02:00-22:00 UTC): every day's sends sit on both sides of midnight.
USERS = users([(f"u{i}", "UTC", 3, 2, 22) for i in range(6)])
CAMPS = campaigns([("cool", 5, COOLDOWN_H, None), *((f"c{j}", 1, 0, None) for j in range(5))])
CANDS = candidates([(f"u{i}", "cool", 0.99) for i in range(6)]
                   + [(f"u{i}", f"c{j}", 0.6 - j * 0.05) for i in range(6) for j in range(5)])


def _plan(store: SqliteStore, day: date, now: datetime) -> None:
    plan_and_store(store, users=USERS, campaigns=CAMPS, candidates=CANDS, plan_day=day, now=now, pipeline=False,
                   writer_process=False)


def _live(store: SqliteStore) -> list[dict[str, Any]]:
    return sorted((i for i in store.table(tables.SCHEDULES).scan() if i["status"] != CANCELLED),
                  key=lambda i: (i["user_id"], i["send_at"]))


def _ts(item: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(str(item["send_at"]).replace("Z", "+00:00"))


def _assert_rules_hold(items: list[dict[str, Any]]) -> None:
    by_user: dict[str, list[dict[str, Any]]] = {}
    for item in items:
        by_user.setdefault(item["user_id"], []).append(item)
    assert {i["plan_day"] for i in items} == {TODAY.isoformat(), TOMORROW.isoformat()}
    for uid, mine in by_user.items():
        for a, b in zip(mine, mine[1:], strict=False):
            assert _ts(b) - _ts(a) >= timedelta(minutes=GAP), f"{uid}: {a['send_at']} then {b['send_at']}"
        cools = [_ts(i) for i in mine if i["campaign_id"] == "cool"]
        for a, b in zip(cools, cools[1:], strict=False):
            assert b - a >= timedelta(hours=COOLDOWN_H), f"{uid}: 'cool' at {a} and again at {b}"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(EVE_BEFORE)


@pytest.fixture
def store(tmp_path: Path, clock: ManualClock) -> SqliteStore:
    return SqliteStore(tmp_path / "s.sqlite", clock=clock)


def test_tomorrow_planned_before_tonights_sends_keeps_the_gap_and_the_cooldown(
        store: SqliteStore, clock: ManualClock) -> None:
    _plan(store, TODAY, EVE_BEFORE)
    deliver_due(store, clock, since=EVE_BEFORE, until=NOON)  # last night's sends go out; tonight's are ahead
    _plan(store, TOMORROW, NOON)
    _assert_rules_hold(_live(store))


def test_a_replan_of_today_after_tomorrow_was_planned_keeps_the_gap_and_the_cooldown(store: SqliteStore) -> None:
    _plan(store, TOMORROW, EVE_BEFORE)
    _plan(store, TODAY, NOON)
    _assert_rules_hold(_live(store))


def test_a_notification_the_other_day_kept_pending_does_not_count_as_ignored(store: SqliteStore) -> None:
    """Tonight's planned notifications are not sends the user ignored: tomorrow's cap is not cut for them."""
    _plan(store, TODAY, EVE_BEFORE)
    # Planned whole (no ``now``): tonight's notifications lie before the day it is planned from.
    run = plan_and_store(store, users=USERS, campaigns=CAMPS, candidates=CANDS, plan_day=TOMORROW,
                         pipeline=False, writer_process=False)
    assert run.stats.fatigued_users == 0


def test_a_send_after_the_day_still_holds_the_campaign_a_planned_one_with_no_cooldown_does_not() -> None:
    """A history row is a send: the campaign is placed only after it plus its cooldown, wherever it lies
    (the property test's invariant; a send dated after the plan day, a clock's skew, kept it out of the day).
    A later day's *planned* notification with no cooldown bounds nothing. Found by the timeshift run's
    property test when the day boundary first treated both alike."""
    from notify_core.scheduling.planner import plan_users

    after = datetime(2026, 11, 25, 13, 0, tzinfo=UTC)
    one = users([("u0", "UTC", 3, None, None)])
    camps = campaigns([("free", 5, 0, None)])
    cands = candidates([("u0", "free", 0.99)])
    row = history([("u0", "free", after, False)])
    as_send = plan_users(cands, one, camps, plan_day=TODAY, history=row)
    as_planned = plan_users(cands, one, camps, plan_day=TODAY, scheduled=row)
    assert as_send.frame.is_empty(), as_send.frame
    assert as_planned.frame["campaign_id"].to_list() == ["free"]

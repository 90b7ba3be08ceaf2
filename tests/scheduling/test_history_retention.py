"""The planner's history (sent ``plans`` items) lives as long as it looks back (models.HISTORY_DAYS). A sent
plan item once kept the schedule item's ttl (send time + store.TTL_DAYS = 3 days): fatigue, which counts
ignored notifications over 7 days, saw 3 of them, and a week-long cooldown was forgotten after 3."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from notify_core.clock import ManualClock
from notify_core.delivery.outcomes import projections
from notify_core.lifecycle import CANCELLED, SENT
from notify_core.scheduling.ids import notification_id
from notify_core.scheduling.models import HISTORY_DAYS, SENT_PLAN_TTL_DAYS, FatigueOptions
from notify_core.scheduling.service import plan_and_store
from notify_core.scheduling.store import TTL_DAYS
from notify_core.store import tables
from notify_core.store.sqlite import SqliteStore
from tests.scheduling.conftest import campaigns, candidates, deliver_due, users

D = date(2026, 11, 24)
US = users([("u1", "UTC", 5, None, None)])
ISO = "%Y-%m-%dT%H:%M:%SZ"


def _ts(item: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(str(item["send_at"]).replace("Z", "+00:00"))


def test_the_history_window_has_one_owner() -> None:
    assert FatigueOptions().lookback_hours == HISTORY_DAYS * 24
    assert SENT_PLAN_TTL_DAYS > HISTORY_DAYS > TTL_DAYS


def _sent_then_planned_again(tmp_path: Path, *, cooldown_hours: int, days_later: int) -> tuple[str, list[str]]:
    """One campaign with ``cooldown_hours`` planned for D and sent by a real worker, then D + ``days_later``
    planned the day before: its send time and what was planned for it again."""
    clock = ManualClock(datetime(2026, 11, 23, 12, 0, tzinfo=UTC))
    store = SqliteStore(tmp_path / "s.sqlite", clock=clock)
    camps = campaigns([("cool", 5, cooldown_hours, None)])
    cands = candidates([("u1", "cool", 0.9)])
    try:
        plan_and_store(store, users=US, campaigns=camps, candidates=cands, plan_day=D, now=None,
                       pipeline=False, writer_process=False)
        (item,) = list(store.table(tables.SCHEDULES).scan())
        deliver_due(store, clock, since=_ts(item), until=_ts(item) + timedelta(seconds=5))
        assert store.table(tables.SCHEDULES).get(item["pk"], item["sk"])["status"] == SENT
        later = D + timedelta(days=days_later)
        clock.set(datetime.combine(later, datetime.min.time(), tzinfo=UTC) - timedelta(hours=12))  # the day before
        plan_and_store(store, users=US, campaigns=camps, candidates=cands, plan_day=later, now=None,
                       pipeline=False, writer_process=False)
        again = [str(i["send_at"]) for i in store.table(tables.SCHEDULES).scan()
                 if i["plan_day"] == later.isoformat() and i["status"] != CANCELLED]
    finally:
        store.close()
    return str(item["send_at"]), again


def test_a_week_long_cooldown_is_honoured_four_days_after_the_worker_sent_it(tmp_path: Path) -> None:
    sent, again = _sent_then_planned_again(tmp_path, cooldown_hours=7 * 24, days_later=4)  # "once a week"
    assert not again, f"'weekly' sent {sent} and planned again {again}"


@pytest.mark.parametrize(("days_later", "planned_again"), [(12, False), (21, True)])
def test_a_cooldown_longer_than_the_history_is_honoured_from_the_users_sends(
        tmp_path: Path, days_later: int, planned_again: bool) -> None:
    """A 20-day cooldown: its send is older than the planner's 7 days of plans by then, so it is judged by the
    user's ``sends`` (kept as long as the longest cooldown allowed). It was forgotten after 7 days."""
    sent, again = _sent_then_planned_again(tmp_path, cooldown_hours=20 * 24, days_later=days_later)
    assert bool(again) is planned_again, f"'monthly' sent {sent}, {days_later} days later: {again}"


def test_fatigue_sees_the_whole_window_of_sends_the_worker_recorded(tmp_path: Path) -> None:
    now = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    store = SqliteStore(tmp_path / "s.sqlite", clock=ManualClock(now))
    many = campaigns([(f"c{j}", 3, 0, None) for j in range(6)])
    try:
        for back in range(1, 7):  # two ignored notifications on each of the last 6 days: 12 ignored in a row
            day = (now - timedelta(days=back)).date()
            for k, hour in enumerate((9, 15)):
                sent = datetime.combine(day, datetime.min.time(), tzinfo=UTC) + timedelta(hours=hour)
                nid = notification_id("u1", f"c{k}", day.isoformat(), hour)
                final = {"pk": "x", "sk": f"u1#{nid}", "notification_id": nid, "user_id": "u1",
                         "campaign_id": f"c{k}", "plan_day": day.isoformat(), "slot": hour,
                         "send_at": sent.strftime(ISO), "delivered_at": sent.strftime(ISO), "status": SENT,
                         "ttl": int(sent.timestamp()) + TTL_DAYS * 86400}  # the schedule item's own ttl
                (plan,) = [row for table, row in projections(final, "delivered", now=sent.timestamp())
                           if table == tables.PLANS]
                assert int(plan["ttl"]) >= int(sent.timestamp()) + HISTORY_DAYS * 86400
                store.table(tables.PLANS).put(plan)
        run = plan_and_store(store, users=US, campaigns=many,
                             candidates=candidates([("u1", f"c{j}", 0.9) for j in range(6)]), plan_day=D, now=None,
                             pipeline=False, writer_process=False)
    finally:
        store.close()
    # 12 ignored -> cap lowered by min(12 // 2, 4) = 4 -> 1 notification
    assert run.stats.notifications == 1, f"{run.stats.notifications} planned for a user who ignored 12 in a row"

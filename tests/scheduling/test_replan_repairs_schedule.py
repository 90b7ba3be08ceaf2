"""A re-plan finishes what a killed run began: an old schedule item that is cancelled (a run killed inside a
move) or absent (a crash between the plans and the schedules write) is still the planner's, so the re-plan
restores the notification's schedule item instead of counting a conflict forever; a claimed one is the
delivery worker's and is left alone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl

from notify_core.lifecycle import CANCELLED, CLAIMED, PENDING
from notify_core.scheduling.models import PLAN
from notify_core.scheduling.store import WriteSummary, _schedule_key, day_items, due, write_plans
from notify_core.store import tables
from notify_core.store.port import Condition, Item
from notify_core.store.sqlite import SqliteStore
from tests.scheduling.conftest import STORE_DAY

DAY = STORE_DAY.isoformat()
T1 = datetime(STORE_DAY.year, STORE_DAY.month, STORE_DAY.day, 9, 0, tzinfo=UTC)
T2 = T1 + timedelta(minutes=7)


def _plan(send_at: datetime, expected_value: float = 0.5) -> pl.DataFrame:
    """User a's day: one notification, n1, at ``send_at``."""
    return pl.DataFrame([{"user_id": "a", "campaign_id": "c0", "notification_id": "n1", "plan_day": DAY, "slot": 0,
                          "send_at": send_at, "expected_value": expected_value, "relevance": 0.5, "affinity": 0.5}],
                        schema=PLAN)


def _replan(store: SqliteStore, plan: pl.DataFrame) -> WriteSummary:
    return write_plans(store, plan, user_ids=["a"], plan_day=DAY)


def _stored(store: SqliteStore) -> Item:
    [item] = day_items(store, ["a"], DAY)["a"]
    return item


def _schedules(store: SqliteStore) -> list[Item]:
    return list(store.table(tables.SCHEDULES).scan())


def test_a_move_killed_after_cancelling_the_old_item_is_finished_by_the_next_run(store: SqliteStore) -> None:
    _replan(store, _plan(T1))
    # A re-plan moves n1 from 09:00 to 09:07 and is killed after its first write: the old schedule item
    # is cancelled, the plans item still says 09:00 and nothing is scheduled at 09:07.
    store.table(tables.SCHEDULES).update(*_schedule_key(_stored(store)), set={"status": CANCELLED},
                                         condition=Condition.matches(status=PENDING))
    assert due(store, T1) == [] and due(store, T2) == []

    rerun = _replan(store, _plan(T2))
    assert rerun.moved == 1 and rerun.conflicts == 0
    [live] = [i for i in _schedules(store) if i["status"] == PENDING]
    assert live["notification_id"] == "n1" and live["send_at"] == T2.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert [i["notification_id"] for i in due(store, T2)] == ["n1"] and due(store, T1) == []
    assert _stored(store)["send_at"] == live["send_at"] and _stored(store)["status"] == PENDING

    again = _replan(store, _plan(T2))  # the same inputs once more: nothing to write
    assert again.written == 0 and again.conflicts == 0 and again.unchanged == 1
    assert len([i for i in _schedules(store) if i["status"] == PENDING]) == 1


def test_a_lost_schedule_item_is_recreated_when_the_replan_changes_the_notification(store: SqliteStore) -> None:
    _replan(store, _plan(T1, 0.5))
    store.table(tables.SCHEDULES).delete(*_schedule_key(_stored(store)))  # the crash between the two writes
    assert _schedules(store) == []

    rerun = _replan(store, _plan(T1, 0.6))  # same minute, another expected value: the "updated" branch
    assert rerun.updated == 1 and rerun.conflicts == 0
    [live] = due(store, T1)
    assert live["notification_id"] == "n1" and live["expected_value"] == 0.6
    assert _stored(store)["expected_value"] == 0.6
    assert _replan(store, _plan(T1, 0.6)).written == 0


def test_a_schedule_item_claimed_by_a_worker_is_left_alone_and_counted_as_a_conflict(store: SqliteStore) -> None:
    _replan(store, _plan(T1))
    key = _schedule_key(_stored(store))
    # The delivery worker claims n1 (its plans item still says pending); then a re-plan would move it.
    store.table(tables.SCHEDULES).update(*key, set={"status": CLAIMED, "claim_token": "w1"},
                                         condition=Condition.matches(status=PENDING))

    rerun = _replan(store, _plan(T2))
    assert rerun.conflicts == 1 and rerun.written == 0
    [only] = _schedules(store)
    assert (only["pk"], only["sk"]) == key and only["status"] == CLAIMED and only["claim_token"] == "w1"
    assert due(store, T2) == [] and _stored(store)["send_at"] == T1.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_a_cancel_killed_after_its_schedules_write_is_finished_by_the_next_run(store: SqliteStore) -> None:
    _replan(store, _plan(T1))
    store.table(tables.SCHEDULES).update(*_schedule_key(_stored(store)), set={"status": CANCELLED})  # then killed
    rerun = write_plans(store, pl.DataFrame(schema=PLAN), user_ids=["a"], plan_day=DAY)  # n1 dropped
    assert rerun.cancelled == 1 and rerun.conflicts == 0 and _stored(store)["status"] == CANCELLED
    assert write_plans(store, pl.DataFrame(schema=PLAN), user_ids=["a"], plan_day=DAY).written == 0


def test_a_killed_move_then_a_plan_back_at_the_old_minute_revives_the_old_schedule_item(store: SqliteStore) -> None:
    _replan(store, _plan(T1))
    store.table(tables.SCHEDULES).update(*_schedule_key(_stored(store)), set={"status": CANCELLED})  # then killed
    rerun = _replan(store, _plan(T1))  # the plans item already says 09:00: "unchanged", its schedule item is not
    assert rerun.repaired == 1 and rerun.conflicts == 0
    assert [i["notification_id"] for i in due(store, T1)] == ["n1"]
    assert _replan(store, _plan(T1)).written == 0

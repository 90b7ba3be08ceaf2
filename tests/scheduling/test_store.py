"""Plans in the Store: due-minute queries, idempotent re-plans, cancellation that never touches claimed items."""

from __future__ import annotations

import polars as pl
import pytest

from notify_core.errors import ConditionFailedError
from notify_core.scheduling import plan_users
from notify_core.scheduling.store import due, load_state, write_plans
from notify_core.store import tables
from notify_core.store.port import Condition
from notify_core.store.sqlite import SqliteStore
from tests.scheduling.conftest import STORE_DAY, at, campaigns, candidates, users

DAY = STORE_DAY
USERS = users([("a", "Europe/London", 3, 22, 8), ("b", "America/New_York", 2, 23, 7)])
CAMPS = campaigns([(f"c{j}", 3, 24, None) for j in range(5)])


def _plan(rel: dict[str, float]) -> pl.DataFrame:
    cands = candidates([(u, c, r) for u in ("a", "b") for c, r in rel.items()])
    return plan_users(cands, USERS, CAMPS, plan_day=DAY).frame


REL = {"c0": 0.9, "c1": 0.8, "c2": 0.7, "c3": 0.2, "c4": 0.1}


def test_round_trip_due_query_and_idempotent_replan(store: SqliteStore) -> None:
    plan = _plan(REL)
    first = write_plans(store, plan, user_ids=["a", "b"], plan_day=DAY.isoformat())
    assert first.inserted == plan.height == 5
    again = write_plans(store, plan, user_ids=["a", "b"], plan_day=DAY.isoformat())
    assert again.written == 0 and again.unchanged == 5  # same inputs: nothing written
    for row in plan.iter_rows(named=True):
        got = due(store, row["send_at"])
        assert [i["notification_id"] for i in got if i["user_id"] == row["user_id"]] == [row["notification_id"]]
        item = got[0]
        assert item["status"] == "pending" and item["send_at"].endswith(":00Z") and item["ttl"] > 0
    state = load_state(store, ["a", "b"], plan_day=DAY)
    assert sum(len(v) for v in state.day_items.values()) == 5 and state.history.is_empty()


def test_changed_plan_cancels_superseded_pending_and_never_touches_claimed(store: SqliteStore) -> None:
    plan = _plan(REL)
    write_plans(store, plan, user_ids=["a", "b"], plan_day=DAY.isoformat())
    # delivery claims a's best notification
    best = plan.filter(pl.col("user_id") == "a").sort("expected_value", descending=True).row(0, named=True)
    schedules = store.table(tables.SCHEDULES)
    claimed_key = (tables.schedule_pk(tables.due_minute(best["send_at"]), _shard(store, best)),
                   tables.schedule_sk("a", best["notification_id"]))
    schedules.update(*claimed_key, set={"status": "claimed"}, condition=Condition.matches(status="pending"))
    store.table(tables.PLANS).update("a", tables.plan_sk(DAY.isoformat(), best["notification_id"]),
                                     set={"status": "claimed"})
    # the recommender changes its mind: c0 and c1 are out, c3/c4 in
    state = load_state(store, ["a", "b"], plan_day=DAY)
    # the claimed one holds the cap, gaps and cooldowns, as scheduled (not a send fatigue may count yet)
    assert state.history.height == 0 and state.scheduled.height == 1
    cands = candidates([(u, c, r) for u in ("a", "b") for c, r in {"c2": 0.7, "c3": 0.6, "c4": 0.5}.items()])
    new = plan_users(cands, USERS, CAMPS, plan_day=DAY, history=state.history, scheduled=state.scheduled).frame
    summary = write_plans(store, new, user_ids=["a", "b"], plan_day=DAY.isoformat(), existing=state.day_items)
    assert summary.kept_delivered == 1 and summary.cancelled >= 2 and summary.conflicts == 0
    assert schedules.get(*claimed_key)["status"] == "claimed"  # never touched
    items = [i for v in load_state(store, ["a", "b"], plan_day=DAY).day_items.values() for i in v]
    pending = [i for i in items if i["status"] == "pending"]
    # a: cap 3, one already claimed -> at most 2 pending; never the claimed campaign again
    assert len([i for i in pending if i["user_id"] == "a"]) <= 2
    assert best["campaign_id"] not in {i["campaign_id"] for i in pending if i["user_id"] == "a"}
    # cancelled ones are cancelled in both tables, so the delivery worker skips them
    for item in items:
        if item["status"] == "cancelled":
            sched = schedules.get(tables.schedule_pk(item["due_minute"], item["shard"]),
                                  tables.schedule_sk(item["user_id"], item["notification_id"]))
            assert sched is not None and sched["status"] == "cancelled"
    # re-running the same re-plan writes nothing
    state2 = load_state(store, ["a", "b"], plan_day=DAY)
    assert write_plans(store, new, user_ids=["a", "b"], plan_day=DAY.isoformat(),
                       existing=state2.day_items).written == 0
    # going back to the first plan revives the cancelled ones, still never the claimed one
    back = write_plans(store, plan, user_ids=["a", "b"], plan_day=DAY.isoformat())
    assert back.revived >= 1 and schedules.get(*claimed_key)["status"] == "claimed"


def test_cancel_loses_to_a_concurrent_claim(store: SqliteStore) -> None:
    plan = _plan(REL)
    write_plans(store, plan, user_ids=["a", "b"], plan_day=DAY.isoformat())
    state = load_state(store, ["a", "b"], plan_day=DAY)  # read before delivery claims
    for item in due(store, plan.row(0, named=True)["send_at"]):
        store.table(tables.SCHEDULES).update(item["pk"], item["sk"], set={"status": "claimed"},
                                             condition=Condition.matches(status="pending"))
    summary = write_plans(store, plan.clear(), user_ids=["a", "b"], plan_day=DAY.isoformat(),
                          existing=state.day_items)
    assert summary.conflicts == 1 and summary.cancelled == plan.height - 1
    with pytest.raises(ConditionFailedError):  # and the worker's claim stays exclusive
        item = due(store, plan.row(0, named=True)["send_at"], status=None)[0]
        store.table(tables.SCHEDULES).update(item["pk"], item["sk"], set={"status": "claimed"},
                                             condition=Condition.matches(status="pending"))


def test_a_lost_schedule_item_is_repaired(store: SqliteStore) -> None:
    plan = _plan(REL)
    write_plans(store, plan, user_ids=["a", "b"], plan_day=DAY.isoformat())
    item = due(store, plan.row(0, named=True)["send_at"])[0]
    store.table(tables.SCHEDULES).delete(item["pk"], item["sk"])  # a crash between the two writes
    summary = write_plans(store, plan, user_ids=["a", "b"], plan_day=DAY.isoformat())
    assert summary.repaired == 1 and len(due(store, plan.row(0, named=True)["send_at"])) == 1


def _shard(store: SqliteStore, row: dict) -> int:
    from notify_core.scheduling.ids import shard_of

    return shard_of(row["user_id"])


def test_due_minute_spreads_over_shards() -> None:
    from notify_core.scheduling.ids import shard_of

    assert len({shard_of(f"user-{i}") for i in range(200)}) == 16
    assert tables.schedule_pk(tables.due_minute(at(DAY, 10, 5)), 3) == f"{DAY.isoformat()}T10:05#03"

"""The worker checks the user's preferences at send time: an opt-out stops notifications already planned.

Items are seeded as the planner writes them (pending, minute-aligned per user), the preferences change
through :func:`notify_core.preferences.put_preferences` (what ``PUT /v1/users/{id}/preferences`` calls)
between two passes, and the next pass, a minute later, finishes them as ``suppressed`` without a send.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

from notify_core.delivery import DeliveryWorker, ManualClock, WorkerOptions
from notify_core.delivery.synthetic import seed_due
from notify_core.history import user_history
from notify_core.preferences import Preferences, get_preferences, put_preferences
from notify_core.store import tables
from notify_core.store.sqlite import SqliteStore
from tests.delivery.conftest import ScriptedChannel, minute_start

OPTS = WorkerOptions(concurrency=4, lookback_minutes=3, prefetch_s=0.0)


def _statuses(store: SqliteStore) -> Counter[str]:
    return Counter(str(i["status"]) for i in store.table(tables.SCHEDULES).scan())


def test_an_opt_out_stops_a_pending_send_within_a_minute(store: SqliteStore, clock: ManualClock) -> None:
    start = minute_start(clock.now())
    # 8 users: 4 due now, 4 due in one minute; campaigns c000..c003, c001 is in "toys"
    now_items = seed_due(store, n=4, start=start, campaigns=4, user_prefix="a", with_plans=True)
    later = seed_due(store, n=4, start=start + timedelta(minutes=1), campaigns=4, user_prefix="b", with_plans=True)
    store.table(tables.CAMPAIGNS).update("c001", tables.CAMPAIGN_SK, set={"category": "toys"})
    channel = ScriptedChannel()
    worker = DeliveryWorker(store, channel, public_base_url="http://t", clock=clock, options=OPTS)
    assert worker.run_until_idle().delivered == 4

    now = datetime.fromtimestamp(clock.now(), UTC)
    everything, toys = later[0]["user_id"], later[1]["user_id"]  # later[1] is a c001 (toys) notification
    assert later[1]["campaign_id"] == "c001"
    put_preferences(store, everything, get_preferences(store, everything).model_copy(update={"unsubscribed": True}),
                    now=now)
    put_preferences(store, toys, Preferences(opted_out_categories=["toys"]), now=now)
    clock.advance(60)  # the minute the later items are due
    summary = worker.run_until_idle()
    worker.close()

    assert summary.delivered == 2 and summary.suppressed == 2
    sent_ids = {c[0] for c in channel.calls}
    assert later[0]["notification_id"] not in sent_ids and later[1]["notification_id"] not in sent_ids
    assert _statuses(store) == {"sent": 6, "suppressed": 2}
    reasons = {i["user_id"]: i.get("suppressed_reason") for i in store.table(tables.SCHEDULES).scan()
               if i["status"] == "suppressed"}
    assert reasons == {everything: "unsubscribed", toys: "category_opted_out"}
    row = store.table(tables.DELIVERIES).get(later[0]["notification_id"], "attempt#1")
    assert row["outcome"] == "suppressed" and row["detail"] == "unsubscribed"
    day = datetime.fromtimestamp(clock.now(), UTC).date().isoformat()
    assert store.table(tables.CAMPAIGN_STATS).get("c001", day)["suppressed"] == 1
    # the user's history says so, and the plan was never counted as sent
    entry = user_history(store, toys).items[0]
    assert entry.status == "suppressed" and entry.detail == "category_opted_out"
    assert len(now_items) == 4 and store.table(tables.SENDS).query(toys) == []


def test_no_channels_and_a_missing_profile(store: SqliteStore, clock: ManualClock) -> None:
    items = seed_due(store, n=3, start=minute_start(clock.now()), campaigns=3)
    put_preferences(store, items[0]["user_id"], Preferences(channels=[]), now=datetime.fromtimestamp(clock.now(), UTC))
    store.table(tables.USERS).delete(items[1]["user_id"], tables.PROFILE_SK)  # no profile: the plan decided
    worker = DeliveryWorker(store, ScriptedChannel(), public_base_url="http://t", clock=clock, options=OPTS)
    summary = worker.run_until_idle()
    worker.close()
    assert summary.suppressed == 1 and summary.delivered == 2


def test_a_crash_before_the_suppressed_rows_are_written_is_repaired_at_minute_close(
        store: SqliteStore, clock: ManualClock) -> None:
    items = seed_due(store, n=5, start=minute_start(clock.now()) - timedelta(minutes=2), campaigns=5)
    for item in items:
        store.table(tables.USERS).update(item["user_id"], tables.PROFILE_SK, set={"unsubscribed": True})
    worker = DeliveryWorker(store, ScriptedChannel(), public_base_url="http://t", clock=clock, options=OPTS)
    worker.flush = lambda: None  # type: ignore[method-assign]  # "crash": derived rows never written
    worker.run_pass()
    assert _statuses(store) == {"suppressed": 5}
    assert store.table(tables.DELIVERIES).get(items[0]["notification_id"], "attempt#1") is None
    clock.advance(OPTS.lease_s)  # the crashed worker's rows may still be queued until its lease is over
    fresh = DeliveryWorker(store, ScriptedChannel(), public_base_url="http://t", clock=clock, options=OPTS)
    fresh.run_until_idle()
    fresh.close()
    assert fresh.totals.repaired == 5
    assert store.table(tables.DELIVERIES).get(items[0]["notification_id"], "attempt#1")["outcome"] == "suppressed"


def test_a_user_whose_erasure_is_under_way_gets_nothing_more(store: SqliteStore, clock: ManualClock) -> None:
    """DELETE /v1/users/{id} past its budget answers 202 and leaves the rest to the sweep, which at scale may
    come an hour later: the user's schedule items are still there. The running worker reads the erasure queue
    (at most a second old) and suppresses them as ``erased``, profile or not; the others are sent."""
    import time

    from notify_core.erasure import erase_user

    start = minute_start(clock.now())
    seed_due(store, n=2, start=start, campaigns=2, user_prefix="a", with_plans=True)
    later = seed_due(store, n=3, start=start + timedelta(minutes=1), campaigns=3, user_prefix="b", with_plans=True)
    channel = ScriptedChannel()
    worker = DeliveryWorker(store, channel, public_base_url="http://t", clock=clock, options=OPTS)
    assert worker.run_until_idle().delivered == 2  # the worker has read the (empty) queue already
    gone, profileless = later[0]["user_id"], later[1]["user_id"]
    assert erase_user(gone, store=store, clock=clock, deadline=time.monotonic()).pending  # nothing erased yet
    assert erase_user(profileless, store=store, clock=clock, deadline=time.monotonic()).pending
    store.table(tables.USERS).delete(profileless, tables.PROFILE_SK)  # as a half-done erasure leaves it
    time.sleep(1.05)  # the queue the worker holds is at most a second old
    clock.advance(60)
    summary = worker.run_until_idle()
    worker.close()
    assert summary.delivered == 1 and summary.suppressed == 2
    assert {c[0] for c in channel.calls} & {later[0]["notification_id"], later[1]["notification_id"]} == set()
    reasons = {i["user_id"]: i.get("suppressed_reason") for i in store.table(tables.SCHEDULES).scan()
               if i["status"] == "suppressed"}
    assert reasons == {gone: "erased", profileless: "erased"}

"""Quiet hours hold at send time, on the user's own clock, whenever the plan was made.

The planner keeps a plan out of the quiet hours a user has when it plans. Before this check the worker did
not look again: quiet hours set through ``PUT /v1/users/{id}/preferences`` after the plan (or a time zone
moved), and a send an outage or a retry pushed into the night, went out anyway. Items are seeded as the
planner writes them, the preferences change through :func:`notify_core.preferences.put_preferences` (what
the route calls), and the worker runs at the test clock's 10:05 UTC.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from notify_core.delivery import DeliveryWorker, ManualClock, WorkerOptions
from notify_core.delivery.synthetic import seed_due
from notify_core.history import user_history
from notify_core.preferences import Preferences, in_quiet_hours, put_preferences, suppression_reason
from notify_core.scheduling.planner import _quiet_mask
from notify_core.store import tables
from notify_core.store.sqlite import SqliteStore
from tests.delivery.conftest import NOW, ScriptedChannel, minute_start

OPTS = WorkerOptions(concurrency=4, lookback_minutes=10, prefetch_s=0.0)


def _outcomes(store: SqliteStore) -> dict[str, tuple[str, str | None]]:
    return {str(i["user_id"]): (str(i["status"]), i.get("suppressed_reason"))
            for i in store.table(tables.SCHEDULES).scan()}


def test_quiet_hours_set_after_the_plan_stop_the_send_in_the_users_zone(
        store: SqliteStore, clock: ManualClock) -> None:
    assert NOW.hour == 10  # 10:05 UTC: 19:05 in Tokyo, 05:05 in New York
    items = seed_due(store, n=5, start=minute_start(clock.now()), campaigns=5, with_plans=True)
    users = [str(i["user_id"]) for i in items]
    now = datetime.fromtimestamp(clock.now(), UTC)
    wanted = {
        users[0]: Preferences(quiet_start_hour=9, quiet_end_hour=11),  # 10:05 UTC is quiet
        users[1]: Preferences(quiet_start_hour=9, quiet_end_hour=11, timezone="Asia/Tokyo"),  # 19:05: not quiet
        users[2]: Preferences(quiet_start_hour=18, quiet_end_hour=20, timezone="Asia/Tokyo"),  # 19:05: quiet
        users[3]: Preferences(quiet_start_hour=22, quiet_end_hour=7, timezone="America/New_York"),  # 05:05, wraps
        users[4]: Preferences(),  # no quiet hours
    }
    for user, prefs in wanted.items():
        put_preferences(store, user, prefs, now=now)

    channel = ScriptedChannel()
    worker = DeliveryWorker(store, channel, public_base_url="http://t", clock=clock, options=OPTS)
    summary = worker.run_until_idle()
    worker.close()

    assert summary.delivered == 2 and summary.suppressed == 3
    assert _outcomes(store) == {users[0]: ("suppressed", "quiet_hours"), users[1]: ("sent", None),
                                users[2]: ("suppressed", "quiet_hours"), users[3]: ("suppressed", "quiet_hours"),
                                users[4]: ("sent", None)}
    assert {c[0] for c in channel.calls} == {items[1]["notification_id"], items[4]["notification_id"]}
    row = store.table(tables.DELIVERIES).get(items[2]["notification_id"], "attempt#1")
    assert row["outcome"] == "suppressed" and row["detail"] == "quiet_hours"
    entry = user_history(store, users[3]).items[0]
    assert entry.status == "suppressed" and entry.detail == "quiet_hours"
    assert store.table(tables.SENDS).query(users[0]) == []  # never counted as sent (cooldowns, caps)


def test_a_send_made_late_by_an_outage_does_not_go_out_in_the_quiet_hour(
        store: SqliteStore, clock: ManualClock) -> None:
    # Planned for 09:58 UTC, the last minute before the users' quiet hour (10-11); the worker was down
    # and comes back at 10:05. The user without quiet hours still gets theirs, late.
    items = seed_due(store, n=2, start=minute_start(clock.now()) - timedelta(minutes=7), campaigns=2)
    quiet, free = str(items[0]["user_id"]), str(items[1]["user_id"])
    store.table(tables.USERS).update(quiet, tables.PROFILE_SK, set={"quiet_start_hour": 10, "quiet_end_hour": 11})
    worker = DeliveryWorker(store, ScriptedChannel(), public_base_url="http://t", clock=clock, options=OPTS)
    worker.run_until_idle()
    worker.close()
    assert _outcomes(store) == {quiet: ("suppressed", "quiet_hours"), free: ("sent", None)}


def test_a_planned_send_at_the_end_of_quiet_hours_goes_out(store: SqliteStore, clock: ManualClock) -> None:
    # Quiet 22-10: 10:05 is the first free hour (end exclusive), as the planner plans it.
    items = seed_due(store, n=1, start=minute_start(clock.now()), campaigns=1)
    user = str(items[0]["user_id"])
    put_preferences(store, user, Preferences(quiet_start_hour=22, quiet_end_hour=10),
                    now=datetime.fromtimestamp(clock.now(), UTC))
    worker = DeliveryWorker(store, ScriptedChannel(), public_base_url="http://t", clock=clock, options=OPTS)
    worker.run_until_idle()
    worker.close()
    assert Counter(s for s, _ in _outcomes(store).values()) == {"sent": 1}


def test_the_send_time_rule_is_the_planners_on_every_hour_and_pair() -> None:
    hours = np.arange(24, dtype=np.int8)
    day = datetime(2026, 1, 5, tzinfo=UTC)
    for start in [*range(24), None]:
        for end in [*range(24), None]:
            qs = np.array([-1 if start is None else start], dtype=np.int32)
            qe = np.array([-1 if end is None else end], dtype=np.int32)
            planner = _quiet_mask(hours[None, :], qs, qe)[0]
            user = {"quiet_start_hour": start, "quiet_end_hour": end, "timezone": "UTC"}
            worker = [in_quiet_hours(user, (day + timedelta(hours=h, minutes=30)).timestamp()) for h in range(24)]
            assert worker == planner.tolist(), (start, end)


@pytest.mark.parametrize(("profile", "quiet"), [
    ({"quiet_start_hour": 10, "quiet_end_hour": 11, "timezone": "Not/AZone"}, True),  # unknown zone: UTC
    ({"quiet_start_hour": 10, "quiet_end_hour": 11, "timezone": None}, True),
    ({"quiet_start_hour": 10, "quiet_end_hour": 11, "timezone": ["Asia/Tokyo"]}, True),  # not a name: UTC
    ({"quiet_start_hour": 10, "quiet_end_hour": None}, False),  # half a pair: none, as the planner reads it
    # not hours (the API and ingestion refuse them; a profile written otherwise must not fail the send)
    ({"quiet_start_hour": True, "quiet_end_hour": 11}, False),
    ({"quiet_start_hour": 10, "quiet_end_hour": 24}, False),
    ({"quiet_start_hour": "10", "quiet_end_hour": "11"}, False),
])
def test_odd_profiles_do_not_break_the_send_time_check(profile: dict[str, object], quiet: bool) -> None:
    at = NOW.timestamp()
    assert in_quiet_hours(profile, at) is quiet
    assert suppression_reason(profile, None, at=at) == ("quiet_hours" if quiet else None)
    assert suppression_reason(profile, None) is None  # without a send time: not checked (the preview's default)

"""The feedback loop after a send: opens and clicks count in the row their delivery counted in, once. Found by
an audit of the tracking endpoints and campaign counters (each test fails on the code before its fix)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from notify_core.clock import ManualClock
from notify_core.delivery import DeliveryWorker, WorkerOptions
from notify_core.delivery.feedback import campaign_stats
from notify_core.delivery.synthetic import seed_due
from notify_core.delivery.tracking import sign_token, track
from notify_core.errors import CountsNotAddedError
from notify_core.security.keyring import ephemeral_keyring
from notify_core.store.port import Item
from notify_core.store.sqlite import SqliteStore
from notify_core.stream.local_log import LocalLog
from tests.delivery.conftest import ScriptedChannel

LATE_EVENING = datetime(2026, 11, 24, 23, 59, tzinfo=UTC)
OPTS = WorkerOptions(concurrency=1, lookback_minutes=5, prefetch_s=0.0, heartbeat_s=0, lease_s=30)


@pytest.fixture
def log(tmp_path: Path) -> Iterator[LocalLog]:
    stream = LocalLog(tmp_path / "log.sqlite", poll_interval=0.002)
    yield stream
    stream.close()


def test_a_click_counts_on_the_day_its_delivery_counted_when_sent_after_midnight(tmp_path: Path,
                                                                                 log: LocalLog) -> None:
    """A notification planned for 23:59 and delivered after midnight (the worker catching up, or a retry)
    counts ``sent`` on its UTC delivery day, but ``lookup`` dated its open/click by the dedupe record's
    ``send_at`` (the dedupe record has no ``delivered_at``), so the click landed in the previous day's row:
    that day showed a click with nothing delivered (CTR 0 there, clicks > delivered when it had other
    sends) and the delivery day a delivery never clicked; the bandit's 30-day window could hold one and
    not the other."""
    clock = ManualClock(LATE_EVENING)
    store = SqliteStore(tmp_path / "store.sqlite", clock=clock)
    try:
        [item] = seed_due(store, n=1, start=LATE_EVENING, campaigns=1)
        clock.set((LATE_EVENING + timedelta(seconds=90)).timestamp())  # delivered at 00:00:30 the next day
        DeliveryWorker(store, ScriptedChannel(), public_base_url="http://t", clock=clock,
                       options=OPTS).run_until_idle()
        keys = ephemeral_keyring("tracking", now=LATE_EVENING)
        clock.advance(600)
        token = sign_token(keys, item["notification_id"], kind="click")
        result = track(store, log, token=token, kind="click", keys=keys, clock=clock)
        assert result.first
        rows = {r["sk"]: (int(r.get("sent") or 0), int(r.get("clicked") or 0))
                for r in campaign_stats(store, item["campaign_id"], since_day="2026-11-24")
                if r.get("sent") or r.get("clicked")}  # the plan day's row holds its budget_spent
        assert rows == {"2026-11-25": (1, 1)}
    finally:
        store.close()


def _one_sent(store: SqliteStore, clock: ManualClock) -> Item:
    """One notification due late in the evening, sent by a real worker."""
    [item] = seed_due(store, n=1, start=LATE_EVENING, campaigns=1)
    DeliveryWorker(store, ScriptedChannel(), public_base_url="http://t", clock=clock, options=OPTS).run_until_idle()
    return item


def _refusing_counts(path: Path) -> sqlite3.Connection:
    """A connection to the Store's file with a trigger that refuses every ``campaign_stats`` update (a full
    disk, a throttled table); drop the trigger on it to let the counts through again."""
    raw = sqlite3.connect(path)
    raw.execute("CREATE TRIGGER refuse BEFORE UPDATE ON campaign_stats BEGIN SELECT RAISE(ABORT, 'refused'); END")
    raw.commit()
    return raw


def test_a_click_whose_count_the_store_refused_is_counted_by_the_next_hit(tmp_path: Path, log: LocalLog) -> None:
    """The first click claimed its marker, published its event, then the ``campaign_stats`` write was refused
    (a full disk, a throttled table: here a trigger in the real SQLite file): the request failed, and the marker
    stayed, so every later hit of the link was a repeat and the click was never counted (events said clicked,
    the counters, the CTR and the bandit never did). The marker now says whether its count was taken, and the
    next hit takes it, once."""
    clock = ManualClock(LATE_EVENING)
    store = SqliteStore(tmp_path / "store.sqlite", clock=clock)
    try:
        item = _one_sent(store, clock)
        keys = ephemeral_keyring("tracking", now=LATE_EVENING)
        token = sign_token(keys, item["notification_id"], kind="click")
        raw = _refusing_counts(tmp_path / "store.sqlite")
        clock.advance(60)
        with pytest.raises(CountsNotAddedError):
            track(store, log, token=token, kind="click", keys=keys, clock=clock)
        raw.execute("DROP TRIGGER refuse")
        raw.commit()
        raw.close()
        clock.advance(5)
        again = track(store, log, token=token, kind="click", keys=keys, clock=clock)
        third = track(store, log, token=token, kind="click", keys=keys, clock=clock)
        [row] = [r for r in campaign_stats(store, item["campaign_id"], since_day="2026-11-24") if r.get("sent")]
        assert (row["sent"], row["clicked"]) == (1, 1)
        assert again.redirect_url and not third.first and third.event_id is None
    finally:
        store.close()


def test_a_notification_waiting_for_a_retry_is_not_an_ignored_send(tmp_path: Path) -> None:
    """A plan made during the day (``load_state(now=...)``) reads the notifications the worker holds as
    ``claimed`` and put them in the history, where fatigue counted them as sends the user ignored. During a
    channel outage (every attempt answered 503, retries scheduled) each user's undelivered notifications
    lowered their cap (2 of them: one slot less, and the penalty) in the re-plan, for sends they never got.
    They stay in the day's cap, gaps and cooldowns (they may still be delivered) but are no ignored sends."""
    from notify_core.delivery.channels import Outcome
    from notify_core.scheduling.fatigue import fatigue_of
    from notify_core.scheduling.models import FatigueOptions
    from notify_core.scheduling.store import load_state
    from notify_core.store import tables

    now = datetime(2026, 11, 24, 10, 5, tzinfo=UTC)
    clock = ManualClock(now)
    store = SqliteStore(tmp_path / "store.sqlite", clock=clock)
    try:
        [first] = seed_due(store, n=1, start=now - timedelta(minutes=4), campaigns=1, with_plans=True)
        second = {**first, "notification_id": first["notification_id"] + "b", "campaign_id": "c001", "slot": 1,
                  "sk": tables.schedule_sk(first["user_id"], first["notification_id"] + "b")}
        store.table(tables.SCHEDULES).put(second)
        store.table(tables.PLANS).put({**{k: v for k, v in second.items() if k not in ("pk", "sk")},
                                       "pk": second["user_id"],
                                       "sk": tables.plan_sk(second["plan_day"], second["notification_id"])})
        channel = ScriptedChannel({i["notification_id"]: [Outcome.RETRYABLE] for i in (first, second)})
        DeliveryWorker(store, channel, public_base_url="http://t", clock=clock, options=OPTS).run_pass()
        assert len(channel.calls) == 2
        state = load_state(store, [first["user_id"]], plan_day=now.date(), now=now)
        assert state.history.height + state.scheduled.height == 2  # still in the day's cap and gaps
        import polars as pl
        users = pl.DataFrame({"user_id": [first["user_id"]]})
        fat = fatigue_of(users, state.history, state.interactions, as_of=now, options=FatigueOptions())
        assert (int(fat.ignored[0]), int(fat.cap_reduction[0])) == (0, 0)
    finally:
        store.close()


def test_an_opt_out_whose_count_the_store_refused_is_counted_by_the_next_post(tmp_path: Path) -> None:
    """``opt_out_from_link`` set the marker's ``counted`` flag and then added ``opted_out``: a count the Store
    refused left the flag set, so the retried POST (the mail client's one-click retry, the user's second click)
    found it counted and the opt-out was never in the campaign's ``opt_outs``. The flag is cleared again
    when the count is not added."""
    from notify_core.preferences import opt_out_from_link

    clock = ManualClock(LATE_EVENING)
    store = SqliteStore(tmp_path / "store.sqlite", clock=clock)
    try:
        item = _one_sent(store, clock)
        day = LATE_EVENING.date().isoformat()
        raw = _refusing_counts(tmp_path / "store.sqlite")
        args = {"user_id": item["user_id"], "campaign_id": item["campaign_id"],
                "notification_id": item["notification_id"], "day": day}
        with pytest.raises(CountsNotAddedError):
            opt_out_from_link(store, **args, now=LATE_EVENING)
        raw.execute("DROP TRIGGER refuse")
        raw.commit()
        raw.close()
        opt_out_from_link(store, **args, now=LATE_EVENING + timedelta(seconds=5))
        opt_out_from_link(store, **args, now=LATE_EVENING + timedelta(seconds=9))
        [row] = campaign_stats(store, item["campaign_id"], since_day=day)
        assert (row["sent"], row.get("opted_out")) == (1, 1)
    finally:
        store.close()

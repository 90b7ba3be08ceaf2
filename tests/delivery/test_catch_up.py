"""A worker that comes back after an outage, or whose wall clock is stepped forward, finds every notification
due meanwhile: it sends those less than ``max_late_s`` late and finishes the older ones as suppressed
``too_late``, counted. Before, a worker looked only at the last ``lookback_minutes`` (15): after a longer outage
the first minutes' notifications stayed ``pending`` for good, sent by no one and counted nowhere."""

from __future__ import annotations

import dataclasses
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest
from prometheus_client import REGISTRY

from notify_core.delivery import DeliveryWorker, ManualClock, WorkerOptions
from notify_core.delivery.channels import Outcome
from notify_core.delivery.claims import CATCH_UP_S, CATCH_UP_SCANS, WATERMARK_KEY, Claims
from notify_core.delivery.synthetic import seed_due
from notify_core.store import tables
from notify_core.store.port import Store
from notify_core.store.sqlite import SqliteStore
from tests.delivery.conftest import ScriptedChannel, minute_start

# 4 shards, not the default 16: a catch-up reads each minute once a shard (twice: due items and retries), and
# what is caught up, and when, does not depend on how many there are.
SHARDS = 4
OPTS = WorkerOptions(concurrency=4, lookback_minutes=15, prefetch_s=0.0, shards=SHARDS)


def _finished(store: Store) -> Counter[tuple[str, Any]]:
    return Counter((str(i["status"]), i.get("suppressed_reason")) for i in store.table(tables.SCHEDULES).scan())


def _missed() -> float:
    return REGISTRY.get_sample_value("notify_delivery_missed_total", {"channel": "scripted"}) or 0.0


def _run(store: Store, clock: ManualClock, channel: ScriptedChannel, **options: Any) -> DeliveryWorker:
    """One invocation of the Lambda's loop (a fresh worker: nothing of an earlier one's memory)."""
    worker = DeliveryWorker(store, channel, public_base_url="http://t", clock=clock,
                            options=dataclasses.replace(OPTS, **options))
    worker.run_until_idle()
    worker.close()
    return worker


def test_a_worker_back_after_a_three_hour_outage_sends_the_last_hour_and_finishes_the_rest_as_too_late(
        either: tuple[Store, ManualClock], monkeypatch: pytest.MonkeyPatch) -> None:
    store, clock = either
    channel = ScriptedChannel()
    start = minute_start(clock.now())
    before = seed_due(store, shards=SHARDS, n=5, start=start, user_prefix="before")
    _run(store, clock, channel)  # the worker runs, then goes down at `start`
    clock.advance(120)
    _run(store, clock, channel)  # ... after its minutes closed: the watermark is written
    assert store.table(tables.DELIVERY_CURSOR).get(*WATERMARK_KEY) is not None
    # one notification a minute for the three hours the worker is down
    items = seed_due(store, shards=SHARDS, n=180, start=start + timedelta(minutes=3), spread_s=180 * 60)
    clock.advance(3 * 3600)
    missed_before = _missed()
    queued: list[int] = []  # minutes before the lookback with work in memory, at each scan's start
    scan = Claims._scan

    def counting(claims: Claims, minute: Any) -> None:
        recent = clock.now() - OPTS.lookback_minutes * 60
        queued.append(sum(1 for m in claims._minutes.values() if m.start < recent and m.queue))
        scan(claims, minute)

    monkeypatch.setattr(Claims, "_scan", counting)
    _run(store, clock, channel)

    now = clock.now()
    late = {i["notification_id"]: now - (start + timedelta(minutes=3 + k)).timestamp() for k, i in enumerate(items)}
    within = {nid for nid, s in late.items() if s <= OPTS.max_late_s}
    assert 55 <= len(within) <= 65  # the last hour's
    sent = Counter(call[2] for call in channel.calls)
    assert set(sent) == within | {i["notification_id"] for i in before} and max(sent.values()) == 1
    assert _finished(store) == {("sent", None): 5 + len(within), ("suppressed", "too_late"): 180 - len(within)}
    row = store.table(tables.DELIVERIES).get(items[0]["notification_id"], "attempt#1")
    assert row is not None and row["outcome"] == "suppressed"
    assert _missed() - missed_before == 180 - len(within)
    # a notification never attempted takes none of its user's day's send tokens (the cap is for attempts)
    tokens = {str(t["pk"]) for t in store.table(tables.DEDUPE).scan() if str(t["pk"]).startswith("cap#")}
    assert tokens == {tables.day_cap_pk(str(i["user_id"]), str(i["plan_day"]))
                      for i in [*before, *items] if i["notification_id"] in sent}
    assert len(queued) >= 180 and max(queued) <= CATCH_UP_SCANS  # a backlog is not read into memory at once
    # caught up: a later start looks back no further than the minutes not yet done (the last hour's, whose
    # sends' derived rows settle for a lease before their minute closes: this clock stands still)
    mark = store.table(tables.DELIVERY_CURSOR).get(*WATERMARK_KEY)
    assert mark is not None and now - 3600 <= float(mark["minute"]) <= now


def test_a_clock_stepped_forward_under_a_running_worker_leaves_no_minute_unlooked_at(
        store: SqliteStore, clock: ManualClock) -> None:
    """The same worker (its minutes in memory), the clock moved 45 minutes at once: the 30 minutes of
    notifications it had not reached are all sent, 15-45 minutes late, once each."""
    channel = ScriptedChannel()
    items = seed_due(store, shards=SHARDS, n=60, start=minute_start(clock.now()), spread_s=30 * 60)
    worker = DeliveryWorker(store, channel, public_base_url="http://t", clock=clock, options=OPTS)
    try:
        assert worker.run_until_idle().delivered == 1
        clock.advance(45 * 60)
        worker.run_until_idle()
    finally:
        worker.close()
    assert sorted(call[2] for call in channel.calls) == sorted(i["notification_id"] for i in items)
    assert _finished(store) == {("sent", None): 60}


def test_a_notification_found_just_past_max_late_is_not_sent_and_one_just_within_is(
        store: SqliteStore, clock: ManualClock) -> None:
    channel = ScriptedChannel()
    start = minute_start(clock.now())
    items = seed_due(store, shards=SHARDS, n=2, start=start, spread_s=40)  # at :00 and :20
    clock.set(start.timestamp() + 600 + 10)  # 610 s and 590 s late
    _run(store, clock, channel, max_late_s=600.0)
    assert [call[2] for call in channel.calls] == [items[1]["notification_id"]]
    assert _finished(store) == {("sent", None): 1, ("suppressed", "too_late"): 1}


def test_a_first_start_looks_back_the_lookback_and_a_late_start_no_further_than_the_catch_up_window(
        store: SqliteStore, clock: ManualClock) -> None:
    """No watermark (a new deployment): the lookback, as before. A watermark older than the catch-up window
    (a worker down for days): the last :data:`CATCH_UP_S` only."""
    channel = ScriptedChannel()
    start = minute_start(clock.now())
    seed_due(store, shards=SHARDS, n=2, start=start - timedelta(hours=2), spread_s=120, user_prefix="hours")
    seed_due(store, shards=SHARDS, n=2, start=start - timedelta(seconds=CATCH_UP_S + 3600), spread_s=120,
             user_prefix="days")
    _run(store, clock, channel)
    assert channel.calls == [] and _finished(store) == {("pending", None): 4}  # before the lookback: not looked at

    store.table(tables.DELIVERY_CURSOR).put({"pk": WATERMARK_KEY[0], "sk": WATERMARK_KEY[1],
                                             "minute": int(clock.now() - 3 * CATCH_UP_S)})
    _run(store, clock, channel)
    assert channel.calls == []
    statuses = {str(i["user_id"])[:4]: i["status"] for i in store.table(tables.SCHEDULES).scan()}
    assert statuses == {"hour": "suppressed", "days": "pending"}
    mark = store.table(tables.DELIVERY_CURSOR).get(*WATERMARK_KEY)
    assert mark is not None and float(mark["minute"]) >= clock.now() - 120


def test_a_long_backlog_holds_state_only_for_the_minutes_being_read_and_skips_those_another_worker_closed(
        store: SqliteStore, clock: ManualClock, monkeypatch: pytest.MonkeyPatch) -> None:
    """Six hours behind, one notification a minute; another worker already closed the second and fourth
    hours. Each scan sees the worker holding minute states for the lookback and the few backlog minutes
    being read, not for all 360 (before, every pass walked a state per minute of the backlog: quadratic over
    a day's catch-up); the closed hours are never scanned, and every other minute is caught up."""
    channel = ScriptedChannel()
    start = minute_start(clock.now()) - timedelta(hours=6)
    items = seed_due(store, shards=SHARDS, n=360, start=start, spread_s=6 * 3600)
    cursor = store.table(tables.DELIVERY_CURSOR)
    cursor.put({"pk": WATERMARK_KEY[0], "sk": WATERMARK_KEY[1], "minute": int(start.timestamp())})
    closed = {tables.due_minute(start + timedelta(minutes=m)) for h in (1, 3) for m in range(h * 60, h * 60 + 60)}
    cursor.batch_put([{"pk": "minute", "sk": key, "closed_at": "x"} for key in closed])
    held: list[int] = []
    scanned: set[str] = set()
    scan = Claims._scan

    def counting(claims: Claims, minute: Any) -> None:
        held.append(len(claims._minutes))
        scanned.add(minute.key)
        scan(claims, minute)

    monkeypatch.setattr(Claims, "_scan", counting)
    _run(store, clock, channel, max_late_s=3600.0)

    assert not scanned & closed
    assert len(scanned) >= 240 and max(held) <= OPTS.lookback_minutes + 8, max(held)  # 360 before
    statuses = Counter(("closed" if i["due_minute"] in closed else "open", str(i["status"]))
                       for i in store.table(tables.SCHEDULES).scan())
    assert statuses == {("closed", "pending"): 120, ("open", "suppressed"): 180, ("open", "sent"): 60}
    assert sorted(c[2] for c in channel.calls) == sorted(str(i["notification_id"]) for i in items[300:])
    mark = cursor.get(*WATERMARK_KEY)
    assert mark is not None and float(mark["minute"]) >= clock.now() - 3600


@pytest.mark.parametrize("restarted", [False, True])
def test_minutes_closed_while_the_clock_was_ahead_are_looked_at_again_once_it_steps_back(
        store: SqliteStore, clock: ManualClock, restarted: bool) -> None:
    """The box's clock ran 30 minutes ahead, then NTP stepped it back. The minutes the worker closed in that
    half hour have not passed by the right clock: a notification a re-plan puts in one of them is sent when
    its time comes (by the same worker, or one started after the step), not left pending under a done mark."""
    channel = ScriptedChannel()
    right = minute_start(clock.now())
    clock.set(right.timestamp() + 30 * 60)  # 30 minutes ahead
    worker = DeliveryWorker(store, channel, public_base_url="http://t", clock=clock, options=OPTS)
    try:
        # sent 10 minutes early
        seed_due(store, shards=SHARDS, n=1, start=right + timedelta(minutes=20), user_prefix="early")
        worker.run_until_idle()
        clock.advance(120)
        worker.run_until_idle()  # the minutes up to the clock's "now" closed
        assert store.table(tables.DELIVERY_CURSOR).get("minute", tables.due_minute(right + timedelta(minutes=25)))
        clock.set(right.timestamp())  # stepped back to the right time
        replanned = seed_due(store, shards=SHARDS, n=1, start=right + timedelta(minutes=25), user_prefix="replan")
        if restarted:
            worker.close()
            worker = DeliveryWorker(store, channel, public_base_url="http://t", clock=clock, options=OPTS)
        worker.run_until_idle()
        assert len(channel.calls) == 1  # not yet: it is due in 25 minutes
        clock.advance(25 * 60 + 1)
        worker.run_until_idle()
    finally:
        worker.close()
    assert [call[2] for call in channel.calls][1:] == [replanned[0]["notification_id"]]
    assert _finished(store) == {("sent", None): 2}


class _CountedQueries:
    """A Store table whose ``query`` calls are counted (the retries index as the worker reads it)."""

    def __init__(self, table: Any) -> None:
        self._table = table
        self.queries = 0

    def query(self, *args: Any, **kwargs: Any) -> Any:
        self.queries += 1
        return self._table.query(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._table, name)


def test_a_worker_catching_up_reads_the_retries_of_each_minute_once_not_the_whole_backlog_every_minute(
        store: SqliteStore, clock: ManualClock) -> None:
    """A worker back after three hours whose passes take a minute each (a slow Store): its floor stays hours
    behind while it catches up, two minutes a pass. Its retries index is read back to the floor once, then
    over the lookback each minute; before, every minute went back to the floor again, 16 queries (a shard
    each) for every minute of the backlog: 2,896 a pass here, 23,000 a pass after a day's outage. The
    retries of the catch-up itself are still found, and nothing is sent twice or left pending."""
    channel = ScriptedChannel()
    start = minute_start(clock.now())
    seed_due(store, shards=SHARDS, n=2, start=start, user_prefix="before")
    _run(store, clock, channel)
    clock.advance(120)
    _run(store, clock, channel)  # the watermark written: a worker started later begins its catch-up there
    items = seed_due(store, shards=SHARDS, n=180, start=start + timedelta(minutes=3), spread_s=180 * 60)
    flaky = str(items[-1]["notification_id"])  # due as the catch-up ends: a retry, 1 s after the refusal
    channel.script[flaky] = [Outcome.RETRYABLE]
    clock.advance(3 * 3600)
    worker = DeliveryWorker(store, channel, public_base_url="http://t", clock=clock, options=OPTS)
    retries = _CountedQueries(worker.claims._retries)
    worker.claims._retries = retries
    per_pass: list[int] = []
    try:
        for _ in range(400):
            before = retries.queries
            worker.run_pass()
            per_pass.append(retries.queries - before)
            if _finished(store)[("pending", None)] == 0 and sum(1 for c in channel.calls if c[2] == flaky) == 2:
                break  # caught up, and the refused send retried
            clock.advance(60)
    finally:
        worker.close()
    shards = OPTS.shards
    assert per_pass[0] >= 180 * shards  # the first full look goes back to the floor, three hours
    assert len(per_pass) > 40 and max(per_pass[1:]) <= (OPTS.lookback_minutes + 1) * shards, per_pass[:20]
    sends = Counter(call[2] for call in channel.calls)
    assert sends[flaky] == 2 and all(n == 1 for nid, n in sends.items() if nid != flaky)
    finished = _finished(store)
    assert finished[("pending", None)] == 0 and sum(finished.values()) == 182, finished


def test_passes_back_to_back_read_the_retries_index_once_a_second_and_again_after_a_cut(
        store: SqliteStore, clock: ManualClock) -> None:
    """Passes at one instant (a catch-up, a Lambda loop) read the retries index once; a retry another worker
    wrote meanwhile is found by the first pass a second later; a read cut by the batch is read again at once."""
    from notify_core.delivery.claims import RETRIES_READ_EVERY_S
    from notify_core.delivery.outcomes import retry_entry

    now = minute_start(clock.now()).timestamp() + 20
    clock.set(now)
    worker = DeliveryWorker(store, ScriptedChannel(), public_base_url="http://t", clock=clock, options=OPTS)
    retries = _CountedQueries(worker.claims._retries)
    worker.claims._retries = retries
    claims = worker.claims

    def entry(n: int, due: float) -> Any:
        return retry_entry({"pk": "p", "sk": f"{n:03d}", "shard": n % OPTS.shards, "notification_id": f"n{n}"},
                           failed=1, due=due)
    try:
        assert claims.due_retries(now, 10) == [] and retries.queries > 0  # the first pass: a full scan
        calls = retries.queries
        store.table(tables.RETRIES).batch_put([entry(1, now - 0.5)])  # another worker's, due already
        assert claims.due_retries(now, 10) == [] and claims.due_retries(now + 0.5, 10) == []
        assert retries.queries == calls  # not read again within the second
        clock.set(now + RETRIES_READ_EVERY_S)
        assert [w.item["schedule_sk"] for w in claims.due_retries(now + RETRIES_READ_EVERY_S, 10)] == ["001"]
        store.table(tables.RETRIES).batch_put([entry(n, now) for n in range(2, 8)])
        calls = retries.queries
        later = now + 2 * RETRIES_READ_EVERY_S
        assert len(claims.due_retries(later, 3)) == 3  # cut by the batch: more are due
        assert len(claims.due_retries(later, 10)) == 7 and retries.queries > calls + 1  # read again at once
        own = entry(9, later + 0.3)  # this worker's own retry, due within the second: read when it is due
        worker.outcomes.write_retries([own])
        assert claims.due_retries(later + 0.2, 10) == []  # not yet due: not read again
        assert "009" in [w.item["schedule_sk"] for w in claims.due_retries(later + 0.3, 10)]
    finally:
        worker.close()

"""At most 5 notifications of a user's day are sent, even when two planners raced (the send-time cap).

Two planners of the same user and day at once (``POST /v1/schedules`` while the daily plan runs, or a
retried invocation) each read the day before the other wrote; their plans add up in the Store. Here the
second planner plans into a Store of its own, as it would have read the shared one before the first wrote,
and its items are copied in: 10 schedule items for one day. The worker then runs at each due minute. Before
the cap it sent all 10; now it sends 5 and finishes the rest ``suppressed`` (``daily_cap``). A normal
re-plan after some sends is not cut by it. Both backends: SQLite and a real DynamoDB Local.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from notify_core.clock import ManualClock
from notify_core.delivery import DeliveryWorker, WorkerOptions
from notify_core.delivery.day_cap import DAILY_CAP
from notify_core.delivery.summary import PassSummary
from notify_core.delivery.synthetic import seed_campaigns
from notify_core.lifecycle import CANCELLED, SENT, SUPPRESSED
from notify_core.scheduling.service import plan_and_store
from notify_core.store import tables
from notify_core.store.port import Item, Store
from notify_core.store.sqlite import SqliteStore
from tests.delivery.conftest import ScriptedChannel, run_loop_until, with_async_sender
from tests.scheduling.conftest import campaigns, candidates, users
from tests.servers import scratch_dynamo_store

# Today noon by the real calendar, planning tomorrow: DynamoDB Local sweeps expired items by the machine's
# own clock, so the items' TTLs must lie ahead of it.
NOW = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
DAY = (NOW + timedelta(days=1)).date()
USERS = users([("u1", "UTC", 5, None, None)])
CAMPS = campaigns([(f"c{j}", 3, 0, None) for j in range(10)])
FIRST = candidates([("u1", f"c{j}", 0.9 - j * 0.05) for j in range(10)])  # c0..c4 on top
SECOND = candidates([("u1", f"c{j}", 0.45 + j * 0.05) for j in range(10)])  # c9..c5 on top (new signals)
# 2 shards, not the default 16: the worker reads every minute between two sends hours apart once a shard (twice:
# due items and retries); on DynamoDB Local this file took 346 s on 16, 100 s on 2. The cap does not depend on it.
SHARDS = 2
OPTS = WorkerOptions(concurrency=2, lookback_minutes=2, prefetch_s=0.0, shards=SHARDS)


@pytest.fixture(params=["sqlite", "dynamodb"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        store = SqliteStore(tmp_path / "s.sqlite", clock=ManualClock(NOW))
        yield store
        store.close()
        return
    with scratch_dynamo_store(request.getfixturevalue("dynamodb_endpoint"), name="daycap") as dynamo:
        yield dynamo


def _plan(store: Store, cands: pl.DataFrame, now: datetime | None = None) -> None:
    plan_and_store(store, users=USERS, campaigns=CAMPS, candidates=cands, plan_day=DAY, now=now,
                   pipeline=False, writer_process=False, shards=SHARDS)


def _live(store: Store) -> list[Item]:
    return [i for i in store.table(tables.SCHEDULES).scan() if i.get("status") != CANCELLED]


def _send_at(item: Item) -> datetime:
    return datetime.fromisoformat(str(item["send_at"]).replace("Z", "+00:00"))


def _deliver(store: Store, channel: ScriptedChannel, *, until: datetime | None = None) -> Counter[str]:
    """Run the worker at each due minute of the live items (up to ``until``), as a looping worker would."""
    clock = ManualClock(NOW)
    worker = DeliveryWorker(store, channel, public_base_url="http://t", clock=clock, options=OPTS)
    try:
        for minute in sorted({_send_at(i) for i in _live(store)}):
            if until is not None and minute > until:
                break
            clock.set(minute + timedelta(seconds=1))
            worker.run_until_idle()
    finally:
        worker.close()
    return Counter(str(i["status"]) for i in store.table(tables.SCHEDULES).scan())


def test_two_planners_that_raced_get_five_notifications_sent_not_ten(backend: Store, tmp_path: Path) -> None:
    seed_campaigns(backend, [f"c{j}" for j in range(10)])
    _plan(backend, FIRST)
    rival = SqliteStore(tmp_path / "rival.sqlite")  # the second planner read the day before the first wrote
    try:
        _plan(rival, SECOND)
        for table in (tables.PLANS, tables.SCHEDULES):
            backend.table(table).batch_put(rival.table(table).scan())
    finally:
        rival.close()
    assert len(_live(backend)) == 10  # the race: two plans of 5, no id in common

    channel = ScriptedChannel()
    statuses = _deliver(backend, channel)

    assert len(channel.calls) == 5 and statuses == {SENT: 5, SUPPRESSED: 5}
    reasons = {i.get("suppressed_reason") for i in backend.table(tables.SCHEDULES).scan()
               if i["status"] == SUPPRESSED}
    assert reasons == {DAILY_CAP}
    tokens = backend.table(tables.DEDUPE).query(tables.day_cap_pk("u1", DAY.isoformat()))
    assert sorted(str(t["sk"]) for t in tokens) == ["0", "1", "2", "3", "4"]
    assert {t["notification_id"] for t in tokens} == {c[0] for c in channel.calls}
    # the first five due were sent, whichever planner made them
    due_first = sorted(_live(backend), key=_send_at)  # every item is finished: none is cancelled
    assert {i["notification_id"] for i in due_first[:5]} == {c[0] for c in channel.calls}


def test_a_replan_after_some_sends_is_not_cut_by_the_cap(backend: Store) -> None:
    seed_campaigns(backend, [f"c{j}" for j in range(10)])
    _plan(backend, FIRST)
    planned = sorted(_live(backend), key=_send_at)
    channel = ScriptedChannel()
    _deliver(backend, channel, until=_send_at(planned[1]))  # two sent
    assert len(channel.calls) == 2

    _plan(backend, SECOND, now=_send_at(planned[1]) + timedelta(minutes=1))  # new signals: the rest re-planned
    pending = [i for i in _live(backend) if i["status"] == "pending"]
    assert pending and not {i["notification_id"] for i in pending} & {i["notification_id"] for i in planned}
    statuses = _deliver(backend, channel)

    # every notification the re-plan made is sent (the planner kept the day within 5: nothing to cut)
    assert len(channel.calls) == 2 + len(pending) <= 5
    assert statuses[SENT] == 2 + len(pending) and statuses[SUPPRESSED] == 0


def test_a_notification_claimed_again_after_a_crash_keeps_its_own_token(backend: Store) -> None:
    """A worker killed after the claim (token taken, nothing sent): the lease runs out, another worker claims
    the same notification again and finds its own token, not a sixth one."""
    seed_campaigns(backend, [f"c{j}" for j in range(10)])
    _plan(backend, FIRST)
    first = min(_live(backend), key=_send_at)
    clock = ManualClock(_send_at(first) + timedelta(seconds=1))
    dead = DeliveryWorker(backend, ScriptedChannel(), public_base_url="http://t", clock=clock, options=OPTS)
    summary = PassSummary()  # what run_pass does up to the send, then "killed"
    dead.claims.plan_scans(clock.now(), summary)
    dead.claims.wait_scans()
    claimed = dead.claims.claim_batch(dead.claims.take_due(clock.now(), 100), summary)
    assert [c.item["notification_id"] for c in claimed] == [first["notification_id"]]
    clock.advance(OPTS.lease_s + 1)
    channel = ScriptedChannel()
    worker = DeliveryWorker(backend, channel, public_base_url="http://t", clock=clock, options=OPTS)
    try:
        worker.run_until_idle()
    finally:
        worker.close()
    assert [c[0] for c in channel.calls] == [first["notification_id"]]
    tokens = backend.table(tables.DEDUPE).query(tables.day_cap_pk("u1", DAY.isoformat()))
    assert [t["notification_id"] for t in tokens] == [first["notification_id"]]


def _profile(store: Store, *, daily_cap: int) -> None:
    store.table(tables.USERS).put({"pk": "u1", "sk": tables.PROFILE_SK, "user_id": "u1", "daily_cap": daily_cap})


def test_the_users_own_lower_cap_holds_when_two_planners_raced(backend: Store, tmp_path: Path) -> None:
    """A user who wants 2 a day: each planner planned 2, so 4 were live. Before the send-time check used the
    numbered tokens, all 4 were sent (the platform's 5 were not reached)."""
    seed_campaigns(backend, [f"c{j}" for j in range(10)])
    _profile(backend, daily_cap=2)
    two = users([("u1", "UTC", 2, None, None)])
    plan_and_store(backend, users=two, campaigns=CAMPS, candidates=FIRST, plan_day=DAY, pipeline=False,
                   writer_process=False, shards=SHARDS)
    rival = SqliteStore(tmp_path / "rival.sqlite")
    try:
        plan_and_store(rival, users=two, campaigns=CAMPS, candidates=SECOND, plan_day=DAY, pipeline=False,
                       writer_process=False, shards=SHARDS)
        for table in (tables.PLANS, tables.SCHEDULES):
            backend.table(table).batch_put(rival.table(table).scan())
    finally:
        rival.close()
    assert len(_live(backend)) == 4

    channel = ScriptedChannel()
    statuses = _deliver(backend, channel)

    assert len(channel.calls) == 2 and statuses == {SENT: 2, SUPPRESSED: 2}
    assert {i.get("suppressed_reason") for i in backend.table(tables.SCHEDULES).scan()
            if i["status"] == SUPPRESSED} == {DAILY_CAP}
    due_first = sorted(_live(backend), key=_send_at)
    assert {i["notification_id"] for i in due_first[:2]} == {c[0] for c in channel.calls}


def test_a_cap_lowered_after_the_plan_holds_at_send_time(backend: Store) -> None:
    """The user lowers their cap to 2 after one of the day's 5 was sent: one more goes, the other 3 do not."""
    seed_campaigns(backend, [f"c{j}" for j in range(10)])
    _profile(backend, daily_cap=5)
    _plan(backend, FIRST)
    planned = sorted(_live(backend), key=_send_at)
    assert len(planned) == 5
    channel = ScriptedChannel()
    _deliver(backend, channel, until=_send_at(planned[0]))
    assert len(channel.calls) == 1

    _profile(backend, daily_cap=2)
    statuses = _deliver(backend, channel)

    assert [c[0] for c in channel.calls] == [i["notification_id"] for i in planned[:2]]
    assert statuses == {SENT: 2, SUPPRESSED: 3}


def test_two_workers_taking_over_the_same_expired_claim_do_not_both_hold_it(backend: Store) -> None:
    """A take-over claim is conditional on the dead claim's token: of two workers that both saw the expired
    claim, the second finds the first's claim and holds nothing (the dedupe record and the day's token are
    the notification's own, so they would let both send)."""
    seed_campaigns(backend, [f"c{j}" for j in range(10)])
    _plan(backend, FIRST)
    first = min(_live(backend), key=_send_at)
    clock = ManualClock(_send_at(first) + timedelta(seconds=1))
    workers = [DeliveryWorker(backend, ScriptedChannel(), public_base_url="http://t", clock=clock, options=OPTS)
               for _ in range(3)]
    dead, a, b = workers
    try:
        summary = PassSummary()
        dead.claims.plan_scans(clock.now(), summary)
        dead.claims.wait_scans()
        assert len(dead.claims.claim_batch(dead.claims.take_due(clock.now(), 100), summary)) == 1
        clock.advance(OPTS.lease_s + 1)
        for w in (a, b):  # both scan before either claims: both see the dead worker's expired claim
            w.claims.plan_scans(clock.now(), summary)
            w.claims.wait_scans()
        work_a, work_b = a.claims.take_due(clock.now(), 100), b.claims.take_due(clock.now(), 100)
        assert [w.kind for w in work_a] == [w.kind for w in work_b] == ["reclaim"]
        assert [c.item["notification_id"] for c in a.claims.claim_batch(work_a, summary)] == [first["notification_id"]]
        assert b.claims.claim_batch(work_b, summary) == []
    finally:
        for w in workers:
            w.close()


def test_a_token_another_worker_takes_first_is_looked_for_again_not_assumed(tmp_path: Path) -> None:
    """DayCap.take: a conditional token write lost to another worker (it took the same free token between
    the read and the write) is read again: the notification takes the next free token, or none when every
    token is then held by others."""

    from notify_core.delivery.day_cap import DayCap
    from notify_core.store.port import Condition, Update

    store = SqliteStore(tmp_path / "race.sqlite", clock=ManualClock(NOW))
    table = store.table(tables.DEDUPE)
    full, one_left = tables.day_cap_pk("u1", DAY.isoformat()), tables.day_cap_pk("u2", DAY.isoformat())
    for pk, held in ((full, 4), (one_left, 3)):  # tokens already held by other notifications
        for k in range(held):
            table.put({"pk": pk, "sk": str(k), "notification_id": f"other{k}"})

    class Racing:
        """The dedupe table, with another worker taking the first free token of each day just before this
        worker's first write."""

        def __init__(self) -> None:
            self.raced = False

        def __getattr__(self, name: str) -> object:
            return getattr(table, name)

        def update_many(self, updates: list[Update]) -> list[Item | None]:
            if not self.raced:
                self.raced = True
                table.update_many([Update(full, "4", {"notification_id": "rival"}, Condition.absent()),
                                   Update(one_left, "3", {"notification_id": "rival"}, Condition.absent())])
            return table.update_many(updates)

    try:
        cap = DayCap(Racing(), write_lock=threading.Lock())  # type: ignore[arg-type]
        items = [{"notification_id": "mine1", "user_id": "u1", "plan_day": DAY.isoformat()},
                 {"notification_id": "mine2", "user_id": "u2", "plan_day": DAY.isoformat()}]
        assert cap.take(items, now=NOW.timestamp()) == [None, 4]
        assert {str(t["sk"]): t["notification_id"] for t in table.query(full)}["4"] == "rival"
        assert {str(t["sk"]): t["notification_id"] for t in table.query(one_left)} == {
            "0": "other0", "1": "other1", "2": "other2", "3": "rival", "4": "mine2"}
    finally:
        store.close()


def _deliver_on_the_loop(store: Store, channel: ScriptedChannel) -> Counter[str]:
    """As :func:`_deliver`, but through ``notify worker``'s loop (``run_forever``) with an async sender: the
    loop's event-loop senders decide suppressions in ``DeliveryWorker._prepare``, not in ``_send``."""
    clock = ManualClock(NOW)
    with_async_sender(channel)
    for minute in sorted({_send_at(i) for i in _live(store)}):
        due = sum(1 for i in _live(store) if _send_at(i) == minute)
        clock.set(minute + timedelta(seconds=1))
        worker = DeliveryWorker(store, channel, public_base_url="http://t", clock=clock, options=OPTS)
        assert worker._async_senders() is not None  # the loop sends on its event loop
        run_loop_until(worker, lambda w, due=due: w.totals.delivered + w.totals.suppressed >= due)
    return Counter(str(i["status"]) for i in store.table(tables.SCHEDULES).scan())


def test_a_lowered_cap_holds_on_the_loops_async_senders_too(backend: Store) -> None:
    """The cap lowered after the plan, on the path ``notify worker`` takes with an async-capable channel (the
    webhook's): 2 of the day's 5 go, 3 are suppressed for the cap."""
    seed_campaigns(backend, [f"c{j}" for j in range(10)])
    _profile(backend, daily_cap=5)
    _plan(backend, FIRST)
    planned = sorted(_live(backend), key=_send_at)
    assert len(planned) == 5
    _profile(backend, daily_cap=2)
    channel = ScriptedChannel()

    statuses = _deliver_on_the_loop(backend, channel)

    assert [c[0] for c in channel.calls] == [i["notification_id"] for i in planned[:2]]
    assert statuses == {SENT: 2, SUPPRESSED: 3}
    assert {i.get("suppressed_reason") for i in backend.table(tables.SCHEDULES).scan()
            if i["status"] == SUPPRESSED} == {DAILY_CAP}

"""Weeks of unattended delivery on the embedded Store: expired rows are removed, live ones never.

Every row the worker and the planner write on a schedule (schedule items, plans, dedupe records, the day's
send tokens, deliveries, sends, dead letters, the delivery cursor) carries a TTL. Reads treat an expired row
as absent, but before session 40 only an erasure removed one from the SQLite file, so the Store grew with
every day of operation (DynamoDB removes them itself). The clock is the test's own: 45 days pass in seconds.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from notify_core.clock import ManualClock
from notify_core.delivery import DeliveryWorker, WorkerOptions
from notify_core.delivery.channels import Outcome
from notify_core.delivery.outcomes import LOG_TTL_S, SENDS_TTL_S
from notify_core.delivery.synthetic import seed_due
from notify_core.scheduling.store import TTL_DAYS
from notify_core.store import tables
from notify_core.store.expiry import ExpirySweep
from notify_core.store.sqlite import SqliteStore
from tests.delivery.conftest import ScriptedChannel, minute_start

# 4 shards, not the default 16: every minute of the 45 days is read once a shard for due items and once a shard
# for retries (~2M reads on 16), and nothing here depends on how many there are.
SHARDS = 4
OPTS = WorkerOptions(concurrency=4, lookback_minutes=3, prefetch_s=0.0, shards=SHARDS)
DAYS = 45
PER_DAY = 20


def _raw_rows(store: SqliteStore) -> Counter[str]:
    """Rows physically in each table, expired or not (what the file holds, not what reads see)."""
    conn = sqlite3.connect(store.path)
    try:
        return Counter({name: int(conn.execute(f'SELECT count(*) FROM "{name}"').fetchone()[0])
                        for name in store.table_names()})
    finally:
        conn.close()


def test_a_worker_running_for_weeks_removes_expired_rows_and_keeps_every_live_one(
        store: SqliteStore, clock: ManualClock) -> None:
    channel = ScriptedChannel()
    worker = DeliveryWorker(store, channel, public_base_url="http://t", clock=clock, options=OPTS)
    delivered_at: dict[int, float] = {}
    notifications: dict[int, list[tuple[str, str]]] = {}
    for day in range(DAYS):
        due = minute_start(clock.now() + 120)  # a minute the worker has not scanned yet
        items = seed_due(store, n=PER_DAY, start=due, with_plans=True, user_prefix=f"d{day:02d}u",
                         shards=SHARDS)
        clock.set(due)
        channel.script[str(items[0]["notification_id"])] = [Outcome.PERMANENT]  # one dead letter a day
        summary = worker.run_until_idle()
        assert summary.delivered == PER_DAY - 1 and summary.dead_lettered == 1
        delivered_at[day] = clock.now()
        notifications[day] = [(str(i["notification_id"]), str(i["user_id"])) for i in items[1:]]
        for _ in range(24):  # the rest of the day: the worker invoked hourly (as a Lambda on a schedule)
            clock.advance(3600)
            worker.run_until_idle()
    worker.close()

    now = clock.now()
    visible = Counter({name: sum(1 for _ in store.table(name).scan()) for name in store.table_names()})
    # the file holds what reads see, and no more: every expired row is gone
    assert _raw_rows(store) == visible
    assert store.sweep_expired() == 0
    assert worker.expiry.removed > 0
    # bounded: a schedule item lives TTL_DAYS after its send, whatever the days of operation
    assert visible[tables.SCHEDULES] <= PER_DAY * (TTL_DAYS + 1)
    assert visible[tables.DEDUPE] <= PER_DAY * 4  # 24 h dedupe records, 2-day send tokens
    # nothing live was removed: each day's rows are there exactly as long as their TTL runs
    deliveries = store.table(tables.DELIVERIES)
    sends = store.table(tables.SENDS)
    for day, sent in notifications.items():
        kept_log = delivered_at[day] + LOG_TTL_S > now
        kept_sends = delivered_at[day] + SENDS_TTL_S > now
        for nid, user in sent:
            assert (deliveries.get(nid, "attempt#1") is not None) is kept_log, (day, nid)
            assert bool(sends.query(user)) is kept_sends, (day, user)
    assert visible[tables.DELIVERIES] == sum(PER_DAY for d in range(DAYS) if delivered_at[d] + LOG_TTL_S > now)
    assert visible[tables.DEAD_LETTERS] == sum(1 for d in range(DAYS) if delivered_at[d] + LOG_TTL_S > now)
    # profiles and campaigns carry no TTL and are all still there
    assert visible[tables.USERS] == DAYS * PER_DAY


def test_the_sweep_removes_a_backlog_in_slices_and_then_waits(store: SqliteStore, clock: ManualClock) -> None:
    table = store.table(tables.DEDUPE)
    start = clock.now()
    table.batch_put({"pk": f"n{i:05d}", "sk": "dedupe", "ttl": start + 10} for i in range(2500))
    table.batch_put({"pk": f"live{i:03d}", "sk": "dedupe", "ttl": start + 10 * 86400} for i in range(100))
    table.batch_put({"pk": f"kept{i:03d}", "sk": "dedupe"} for i in range(10))  # no TTL: kept for good
    sweep = ExpirySweep(store, now=start, every_s=3600, first_after_s=60, rows_per_call=1000)
    clock.advance(30)
    assert sweep.maybe_sweep(clock.now()) == 0  # not yet due
    clock.advance(30)
    assert [sweep.maybe_sweep(clock.now()) for _ in range(4)] == [1000, 1000, 500, 0]
    clock.advance(1800)
    assert sweep.maybe_sweep(clock.now()) == 0  # waits every_s after a sweep that was through
    assert _raw_rows(store)[tables.DEDUPE] == 110
    assert sum(1 for _ in table.scan()) == 110


def test_a_store_without_a_sweep_of_its_own_is_left_alone() -> None:
    assert ExpirySweep(object(), now=0.0, first_after_s=0).maybe_sweep(10.0) == 0


def test_the_sweep_finds_expired_rows_outside_the_write_gate_and_spares_a_row_rewritten_meanwhile(
        tmp_path: Path) -> None:
    """The scan for expired rows (154 ms on a 1M-row table with 1,000 expired, measured) ran inside the
    write gate, holding every writer of the file that long every hour; it now reads outside it and only the
    deletes (by rowid, TTL checked again) take the gate. A row rewritten with a later TTL between the scan and
    the delete stays."""
    from contextlib import contextmanager

    clock = ManualClock(1_800_000_000.0)
    store = SqliteStore(tmp_path / "store.sqlite", clock=clock)
    table = store.table("scratch")
    table.batch_put({"pk": f"u{i:05d}", "sk": "s", "ttl": int(clock.now()) - 10 if i % 3 == 0 else
                     int(clock.now()) + 86_400} for i in range(9_000))
    statements: list[tuple[bool, str]] = []  # (inside the gate, statement)
    gate, inside, renewed = store.write_gate, [False], []
    transaction = gate.transaction

    @contextmanager
    def watched(conn: sqlite3.Connection, **kw: object) -> Iterator[None]:
        if not renewed:  # once, between the first scan and its delete: a writer renews one expired row
            renewed.append(True)
            table.put({"pk": "u00000", "sk": "s", "ttl": int(clock.now()) + 86_400})
        with transaction(conn, **kw):  # type: ignore[arg-type]
            inside[0] = True
            try:
                yield
            finally:
                inside[0] = False

    gate.transaction = watched  # type: ignore[method-assign]
    store.connection().set_trace_callback(lambda sql: statements.append((inside[0], sql)))
    removed = store.sweep_expired(limit=2_500)
    store.connection().set_trace_callback(None)
    scans = [within for within, sql in statements if sql.lstrip().startswith("SELECT rowid")]
    deletes = [within for within, sql in statements if sql.lstrip().startswith("DELETE")]
    assert scans and not any(scans), "the scan for expired rows ran inside the write gate"
    assert deletes and all(deletes)
    assert removed == 2_500 and table.get("u00000", "s") is not None  # the renewed row kept
    assert store.sweep_expired() == 3_000 - 1 - 2_500  # the rest, in a second call
    assert _raw_rows(store)["scratch"] == 6_000 + 1 and table.get("u00000", "s") is not None
    store.close()

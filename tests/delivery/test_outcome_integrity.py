"""Each outcome is projected and counted once: by the worker whose claim it was, or by the minute-close repair
when that worker is gone, never by both; an outcome that lost its claim projects nothing; counts the Store
refused are kept for the next flush. Found by an audit (each test fails on the code before it)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from notify_core.clock import ManualClock
from notify_core.delivery import DeliveryWorker, WorkerOptions
from notify_core.delivery.channels import Outcome
from notify_core.delivery.feedback import add_campaign_counts, campaign_stats
from notify_core.delivery.summary import PassSummary
from notify_core.delivery.synthetic import seed_due
from notify_core.errors import BackendError
from notify_core.store import tables
from notify_core.store.port import Item
from notify_core.store.sqlite import SqliteStore
from tests.delivery.conftest import ScriptedChannel

NOW = datetime(2026, 11, 24, 10, 5, tzinfo=UTC)
OPTS = WorkerOptions(concurrency=1, lookback_minutes=5, prefetch_s=0.0, heartbeat_s=0, lease_s=30)


def _count(store: SqliteStore, items: list[Item], field: str = "sent") -> int:
    return sum(int(r.get(field) or 0) for c in {i["campaign_id"] for i in items}
               for r in campaign_stats(store, c, since_day=items[0]["send_at"][:10]))


def _worker(store: SqliteStore, clock: ManualClock, channel: ScriptedChannel | None = None,
            **options: Any) -> DeliveryWorker:
    return DeliveryWorker(store, channel or ScriptedChannel(), public_base_url="http://t", clock=clock,
                          options=WorkerOptions(**{**OPTS.__dict__, **options}) if options else OPTS)


def _claim_and_send(worker: DeliveryWorker, clock: ManualClock) -> None:
    """One pass of ``worker`` up to, not including, its flush: claimed, sent, the outcome committed; the
    derived rows still queued in memory (where a pipelined loop has them while it starts the next step)."""
    summary = PassSummary()
    worker.claims.plan_scans(clock.now(), summary)
    worker.claims.wait_scans()
    claimed = worker.claims.claim_batch(worker.claims.take_due(clock.now(), 10), summary)
    for claim in claimed:
        worker._deliver(claim, profiles=worker._profiles(claimed))


def test_another_worker_scanning_a_passed_minute_leaves_a_fresh_outcome_to_its_worker(tmp_path: Path) -> None:
    clock = ManualClock(NOW)
    a_store, b_store = SqliteStore(tmp_path / "s.sqlite", clock=clock), SqliteStore(tmp_path / "s.sqlite", clock=clock)
    items = seed_due(a_store, n=3, start=NOW - timedelta(minutes=2), campaigns=1)  # catching up after a restart
    a, b = _worker(a_store, clock), _worker(b_store, clock)
    _claim_and_send(a, clock)
    assert b.run_pass().repaired == 0  # the items say sent and have no deliveries row yet: A's to write
    a.flush()
    assert _count(a_store, items) == 3 and len(a.channel.calls) + len(b.channel.calls) == 3
    clock.advance(OPTS.lease_s + 1)
    b.run_until_idle()  # the minute closes now, with nothing to repair
    assert b.totals.repaired == 0 and _count(a_store, items) == 3
    a.close()
    b.close()


def test_a_killed_workers_sends_are_counted_by_the_repair_against_the_budget_too(tmp_path: Path) -> None:
    """A worker killed after its outcomes committed and before its flush: the minute-close repair re-creates
    its rows, and with them both counters a send adds, ``sent`` by UTC day and ``budget_spent`` by plan day
    (what a re-plan of the day reads as the budget's use), once each."""
    clock = ManualClock(NOW)
    store = SqliteStore(tmp_path / "s.sqlite", clock=clock)
    items = seed_due(store, n=3, start=NOW - timedelta(minutes=2), campaigns=1, plan_day="2026-11-23")
    killed = _worker(store, clock)
    _claim_and_send(killed, clock)  # then kill -9: the queued rows and counts die with it (no flush, no close)
    clock.advance(OPTS.lease_s + 1)
    survivor = _worker(store, clock)
    survivor.run_until_idle()
    survivor.close()
    assert survivor.totals.repaired == 3 and len(killed.channel.calls) == 3
    assert _count(store, items) == 3
    spent = campaign_stats(store, items[0]["campaign_id"], since_day="2026-11-23")
    assert [(r["sk"], r.get("budget_spent")) for r in spent if r.get("budget_spent")] == [("2026-11-23", 3)]


def test_a_worker_rescanning_its_own_minute_before_its_flush_counts_once(tmp_path: Path) -> None:
    clock = ManualClock(NOW)
    store = SqliteStore(tmp_path / "s.sqlite", clock=clock)
    items = seed_due(store, n=2, start=NOW - timedelta(minutes=2), campaigns=1)
    worker = _worker(store, clock)
    _claim_and_send(worker, clock)
    worker.claims.plan_scans(clock.now(), PassSummary())  # the pipelined loop's next step re-scans the minute
    worker.claims.wait_scans()
    worker.flush()
    worker.close()
    assert len(worker.channel.calls) == 2 and _count(store, items) == 2


def test_the_outcome_of_a_claim_lost_to_another_worker_writes_no_rows_and_counts_nothing(tmp_path: Path) -> None:
    clock = ManualClock(NOW)
    sa, sb = SqliteStore(tmp_path / "s.sqlite", clock=clock), SqliteStore(tmp_path / "s.sqlite", clock=clock)
    [item] = seed_due(sa, n=1, start=NOW, campaigns=1)
    nid = item["notification_id"]
    a = _worker(sa, clock, ScriptedChannel({nid: [Outcome.PERMANENT]}))
    b = _worker(sb, clock)
    summary = PassSummary()
    a.claims.plan_scans(clock.now(), summary)
    a.claims.wait_scans()
    [claim] = a.claims.claim_batch(a.claims.take_due(clock.now(), 10), summary)
    clock.advance(OPTS.lease_s + 1)  # A's send is slow: its lease runs out, B re-claims and delivers
    assert b.run_pass().delivered == 1
    assert a._deliver(claim, profiles=a._profiles([claim]))[0] == "lost_claim"  # A's 4xx comes too late
    a.flush()
    a.close()
    b.close()
    assert sa.table(tables.SCHEDULES).get(item["pk"], item["sk"])["status"] == "sent"
    assert list(sa.table(tables.DEAD_LETTERS).scan()) == []
    assert sa.table(tables.DELIVERIES).get(nid, tables.attempt_sk(1))["outcome"] == "sent"
    assert _count(sa, [item], "failed") == 0 and _count(sa, [item]) == 1


def test_counts_the_store_refused_are_added_by_the_next_flush(tmp_path: Path) -> None:
    clock = ManualClock(NOW)
    store = SqliteStore(tmp_path / "s.sqlite", clock=clock)
    items = seed_due(store, n=5, start=NOW, campaigns=1)
    calls: list[dict[tuple[str, str], int]] = []

    def refused_once(s: Any, counts: Any) -> None:  # the first counter write meets a full disk
        calls.append(dict(counts))
        if len(calls) == 1:
            raise BackendError("database or disk is full")
        add_campaign_counts(s, counts)

    worker = DeliveryWorker(store, ScriptedChannel(), public_base_url="http://t", clock=clock, options=OPTS,
                            on_campaign_counts=refused_once)
    with pytest.raises(BackendError):
        worker.run_pass()
    assert _count(store, items) == 0
    clock.advance(120)
    worker.run_until_idle()
    worker.close()
    assert len(worker.channel.calls) == 5 and _count(store, items) == 5 and len(calls) == 2

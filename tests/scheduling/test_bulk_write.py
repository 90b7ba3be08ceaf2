"""The bulk write path of plans (issue 21): the same Store state as the item-by-item path, chunk
pipelining that changes nothing, and a kill -9 mid-run that a re-run repairs with nothing done twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from notify_core.clock import ManualClock
from notify_core.scheduling import plan_users
from notify_core.scheduling.service import plan_and_store
from notify_core.scheduling.store import plan_items, schedule_item, write_plans
from notify_core.store import tables
from notify_core.store.sqlite import SqliteStore
from tests.scheduling.conftest import STORE_DAY, STORE_NOW, campaigns, candidates, users

DAY = STORE_DAY
ZONES = ["Europe/London", "America/New_York", "Asia/Kolkata", "Australia/Adelaide", "Asia/Kathmandu", "UTC"]
CAMPS = campaigns([(f"c{j:02d}", 1 + j % 5, (j % 3) * 24, 40 if j % 7 == 0 else None) for j in range(30)])


def _users(n: int) -> pl.DataFrame:
    return users([(f"u{i:04d}", ZONES[i % len(ZONES)], 1 + i % 5, 22 if i % 3 else None, 8 if i % 3 else None)
                  for i in range(n)])


def _candidates(n: int, seed: int = 7) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    return candidates([(f"u{i:04d}", f"c{j:02d}", float(round(rng.random(), 9)))
                       for i in range(n) for j in rng.choice(30, 8, replace=False).tolist()])


def _rows(store: SqliteStore, name: str) -> list[tuple[Any, ...]]:
    """Every stored row of a table as the file holds it: keys, TTL column and the decoded item."""
    import orjson

    rows = store.connection().execute(f'SELECT pk, sk, ttl, body FROM "{name}" ORDER BY pk, sk').fetchall()
    return [(pk, sk, ttl, orjson.loads(body)) for pk, sk, ttl, body in rows]


def _state(store: SqliteStore) -> dict[str, list[tuple[Any, ...]]]:
    return {name: _rows(store, name) for name in (tables.PLANS, tables.SCHEDULES, tables.CAMPAIGN_STATS)}


def _item_by_item(store: SqliteStore, plan: pl.DataFrame) -> None:
    """What write_plans did for new users before the bulk path: dict items through batch_put."""
    from notify_core.delivery.feedback import add_campaign_counts

    items = plan_items(plan)
    store.table(tables.PLANS).batch_put(items)
    store.table(tables.SCHEDULES).batch_put(schedule_item(i) for i in items)
    counts: dict[tuple[str, str], int] = {}
    for item in items:
        counts[(item["campaign_id"], DAY.isoformat())] = counts.get((item["campaign_id"], DAY.isoformat()), 0) + 1
    add_campaign_counts(store, counts, field="planned")


def test_bulk_write_leaves_the_store_exactly_as_the_item_path(tmp_path: Path) -> None:
    us = _users(300)
    plan = plan_users(_candidates(300), us, CAMPS, plan_day=DAY).frame
    assert plan.height > 300
    bulk = SqliteStore(tmp_path / "bulk.sqlite", clock=ManualClock(STORE_NOW))
    items = SqliteStore(tmp_path / "items.sqlite", clock=ManualClock(STORE_NOW))
    summary = write_plans(bulk, plan, user_ids=us["user_id"].to_list(), plan_day=DAY.isoformat())
    _item_by_item(items, plan)
    assert summary.inserted == plan.height
    assert _state(bulk) == _state(items)  # keys, TTL column, every attribute, campaign counts
    # and a re-plan of the same inputs goes through the per-item comparison and writes nothing
    again = write_plans(bulk, plan, user_ids=us["user_id"].to_list(), plan_day=DAY.isoformat())
    assert again.written == 0 and again.unchanged == plan.height
    bulk.close()
    items.close()


def test_mixed_chunk_compares_stored_users_and_bulk_writes_new_ones(tmp_path: Path) -> None:
    us = _users(120)
    store = SqliteStore(tmp_path / "s.sqlite", clock=ManualClock(STORE_NOW))
    first = plan_users(_candidates(120), us, CAMPS, plan_day=DAY).frame
    old_half = first.filter(pl.col("user_id") < "u0060")
    write_plans(store, old_half, user_ids=[f"u{i:04d}" for i in range(60)], plan_day=DAY.isoformat())
    changed = plan_users(_candidates(120, seed=8), us, CAMPS, plan_day=DAY).frame
    summary = write_plans(store, changed, user_ids=us["user_id"].to_list(), plan_day=DAY.isoformat())
    new_half = changed.filter(pl.col("user_id") >= "u0060")
    assert summary.inserted >= new_half.height and summary.cancelled > 0
    pending = {i["notification_id"] for i in store.table(tables.PLANS).scan() if i["status"] == "pending"}
    assert pending == set(changed["notification_id"].to_list())
    sched = {i["notification_id"] for i in store.table(tables.SCHEDULES).scan() if i["status"] == "pending"}
    assert sched == pending
    store.close()


@pytest.mark.parametrize("pipeline", [False, True])
def test_pipelined_chunks_write_what_one_chunk_writes(tmp_path: Path, pipeline: bool) -> None:
    us, cands = _users(200), _candidates(200)
    whole = SqliteStore(tmp_path / "whole.sqlite", clock=ManualClock(STORE_NOW))
    chunked = SqliteStore(tmp_path / "chunked.sqlite", clock=ManualClock(STORE_NOW))
    one = plan_and_store(whole, users=us, campaigns=CAMPS, candidates=cands, plan_day=DAY, chunk_users=50)
    asked: list[int] = []

    def source(ids: list[str]) -> pl.DataFrame:  # candidates asked chunk by chunk
        asked.append(len(ids))
        return cands.filter(pl.col("user_id").is_in(ids))

    run = plan_and_store(chunked, users=us, campaigns=CAMPS, candidates=source, plan_day=DAY, chunk_users=50,
                         pipeline=pipeline)
    assert asked == [50, 50, 50, 50]
    assert run.writes == one.writes and run.stats.notifications == one.stats.notifications
    assert _state(chunked) == _state(whole)
    assert set(run.seconds) == {"candidates", "state", "plan", "write"}
    whole.close()
    chunked.close()


_CHILD = textwrap.dedent("""
    import sys, time
    from notify_core.clock import ManualClock
    from notify_core.scheduling.service import plan_and_store
    from notify_core.store.sqlite import SqliteStore
    from tests.scheduling import test_bulk_write as t
    store = SqliteStore(sys.argv[1], clock=ManualClock(t.STORE_NOW))
    def slow(done, total):  # give the parent time to kill us between chunks and mid-write
        print(done, flush=True)
        time.sleep(0.2)
    plan_and_store(store, users=t._users(400), campaigns=t.CAMPS, candidates=t._candidates(400), plan_day=t.DAY,
                   chunk_users=40, pipeline=True, progress=slow)
    print("done", flush=True)
""")


def test_kill_9_mid_run_then_rerun_ends_as_a_clean_run(tmp_path: Path) -> None:
    """Kill -9 while chunks are being written: every stored schedule item has its plan item (plans are
    written first), and a re-run ends with exactly the clean run's Store, inserting only what was missing."""
    path = tmp_path / "killed.sqlite"
    root = Path(__file__).resolve().parents[2]
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(path)], cwd=root, stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": os.pathsep.join(  # keep the caller's (faketime's sleep)
                                     filter(None, [str(root), os.environ.get("PYTHONPATH")]))})
    try:
        assert child.stdout is not None
        for _ in range(3):  # a few chunks written, more in flight
            line = child.stdout.readline()
            assert line.strip().isdigit(), line
        time.sleep(0.05)
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait(timeout=60)
    assert child.returncode == -signal.SIGKILL

    killed = SqliteStore(path, clock=ManualClock(STORE_NOW))
    plans = {(i["user_id"], i["notification_id"]) for i in killed.table(tables.PLANS).scan()}
    sched = {(i["user_id"], i["notification_id"]) for i in killed.table(tables.SCHEDULES).scan()}
    assert plans and sched <= plans
    us, cands = _users(400), _candidates(400)
    rerun = plan_and_store(killed, users=us, campaigns=CAMPS, candidates=cands, plan_day=DAY, chunk_users=40,
                           pipeline=True)
    clean = SqliteStore(tmp_path / "clean.sqlite", clock=ManualClock(STORE_NOW))
    first = plan_and_store(clean, users=us, campaigns=CAMPS, candidates=cands, plan_day=DAY, chunk_users=40)
    assert rerun.writes.inserted == first.writes.inserted - len(plans) > 0  # killed mid-run; nothing twice
    assert rerun.writes.cancelled == 0 and rerun.writes.moved == 0
    state, want = _state(killed), _state(clean)
    assert state[tables.PLANS] == want[tables.PLANS] and state[tables.SCHEDULES] == want[tables.SCHEDULES]
    # The campaigns' planned counters are added after a chunk's items: a kill in between leaves them
    # short (never over), as the item path always did.
    counts = {r[0]: r[3]["planned"] for r in state[tables.CAMPAIGN_STATS]}
    assert all(counts.get(c, 0) <= n for c, n in {r[0]: r[3]["planned"] for r in want[tables.CAMPAIGN_STATS]}.items())
    killed.close()
    clean.close()



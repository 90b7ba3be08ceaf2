"""A user erased while a plan run is in flight: the run read them before the erasure and writes their plans
and schedule items after it (the delivery worker would send them: a missing profile means "send"). The run
reads the erasure register again after its last write and queues such users for the sweep, as ingestion
does (erasure_queue.requeue_erased_since); the sweep then removes what the run wrote."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from notify_core.clock import ManualClock
from notify_core.erasure import erase_user, sweep_erasures
from notify_core.erasure_queue import queued_erasures
from notify_core.scheduling import service
from notify_core.scheduling.service import plan_and_store, plan_for_users
from notify_core.store import tables
from notify_core.store.sqlite import SqliteStore
from tests.scheduling.conftest import STORE_DAY, STORE_NOW, campaigns, candidates, users

CAMPS = campaigns([(f"c{j}", 3, 0, None) for j in range(3)])
CANDS = candidates([(u, f"c{j}", 0.9) for u in ("alice", "bob") for j in range(3)])


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[SqliteStore, ManualClock]]:
    clock = ManualClock(STORE_NOW)
    store = SqliteStore(tmp_path / "s.sqlite", clock=clock)
    for u in ("alice", "bob"):
        store.table(tables.USERS).put({"pk": u, "sk": tables.PROFILE_SK, "user_id": u, "timezone": "UTC"})
    yield store, clock
    store.close()


def _bobs(store: SqliteStore) -> tuple[int, int]:
    plans = sum(1 for _ in store.table(tables.PLANS).query("bob"))
    schedules = sum(1 for i in store.table(tables.SCHEDULES).scan() if i.get("user_id") == "bob")
    return plans, schedules


def test_a_user_erased_during_the_plan_run_is_queued_and_swept(world: tuple[SqliteStore, ManualClock]) -> None:
    store, clock = world

    def source(user_ids: list[str]) -> pl.DataFrame:
        erase_user("bob", store=store, clock=clock)  # meanwhile, DELETE /users/bob runs to completion
        return CANDS.filter(pl.col("user_id").is_in(user_ids))

    run = plan_and_store(store, users=users([("alice", "UTC", 5, None, None), ("bob", "UTC", 5, None, None)]),
                         campaigns=CAMPS, candidates=source, plan_day=STORE_DAY, now=None, pipeline=False,
                         writer_process=False)
    assert set(queued_erasures(store)) == {"bob"}  # the worker holds bob's sends until the sweep
    assert _bobs(store) != (0, 0)  # what the run wrote back, before the sweep
    sweep_erasures(store)
    assert _bobs(store) == (0, 0)
    assert queued_erasures(store) == {}
    assert sum(1 for _ in store.table(tables.PLANS).query("alice")) > 0
    assert run.erasures_requeued == 1 and run.metadata()["erasures_requeued"] == 1


def test_plan_for_users_reads_the_register_before_the_profiles(world: tuple[SqliteStore, ManualClock],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    store, clock = world
    store.table(tables.CAMPAIGNS).batch_put([
        {"pk": f"c{j}", "sk": tables.CAMPAIGN_SK,
         "campaign_id": f"c{j}", "priority": 3, "cooldown_hours": 0, "status": "active"} for j in range(3)])
    real = service.campaigns_from_store

    def erased_meanwhile(*args: Any, **kwargs: Any) -> pl.DataFrame:
        erase_user("bob", store=store, clock=clock)  # after bob's profile was read
        return real(*args, **kwargs)

    monkeypatch.setattr(service, "campaigns_from_store", erased_meanwhile)
    monkeypatch.setattr(service, "store_cosine", lambda _store: lambda ids, _cids, _k: CANDS.filter(
        pl.col("user_id").is_in(ids)))
    run = plan_for_users(store, ["alice", "bob"], plan_day=STORE_DAY, now=STORE_NOW)
    sweep_erasures(store)
    assert _bobs(store) == (0, 0)
    assert run.erasures_requeued == 1


def test_a_run_that_fails_after_writing_an_erased_users_plans_still_queues_them(
        world: tuple[SqliteStore, ManualClock]) -> None:
    """The run writes bob's chunk after his erasure, then fails on a later chunk: bob is queued all the same,
    and the run's own error is what the caller sees."""
    store, clock = world
    store.table(tables.USERS).put({"pk": "carol", "sk": tables.PROFILE_SK, "user_id": "carol", "timezone": "UTC"})

    def source(user_ids: list[str]) -> pl.DataFrame:
        if "bob" in user_ids:
            erase_user("bob", store=store, clock=clock)
        if "carol" in user_ids:
            raise RuntimeError("the candidate source failed")
        return CANDS.filter(pl.col("user_id").is_in(user_ids))

    with pytest.raises(RuntimeError, match="candidate source failed"):
        plan_and_store(store, users=users([(u, "UTC", 5, None, None) for u in ("alice", "bob", "carol")]),
                       campaigns=CAMPS, candidates=source, plan_day=STORE_DAY, now=None, pipeline=False,
                       writer_process=False, chunk_users=1)
    assert set(queued_erasures(store)) == {"bob"}
    assert _bobs(store) != (0, 0)  # his chunk was written before the failure
    sweep_erasures(store)
    assert _bobs(store) == (0, 0)

"""The recommender's candidates ranked in worker processes (notify_core/scheduling/candidate_pool.py): the same
frame and the same stored day as one process, the run's index version in every worker, and a worker killed
with SIGKILL in the middle of a chunk failing the plan with an error that names it, instead of a hang."""

from __future__ import annotations

import functools
import multiprocessing
import os
import signal
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from notify_core.clock import ManualClock
from notify_core.errors import BackendError
from notify_core.recommend.artefacts import LocalArtefactStore
from notify_core.scheduling import candidate_pool
from notify_core.scheduling.candidate_pool import CandidatePool
from notify_core.scheduling.service import candidate_source, plan_for_users, store_cosine
from notify_core.store import tables
from notify_core.store.sqlite import SqliteStore
from tests.recommend.conftest import World, make_world

USERS = ["u1", "u2", "u_new"]


def world_backends(root: Path, now: float) -> tuple[SqliteStore, LocalArtefactStore]:
    """What a worker opens: the world's Store file (its clock standing where the world's does) and artefacts."""
    return SqliteStore(root / "store.sqlite", clock=ManualClock(now)), LocalArtefactStore(root / "artefacts")


class _DiesOnQuery:
    """A Store whose table reads SIGKILL their own process when they reach ``victim``'s partition."""

    def __init__(self, inner: SqliteStore, victim: str) -> None:
        self.inner, self.victim = inner, victim

    def table(self, name: str) -> Any:
        table, victim = self.inner.table(name), self.victim

        class _Table:
            def __getattr__(self, attr: str) -> Any:
                return getattr(table, attr)

            def query(self, pk: str, **options: Any) -> Any:
                if pk == victim:
                    os.kill(os.getpid(), signal.SIGKILL)
                return table.query(pk, **options)

            def query_columns(self, pk: str, attributes: Any, **options: Any) -> Any:
                if pk == victim:
                    os.kill(os.getpid(), signal.SIGKILL)
                return table.query_columns(pk, attributes, **options)

            def query_many(self, pks: Any, **options: Any) -> Any:
                if victim in pks:
                    os.kill(os.getpid(), signal.SIGKILL)
                return table.query_many(pks, **options)

            def query_columns_many(self, pks: Any, attributes: Any, **options: Any) -> Any:
                if victim in pks:
                    os.kill(os.getpid(), signal.SIGKILL)
                return table.query_columns_many(pks, attributes, **options)

        return _Table()

    def __getattr__(self, attr: str) -> Any:
        return getattr(self.inner, attr)


def dying_backends(root: Path, now: float, victim: str) -> tuple[Any, LocalArtefactStore]:
    store, artefacts = world_backends(root, now)
    return _DiesOnQuery(store, victim), artefacts


def _now(world: World) -> datetime:
    return datetime.fromtimestamp(world.clock.now(), UTC)


def _source(world: World, **options: Any) -> Any:
    return candidate_source(world.store, world.campaigns["campaign_id"].to_list(), artefacts=world.artefacts,
                            fallback=store_cosine(world.store), k=5, now=_now(world), **options)


def _one_user_a_block(monkeypatch: pytest.MonkeyPatch) -> None:
    """Blocks of one user (here and in each worker's tasks), so three users spread over both workers."""
    from notify_core.recommend import recommender

    monkeypatch.setattr(candidate_pool, "SEARCH_BLOCK", 1)
    monkeypatch.setattr(recommender, "SEARCH_BLOCK", 1)


def test_the_pool_ranks_what_the_planning_process_ranks_with_the_runs_version(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _one_user_a_block(monkeypatch)
    world = make_world(tmp_path)
    inline, name = _source(world)
    expected = inline(USERS)
    pool, pooled_name = _source(world, workers=2, reopen=functools.partial(world_backends, tmp_path,
                                                                            world.clock.now()))
    assert isinstance(pool, CandidatePool) and name == pooled_name == "recommender"
    world.build_version(vectors=world.vectors[::-1].copy())  # published after the run began: another ranking
    with pool:
        got = pool(USERS)
        assert got.equals(expected), (got, expected)
        assert pool(["u2"]).equals(expected.filter(expected["user_id"] == "u2"))  # fewer users than workers
    newer, _ = _source(world)
    assert not newer(USERS).equals(expected)  # the new version does rank differently: the pin is what held
    assert not multiprocessing.active_children()
    world.store.close()


def _day(store: SqliteStore) -> list[dict[str, Any]]:
    return [item for name in (tables.PLANS, tables.SCHEDULES)
            for item in sorted(store.table(name).scan(), key=lambda i: (i["pk"], i["sk"]))]


def test_a_day_planned_with_the_pool_is_the_day_planned_in_one_process(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(candidate_pool, "POOL_MIN_USERS", 0)  # three users: start the pool all the same
    _one_user_a_block(monkeypatch)
    one, pooled = make_world(tmp_path / "one"), make_world(tmp_path / "pool")
    now = _now(one)
    run_one = plan_for_users(one.store, USERS, plan_day=now.date(), now=now, artefacts=one.artefacts, k=5,
                             candidate_workers=1)
    run_pool = plan_for_users(pooled.store, USERS, plan_day=now.date(), now=now, artefacts=pooled.artefacts, k=5,
                              candidate_workers=2, chunk_users=2,
                              reopen=functools.partial(world_backends, tmp_path / "pool", pooled.clock.now()))
    assert run_one.candidate_source == run_pool.candidate_source == "recommender"
    assert run_pool.stats.notifications == run_one.stats.notifications > 0
    day = _day(one.store)
    assert day and day == _day(pooled.store)
    assert not multiprocessing.active_children()
    one.store.close()
    pooled.store.close()


def test_a_worker_killed_mid_chunk_fails_the_plan_naming_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(candidate_pool, "POOL_MIN_USERS", 0)
    world = make_world(tmp_path)
    now = _now(world)
    with pytest.raises(BackendError, match="candidate worker process died"):
        plan_for_users(world.store, USERS, plan_day=now.date(), now=now, artefacts=world.artefacts, k=5,
                       candidate_workers=2, reopen=functools.partial(dying_backends, tmp_path, world.clock.now(), "u2"))
    assert not multiprocessing.active_children()  # the pool is shut down, no worker left behind
    assert _day(world.store) == []  # the one chunk never reached the writer
    # planned again without the fault, the day completes
    run = plan_for_users(world.store, USERS, plan_day=now.date(), now=now, artefacts=world.artefacts, k=5)
    assert run.stats.notifications > 0 and _day(world.store)
    world.store.close()


def test_one_worker_per_core_the_process_may_use_not_per_core_of_the_host() -> None:
    """0 means the cores this process may run on (affinity, a container's CPU quota), not os.cpu_count(): a
    pod limited to 2 CPUs on a 64-core node must not spawn 64 workers, each with the index in memory."""
    import subprocess
    import sys

    code = ("import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); "
            "from notify_core.scheduling.candidate_pool import worker_count as w; "
            "print(w(0, users=10**9), w(3, users=10**9), w(0, users=10), os.cpu_count() >= 1)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["1", "3", "1", "True"]


def test_the_pool_starts_from_20k_users_and_candidates_come_in_chunks_of_200k_by_default() -> None:
    """The README: "candidates are asked per chunk of users (200k by default)" and "the asset ranks in worker
    processes from 20k users"."""
    import inspect

    from notify_core.scheduling import service
    from notify_core.scheduling.candidate_pool import worker_count

    assert (worker_count(3, users=19_999), worker_count(3, users=20_000)) == (1, 3)
    for entry in (service.plan_and_store, service.plan_for_users, service.plan_from_lake):
        assert inspect.signature(entry).parameters["chunk_users"].default == 200_000, entry.__name__

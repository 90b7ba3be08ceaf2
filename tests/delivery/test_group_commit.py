"""The outcome group commit (:meth:`Outcomes.finish`): one sender at a time leads a commit of every
outcome waiting; each sender returns only once its own outcome is committed; a failed commit fails
exactly its batch and the lead passes on, so later outcomes still commit."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from notify_core.delivery import ManualClock, WorkerOptions
from notify_core.delivery.outcomes import Outcomes
from notify_core.errors import BackendError
from notify_core.store import tables
from notify_core.store.sqlite import SqliteStore

N = 800


def _claimed(store: SqliteStore, n: int) -> list[dict[str, Any]]:
    items = [{"pk": f"2026-11-24T10:05#{i % 16:02d}", "sk": f"u{i:05d}#n{i:05d}", "notification_id": f"n{i:05d}",
              "status": "claimed", "claim_token": f"t{i}"} for i in range(n)]
    store.table(tables.SCHEDULES).batch_put(items)
    return items


def _outcomes(store: SqliteStore, clock: ManualClock) -> Outcomes:
    return Outcomes(store, clock=clock, options=WorkerOptions(), channel_name="test", worker_id="w",
                    write_lock=threading.Lock(), on_campaign_counts=None)


def test_sixteen_senders_each_return_with_their_own_outcome_committed(store: SqliteStore,
                                                                       clock: ManualClock) -> None:
    items = _claimed(store, N)
    outcomes = _outcomes(store, clock)
    table = store.table(tables.SCHEDULES)
    commits: list[int] = []
    real = table.update_many

    def counting(updates: Any) -> Any:
        commits.append(len(updates))
        return real(updates)

    table.update_many = counting  # type: ignore[method-assign]

    def finish(i: int) -> bool:
        outcomes.finish(items[i], f"t{i}", {"status": "sent"})
        # returned: this sender's own outcome is in the Store, whoever led the commit
        return table.get(items[i]["pk"], items[i]["sk"])["status"] == "sent"

    with ThreadPoolExecutor(16) as pool:
        assert all(pool.map(finish, range(N)))
    assert sum(commits) == N and len(commits) < N  # grouped: fewer transactions than outcomes
    assert not outcomes._committing and not outcomes._finishes  # the lead was dropped, nothing left waiting


def test_a_failed_commit_fails_its_batch_and_the_next_outcomes_still_commit(store: SqliteStore,
                                                                            clock: ManualClock) -> None:
    items = _claimed(store, N)
    outcomes = _outcomes(store, clock)
    table = store.table(tables.SCHEDULES)
    real = table.update_many
    failed = threading.Event()

    def fail_once(updates: Any) -> Any:
        if not failed.is_set():
            failed.set()
            raise BackendError("disk full")
        return real(updates)

    table.update_many = fail_once  # type: ignore[method-assign]

    def finish(i: int) -> str:
        try:
            outcomes.finish(items[i], f"t{i}", {"status": "sent"})
        except BackendError:
            return "error"
        return "ok"

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(finish, range(N)))
    errors = results.count("error")
    assert 1 <= errors < N
    statuses = [table.get(i["pk"], i["sk"])["status"] for i in items]
    # exactly the failed batch is still claimed (its lease will expire and it is re-sent); the rest committed
    assert [r == "error" for r in results] == [s == "claimed" for s in statuses]
    assert not outcomes._committing and not outcomes._finishes


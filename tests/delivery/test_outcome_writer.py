"""The group-commit outcome writer (notify_core.delivery.commit): senders never wait on a commit, a failed
commit loses nothing (the claim is re-sent with the same Idempotency-Key), and the number of sends a crash
could repeat stays bounded."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Sequence
from typing import Any

from notify_core.clock import ManualClock
from notify_core.delivery import DeliveryWorker, WorkerOptions
from notify_core.delivery.commit import OutcomeWriter
from notify_core.delivery.synthetic import seed_due
from notify_core.errors import BackendError
from notify_core.store import tables
from notify_core.store.port import Condition, Item, Update
from notify_core.store.sqlite import SqliteStore
from tests.delivery.conftest import ScriptedChannel, minute_start

OPTS = WorkerOptions(concurrency=4, lookback_minutes=3, prefetch_s=0.0, lease_s=10.0, heartbeat_s=0.0)


class _FailingOutcomes:
    """Wraps the schedules table: the first ``fail`` outcome commits (updates carrying ``outcome_at``) raise."""

    def __init__(self, inner: Any, fail: int) -> None:
        self.inner = inner
        self.fail = fail

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def update_many(self, updates: Sequence[Update]) -> list[Item | None]:
        if self.fail > 0 and any("outcome_at" in u.set for u in updates):
            self.fail -= 1
            raise BackendError("disk full (injected)")
        result: list[Item | None] = self.inner.update_many(updates)
        return result


def test_a_failed_outcome_commit_is_resent_with_the_same_key_never_lost(
        store: SqliteStore, clock: ManualClock) -> None:
    items = seed_due(store, n=40, start=minute_start(clock.now()))
    channel = ScriptedChannel()
    worker = DeliveryWorker(store, channel, public_base_url="http://t", clock=clock, options=OPTS)
    writer = worker.outcomes.writer
    writer._table = _FailingOutcomes(writer._table, fail=1)  # type: ignore[assignment]
    worker.run_pass()
    assert writer.failed > 0  # some outcomes were never recorded: their items are still claimed
    statuses = Counter(str(i["status"]) for i in store.table(tables.SCHEDULES).scan())
    assert statuses["claimed"] == writer.failed and statuses["sent"] == 40 - writer.failed
    assert store.table(tables.DELIVERIES).batch_get(
        [(i["notification_id"], "attempt#1") for i in items]).__len__() == 40 - writer.failed  # no derived row
    clock.advance(70)  # the lease has run out and the minute passed: its re-scan re-claims and re-sends them
    worker.run_until_idle()
    worker.close()
    sends = Counter(key for _nid, _attempt, key in channel.calls)
    assert set(sends) == {i["notification_id"] for i in items}  # nothing lost
    assert sum(c - 1 for c in sends.values()) == writer.failed  # exactly the unrecorded ones, same key
    assert Counter(str(i["status"]) for i in store.table(tables.SCHEDULES).scan()) == {"sent": 40}


def test_senders_are_held_to_max_pending_unrecorded_sends_while_the_writer_is_blocked(
        store: SqliteStore, clock: ManualClock) -> None:
    """With the commit stalled, senders stop after ``max_pending`` sends: that is all a kill -9 at that
    moment could make the worker send twice. Released, everything is delivered once."""
    seed_due(store, n=200, start=minute_start(clock.now()))
    release = threading.Event()

    class _Stalled:
        def __init__(self, inner: Any) -> None:
            self.inner = inner

        def update_many(self, updates: Sequence[Update]) -> list[Item | None]:
            release.wait(30)
            result: list[Item | None] = self.inner.update_many(updates)
            return result

    channel = ScriptedChannel()
    worker = DeliveryWorker(store, channel, public_base_url="http://t", clock=clock,
                            options=WorkerOptions(concurrency=8, lookback_minutes=3, prefetch_s=0.0, heartbeat_s=0.0))
    worker.outcomes.writer._table = _Stalled(worker.outcomes.writer._table)  # type: ignore[assignment]
    runner = threading.Thread(target=worker.run_pass)
    runner.start()
    try:
        for _ in range(100):  # let the senders run as far as they can
            if len(channel.calls) >= 8:
                break
            threading.Event().wait(0.02)
        threading.Event().wait(0.3)
        assert len(channel.calls) == 8  # one per sender, then every sender waits for the commit
    finally:
        release.set()
    runner.join(30)
    worker.close()
    assert len(channel.calls) == 200
    assert Counter(str(i["status"]) for i in store.table(tables.SCHEDULES).scan()) == {"sent": 200}


def test_drain_returns_after_the_commit_and_close_stops_the_thread(store: SqliteStore) -> None:
    table = store.table(tables.SCHEDULES)
    table.batch_put([{"pk": "p", "sk": str(i), "claim_token": "t"} for i in range(50)])
    writer = OutcomeWriter(table, write_lock=threading.Lock(), worker_id="w", max_pending=4)
    for i in range(50):
        writer.submit(Update("p", str(i), {"status": "sent"}, Condition.matches(claim_token="t" if i else "x")))
    writer.drain()
    assert writer.committed == 49 and writer.lost == 1
    assert table.get("p", "1")["status"] == "sent" and "status" not in table.get("p", "0")
    writer.close()
    assert writer._thread is None

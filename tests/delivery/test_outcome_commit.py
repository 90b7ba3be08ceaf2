"""The group commit of outcomes (Outcomes.finish): a commit that fails after the sends loses nothing (the
claims are re-sent with the same Idempotency-Key) and leaves no derived row to be counted twice."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from notify_core.clock import ManualClock
from notify_core.delivery import DeliveryWorker, WorkerOptions
from notify_core.delivery.outcomes import OutcomeHealth
from notify_core.delivery.synthetic import seed_due
from notify_core.errors import BackendError
from notify_core.store import tables
from notify_core.store.port import Item, Update
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
    failing = _FailingOutcomes(worker.outcomes._schedules, fail=1)
    worker.outcomes._schedules = failing  # type: ignore[assignment]
    failed = 40 - worker.run_pass().delivered
    assert failed > 0  # some outcomes were never recorded: their items are still claimed
    statuses = Counter(str(i["status"]) for i in store.table(tables.SCHEDULES).scan())
    assert statuses["claimed"] == failed and statuses["sent"] == 40 - failed
    assert store.table(tables.DELIVERIES).batch_get(
        [(i["notification_id"], "attempt#1") for i in items]).__len__() == 40 - failed  # no derived row
    clock.advance(70)  # the lease has run out and the minute passed: its re-scan re-claims and re-sends them
    worker.run_until_idle()
    worker.close()
    sends = Counter(key for _nid, _attempt, key in channel.calls)
    assert set(sends) == {i["notification_id"] for i in items}  # nothing lost
    assert sum(c - 1 for c in sends.values()) == failed  # exactly the unrecorded ones, same key
    assert Counter(str(i["status"]) for i in store.table(tables.SCHEDULES).scan()) == {"sent": 40}


def test_while_every_outcome_is_refused_the_senders_stop_sending(store: SqliteStore, clock: ManualClock) -> None:
    """The Store refuses every outcome (its disk full): after ``OutcomeHealth.refusing_after`` refused in a
    row the thread senders leave the rest of the batch claimed and unsent (each would be a re-send later),
    and once the Store takes writes again a later pass sends each of them once."""
    items = seed_due(store, n=40, start=minute_start(clock.now()))
    channel = ScriptedChannel()
    worker = DeliveryWorker(store, channel, public_base_url="http://t", clock=clock, options=OPTS)
    failing = _FailingOutcomes(worker.outcomes._schedules, fail=10_000)
    worker.outcomes._schedules = failing  # type: ignore[assignment]
    assert worker.run_pass().delivered == 0
    sent_while_refused = len(channel.calls)
    # each of the 4 senders may be mid-send when the third refusal lands; without the stop it was all 40
    assert worker.health.refusing_after <= sent_while_refused <= worker.health.refusing_after + OPTS.concurrency
    failing.fail = 0  # the disk has room again
    clock.advance(70)  # the leases have run out and the minute passed: re-claimed and sent
    worker.run_until_idle()
    worker.close()
    sends = Counter(key for _nid, _attempt, key in channel.calls)
    assert set(sends) == {i["notification_id"] for i in items}  # nothing lost
    assert sum(c - 1 for c in sends.values()) == sent_while_refused  # re-sent: only what went out unrecorded
    assert Counter(str(i["status"]) for i in store.table(tables.SCHEDULES).scan()) == {"sent": 40}


def test_one_failed_group_commit_counts_once_however_many_senders_it_reaches() -> None:
    """The senders stop after 3 Store errors in a row, not after 3 outcomes: a group commit's one error
    reaches each of its senders, and counted per outcome one transient failure stopped every sender."""
    health = OutcomeHealth(refusing_after=3)
    commit_error = BackendError("disk I/O error during the outcome commit")
    for _ in range(8):  # the 8 outcomes of one failed commit
        health.failed(commit_error)
    assert not health.refusing
    health.failed(BackendError("the next commit"))
    assert not health.refusing
    health.failed(BackendError("and the one after"))
    assert health.refusing
    health.ok()
    assert not health.refusing
    health.failed(BackendError("a new run of errors starts from one"))
    assert not health.refusing

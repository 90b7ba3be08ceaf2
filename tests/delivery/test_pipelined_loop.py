"""The pipelined ``run_forever`` loop (the ``notify worker`` path): the next batch is claimed while the
senders work through the current one; every item is still sent once with its derived rows, and stopping
finishes the batch in hand (nothing stays claimed); the derived rows it flushes while sending are written
so that a crash between them is repaired."""

from __future__ import annotations

import threading
import time
from collections import Counter
from datetime import timedelta

import pytest

from notify_core.delivery import DeliveryWorker, ManualClock, WorkerOptions
from notify_core.delivery.channels import Message, SendResult
from notify_core.delivery.summary import PassSummary
from notify_core.delivery.synthetic import seed_due
from notify_core.errors import BackendError
from notify_core.store import tables
from notify_core.store.sqlite import SqliteStore
from tests.delivery.conftest import ScriptedChannel, minute_start, run_loop_until, with_async_sender

BATCH = 50
OPTS = WorkerOptions(concurrency=4, lookback_minutes=3, prefetch_s=0.0, max_batch=BATCH)


def _statuses(store: SqliteStore) -> Counter[str]:
    return Counter(str(i["status"]) for i in store.table(tables.SCHEDULES).scan())


class _FirstSendWaits(ScriptedChannel):
    """Holds the very first send until the Store shows the *next* batch claimed too (or 10 s pass): with
    an item of batch 1 still in its send, batch 2 can only have left ``pending`` if the loop is pipelined."""

    def __init__(self, store: SqliteStore) -> None:
        super().__init__()
        self.store = store
        self.overlapped: bool | None = None
        self._first = threading.Lock()

    def send(self, message: Message, *, idempotency_key: str) -> SendResult:
        if self._first.acquire(blocking=False):  # only the first call waits; never released
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                if sum(_statuses(self.store).values()) - _statuses(self.store)["pending"] >= 2 * BATCH:
                    self.overlapped = True
                    break
                time.sleep(0.01)
            else:
                self.overlapped = False
        return super().send(message, idempotency_key=idempotency_key)


def _run(worker: DeliveryWorker, *, until: int) -> list[PassSummary]:
    return run_loop_until(worker, lambda w: w.totals.delivered >= until)


@pytest.fixture(params=["threads", "async"])
def senders(request: pytest.FixtureRequest) -> str:
    """The loop's two kinds of senders: the thread pool, and the event loop (a channel with ``async_sender``)."""
    return str(request.param)


def test_the_next_batch_is_claimed_while_the_current_one_is_sent(
    store: SqliteStore, clock: ManualClock, senders: str,
) -> None:
    n = 12 * BATCH
    items = seed_due(store, n=n, start=minute_start(clock.now()), with_plans=True)
    channel = _FirstSendWaits(store)
    if senders == "async":
        with_async_sender(channel)
    worker = DeliveryWorker(store, channel, public_base_url="http://t", clock=clock, options=OPTS)
    steps = _run(worker, until=n)
    assert channel.overlapped is True
    assert max(s.in_flight for s in steps) <= BATCH  # one batch ahead at most, beside the one being sent
    # each item sent once, every outcome and derived row written (the last flush happens on the way out)
    assert Counter(c[2] for c in channel.calls) == Counter(i["notification_id"] for i in items)
    assert worker.totals.delivered == n and _statuses(store) == {"sent": n}
    assert len(list(store.table(tables.DELIVERIES).scan())) == n
    assert sum(len(store.table(tables.SENDS).query(u)) for u in {i["user_id"] for i in items}) == n
    assert all(p["status"] == "sent" for p in list(store.table(tables.PLANS).scan()))


def test_stopping_finishes_the_batch_in_hand_and_leaves_nothing_claimed(
    store: SqliteStore, clock: ManualClock, senders: str,
) -> None:
    n = 6 * BATCH
    seed_due(store, n=n, start=minute_start(clock.now()))
    channel = ScriptedChannel() if senders == "threads" else with_async_sender(ScriptedChannel())
    worker = DeliveryWorker(store, channel, public_base_url="http://t", clock=clock, options=OPTS)
    stop = threading.Event()

    def on_pass(step: PassSummary) -> None:
        if step.in_flight:  # SIGTERM right after the first batch went out (the scan may take a step or two)
            stop.set()

    worker.run_forever(stop, on_pass=on_pass)
    worker.close()
    statuses = _statuses(store)
    assert set(statuses) <= {"sent", "pending"}  # no claim left to wait out a lease
    assert statuses["sent"] == len(channel.calls) == worker.totals.delivered >= BATCH
    assert len(list(store.table(tables.DELIVERIES).scan())) == statuses["sent"]
    # a restarted worker delivers the rest, once
    again = DeliveryWorker(store, channel, public_base_url="http://t", clock=clock, options=OPTS)
    _run(again, until=statuses["pending"])
    assert _statuses(store) == {"sent": n}
    assert len(channel.calls) == len({c[2] for c in channel.calls}) == n


def test_a_failure_between_derived_tables_is_repaired_when_the_minute_closes(
    store: SqliteStore, clock: ManualClock, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The flush writes an outcome's deliveries row last: a crash after its sends row but before its plans
    row leaves no deliveries row, which is what the minute-close repair looks for, so all three come back
    (written first, the deliveries row would hide the missing plans row from the repair for good)."""
    items = seed_due(store, n=30, start=minute_start(clock.now()) - timedelta(minutes=2), with_plans=True)
    plans = store.table(tables.PLANS)

    def crash(rows: list[dict[str, object]]) -> None:
        raise BackendError("killed between the derived tables")

    worker = DeliveryWorker(store, ScriptedChannel(), public_base_url="http://t", clock=clock, options=OPTS)
    monkeypatch.setattr(plans, "batch_put", crash)
    with pytest.raises(BackendError):
        worker.run_pass()
    monkeypatch.undo()
    assert _statuses(store) == {"sent": 30}
    assert all(store.table(tables.DELIVERIES).get(i["notification_id"], "attempt#1") is None for i in items)
    clock.advance(OPTS.lease_s)  # the crashed worker's rows may still be queued until its lease is over
    fresh = DeliveryWorker(store, ScriptedChannel(), public_base_url="http://t", clock=clock, options=OPTS)
    fresh.run_until_idle()
    fresh.close()
    assert fresh.totals.repaired == 30
    for i in items:
        assert store.table(tables.DELIVERIES).get(i["notification_id"], "attempt#1")["outcome"] == "sent"
        assert len(store.table(tables.SENDS).query(i["user_id"])) == 1
        assert plans.get(i["user_id"], tables.plan_sk(i["plan_day"], i["notification_id"]))["status"] == "sent"

"""The ``notify worker`` loop's event-loop senders (notify_core/delivery/async_senders.py), against a real
SQLite Store and the real loopback sink: every answer a receiver gives ends in the Store as the threaded
senders record it, a user's opt-out is still honoured at send time, a failed outcome commit leaves the
claim to be re-sent with the same key, and the pipelined loop's guarantees hold on the async path too."""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest

from notify_core.delivery import DeliveryWorker, ManualClock, WebhookChannel, WorkerOptions
from notify_core.delivery.synthetic import seed_due
from notify_core.errors import BackendError
from notify_core.preferences import Preferences, get_preferences, put_preferences
from notify_core.store import tables
from notify_core.store.sqlite import SqliteStore
from tests.delivery.conftest import SECRET, AsyncScripted, minute_start, run_loop_until, start_sink

OPTS = WorkerOptions(concurrency=8, lookback_minutes=3, prefetch_s=0.0, max_batch=100, heartbeat_s=0.0)


def _loop(worker: DeliveryWorker, *, done: int) -> None:
    """``run_forever`` until ``done`` items have an outcome."""
    def ended(w: DeliveryWorker) -> bool:
        t = w.totals
        return t.delivered + t.retried + t.dead_lettered + t.suppressed + t.lost_claims >= done

    run_loop_until(worker, ended)


def test_every_receiver_answer_ends_in_the_store_as_the_thread_senders_record_it(
    tmp_path: Path, store: SqliteStore, clock: ManualClock,
) -> None:
    """600 due, a sink answering 200 / 503 / 400 at random and checking every signature: each key arrives
    once; 200 -> sent with its sends/plans rows, 503 -> retry_scheduled with its retry index entry, 400 ->
    dead_lettered with its dead letter; one deliveries row per attempt, with the receiver's status code."""
    n = 600
    items = seed_due(store, n=n, start=minute_start(clock.now()), with_plans=True)
    sink = start_sink(tmp_path, "--secret", SECRET, "--fail-rate", "0.1", "--permanent-rate", "0.05")
    channel = WebhookChannel(sink.url, secret=SECRET, clock=clock, timeout_s=5.0)
    made: list[object] = []
    new_sender = channel.async_sender
    channel.async_sender = lambda: made.append(1) or new_sender()  # type: ignore[method-assign]
    worker = DeliveryWorker(store, channel, public_base_url="http://t", clock=clock, options=OPTS)
    started = time.monotonic()
    try:
        _loop(worker, done=n)
    finally:
        channel.close()
        receipts = sink.stop()
    looped_s = time.monotonic() - started
    assert len(made) == OPTS.concurrency  # the async path did the sending: one sender per coroutine
    assert all(r["sig"] == 1 for r in receipts)
    answer = {r["key"]: r["status"] for r in receipts}
    # Once in a loaded CI run (session 36), 300 of the 600 reached the sink: what the worker counted, the
    # Store's statuses and how long the loop ran tell a stalled worker from receipts the sink did not write.
    seen = (worker.totals.as_dict(), Counter(str(i.get("status")) for i in store.table(tables.SCHEDULES).scan()),
            f"loop {looped_s:.1f} s")
    assert len(receipts) == len(answer) == n, seen  # each key once
    expected = {200: "sent", 503: "retry_scheduled", 400: "dead_lettered"}
    schedules = {i["notification_id"]: i for i in store.table(tables.SCHEDULES).scan()}
    assert {k: s["status"] for k, s in schedules.items()} == {k: expected[v] for k, v in answer.items()}
    assert Counter(answer.values())[503] > 0 and Counter(answer.values())[400] > 0
    retries = {e["schedule_sk"] for e in store.table(tables.RETRIES).scan()}
    assert retries == {s["sk"] for s in schedules.values() if s["status"] == "retry_scheduled"}
    for item in items:
        nid = item["notification_id"]
        row = store.table(tables.DELIVERIES).get(nid, "attempt#1")
        assert row is not None and row["status_code"] == answer[nid]
        sent = answer[nid] == 200
        assert len(store.table(tables.SENDS).query(item["user_id"])) == int(sent)
        plan = store.table(tables.PLANS).get(item["user_id"], tables.plan_sk(item["plan_day"], nid))
        assert (plan["status"] == "sent") is sent
    dead = list(store.table(tables.DEAD_LETTERS).scan())
    assert sorted(d["notification_id"] for d in dead) == sorted(k for k, v in answer.items() if v == 400)
    assert worker.totals.delivered == Counter(answer.values())[200]


def test_an_opt_out_is_suppressed_unsent_on_the_async_path(store: SqliteStore, clock: ManualClock) -> None:
    items = seed_due(store, n=40, start=minute_start(clock.now()))
    quitter = items[3]["user_id"]
    put_preferences(store, quitter, get_preferences(store, quitter).model_copy(update={"unsubscribed": True}),
                    now=datetime.fromtimestamp(clock.now(), UTC))
    channel = AsyncScripted()
    worker = DeliveryWorker(store, channel, public_base_url="http://t", clock=clock, options=OPTS)
    _loop(worker, done=40)
    quit_ids = {i["notification_id"] for i in items if i["user_id"] == quitter}
    assert not quit_ids & {c[0] for c in channel.calls}
    statuses = {i["notification_id"]: i["status"] for i in store.table(tables.SCHEDULES).scan()}
    assert {k for k, v in statuses.items() if v == "suppressed"} == quit_ids
    assert worker.totals.suppressed == len(quit_ids) and worker.totals.delivered == 40 - len(quit_ids)
    row = store.table(tables.DELIVERIES).get(sorted(quit_ids)[0], "attempt#1")
    assert row["outcome"] == "suppressed" and row["detail"] == "unsubscribed"


def test_a_quiet_hour_set_since_the_plan_is_suppressed_unsent_on_the_async_path(
        store: SqliteStore, clock: ManualClock) -> None:
    items = seed_due(store, n=20, start=minute_start(clock.now()))
    sleeper = items[5]["user_id"]
    hour = datetime.fromtimestamp(clock.now(), UTC).hour
    put_preferences(store, sleeper, Preferences(quiet_start_hour=hour, quiet_end_hour=(hour + 1) % 24),
                    now=datetime.fromtimestamp(clock.now(), UTC))
    channel = AsyncScripted()
    worker = DeliveryWorker(store, channel, public_base_url="http://t", clock=clock, options=OPTS)
    _loop(worker, done=20)
    assert items[5]["notification_id"] not in {c[0] for c in channel.calls} and len(channel.calls) == 19
    item = next(i for i in store.table(tables.SCHEDULES).scan() if i["user_id"] == sleeper)
    assert item["status"] == "suppressed" and item["suppressed_reason"] == "quiet_hours"


@pytest.mark.parametrize("error", [BackendError, RuntimeError])
def test_a_failed_outcome_commit_leaves_the_claim_and_the_resend_keeps_its_key(
    store: SqliteStore, clock: ManualClock, monkeypatch: pytest.MonkeyPatch, error: type[Exception],
) -> None:
    """The committer's write fails once (a Store error, or a bug): those outcomes are lost claims (no status,
    no derived rows; no sender waits for ever), every other item is recorded; after the lease the same
    notifications are sent again with the same key."""
    items = seed_due(store, n=60, start=minute_start(clock.now()))
    schedules = store.table(tables.SCHEDULES)
    real = schedules.update_many
    failed: list[int] = []

    def flaky(updates: list[object]) -> list[object]:
        if not failed and all("outcome_at" in u.set for u in updates):  # type: ignore[attr-defined]
            failed.append(len(updates))
            raise error("disk I/O error during the outcome commit")
        return real(updates)  # type: ignore[arg-type]

    monkeypatch.setattr(schedules, "update_many", flaky)
    channel = AsyncScripted()
    opts = WorkerOptions(concurrency=8, lookback_minutes=3, prefetch_s=0.0, lease_s=5.0, heartbeat_s=0.0)
    worker = DeliveryWorker(store, channel, public_base_url="http://t", clock=clock, options=opts)
    _loop(worker, done=60)
    monkeypatch.undo()
    statuses = Counter(str(i["status"]) for i in schedules.scan())
    assert failed and statuses == {"sent": 60 - failed[0], "claimed": failed[0]}
    assert worker.totals.lost_claims == failed[0]
    assert len(list(store.table(tables.DELIVERIES).scan())) == 60 - failed[0]
    clock.advance(6)  # the lease runs out
    again = DeliveryWorker(store, channel, public_base_url="http://t", clock=clock, options=opts)
    _loop(again, done=failed[0])
    assert Counter(str(i["status"]) for i in schedules.scan()) == {"sent": 60}
    keys = Counter(c[2] for c in channel.calls)
    assert set(keys) == {i["notification_id"] for i in items}
    assert sum(keys.values()) == 60 + failed[0] and max(keys.values()) == 2  # resent once, same key


@pytest.mark.parametrize(("value", "on_loop"), [(None, True), ("false", False)])
def test_the_webhook_goes_on_the_event_loop_unless_the_setting_turns_it_off(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str | None, on_loop: bool) -> None:
    """The README: the webhook is sent from coroutines on one event loop; ``NOTIFY_DELIVERY_ASYNC_SENDERS=false``
    puts it back on threads. Through ``build_worker``, the wiring `notify worker` uses, with 16 senders."""
    from notify_core.delivery.worker import build_worker
    from notify_core.settings import load_settings

    monkeypatch.setenv("NOTIFY_WEBHOOK_URL", "http://127.0.0.1:9/hook")
    monkeypatch.setenv("NOTIFY_WEBHOOK_SECRET", SECRET)
    monkeypatch.setenv("NOTIFY_DELIVERY_CHANNEL", "webhook")
    if value is not None:
        monkeypatch.setenv("NOTIFY_DELIVERY_ASYNC_SENDERS", value)
    settings = load_settings(data_dir=tmp_path / "data")
    store = SqliteStore(tmp_path / "s.sqlite")
    clock = ManualClock(datetime(2030, 1, 2, 9, 0, tzinfo=UTC))
    worker = build_worker(settings, store, clock=clock)
    try:
        assert isinstance(worker.channel, WebhookChannel) and worker.options.concurrency == 16
        assert (worker._async_senders() is not None) is on_loop
    finally:
        worker.close()
        store.close()

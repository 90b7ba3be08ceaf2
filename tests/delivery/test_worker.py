"""The delivery worker: claims, leases, retries at 1/5/20 s, dead letters, dedupe, derived rows, Lambda."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from lambdas import deliver_notifications
from notify_core.delivery import DeliveryWorker, ManualClock, OutboxChannel, WebhookChannel, WorkerOptions, read_outbox
from notify_core.delivery.channels import Outcome
from notify_core.delivery.claims import HEARTBEAT_PK
from notify_core.delivery.feedback import campaign_stats
from notify_core.delivery.synthetic import seed_due
from notify_core.store import tables
from notify_core.store.port import Condition
from notify_core.store.sqlite import SqliteStore
from tests.delivery.conftest import SECRET, ScriptedChannel, minute_start, start_sink

OPTS = WorkerOptions(concurrency=4, lookback_minutes=3, prefetch_s=0.0)


def _statuses(store: SqliteStore) -> Counter[str]:
    return Counter(str(i["status"]) for i in store.table(tables.SCHEDULES).scan())


def test_due_items_are_delivered_once_with_their_derived_rows(store: SqliteStore, clock: ManualClock) -> None:
    items = seed_due(store, n=200, start=minute_start(clock.now()), with_plans=True)
    channel = ScriptedChannel()
    worker = DeliveryWorker(store, channel, public_base_url="http://t", clock=clock, options=OPTS)
    summary = worker.run_until_idle()
    worker.close()
    assert summary.delivered == 200 and len(channel.calls) == 200
    assert {c[2] for c in channel.calls} == {i["notification_id"] for i in items}  # key = notification id
    assert _statuses(store) == {"sent": 200}
    first = items[0]
    assert store.table(tables.DELIVERIES).get(first["notification_id"], "attempt#1")["outcome"] == "sent"
    assert len(store.table(tables.SENDS).query(first["user_id"])) == 1  # the recommender's cooldown filter
    plan = store.table(tables.PLANS).get(first["user_id"], tables.plan_sk(first["plan_day"], first["notification_id"]))
    assert plan["status"] == "sent" and plan["sent_at"]
    day = datetime.fromtimestamp(clock.now(), UTC).date().isoformat()
    assert sum(int(r["sent"]) for c in {i["campaign_id"] for i in items}
               for r in campaign_stats(store, c, since_day=day)) == 200
    # a second pass finds nothing to do
    assert DeliveryWorker(store, channel, public_base_url="http://t", clock=clock, options=OPTS).run_pass().claimed == 0


def test_future_items_wait_for_their_send_time(store: SqliteStore, clock: ManualClock) -> None:
    assert clock.now() % 60 == 0  # the start of a minute
    seed_due(store, n=10, start=minute_start(clock.now()), spread_s=50)  # one every 5 s
    channel = ScriptedChannel()
    worker = DeliveryWorker(store, channel, public_base_url="http://t", clock=clock, options=OPTS)
    assert worker.run_until_idle().delivered == 1
    clock.advance(12)
    assert worker.run_until_idle().delivered == 2
    summary = worker.run_until_idle(linger_until=clock.now() + 60)  # lingers on the clock until all are due
    worker.close()
    assert summary.delivered == 7 and max(summary.lateness) < 1e-6  # sent exactly on time (injected clock)


def test_two_workers_racing_send_each_notification_once(tmp_path: Path, clock: ManualClock) -> None:
    path = tmp_path / "store.sqlite"
    setup = SqliteStore(path, clock=clock)
    items = seed_due(setup, n=1500, start=minute_start(clock.now()))
    outs = [tmp_path / "a.jsonl", tmp_path / "b.jsonl"]
    workers = [DeliveryWorker(SqliteStore(path, clock=clock), OutboxChannel(out, clock=clock),
                              public_base_url="http://t", clock=clock,
                              options=WorkerOptions(concurrency=4, lookback_minutes=3)) for out in outs]
    threads = [threading.Thread(target=w.run_until_idle) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for w in workers:
        w.close()
    keys = [r["idempotency_key"] for out in outs for r in read_outbox(out)]
    assert len(keys) == len(set(keys)) == 1500
    assert set(keys) == {i["notification_id"] for i in items}
    assert sum(w.totals.delivered for w in workers) == 1500  # each send counted by exactly one worker
    assert _statuses(setup) == {"sent": 1500}


def test_retries_after_1_5_20_seconds_then_a_dead_letter(store: SqliteStore, clock: ManualClock) -> None:
    [item] = seed_due(store, n=1, start=minute_start(clock.now()))
    nid = item["notification_id"]
    channel = ScriptedChannel({nid: [Outcome.RETRYABLE] * 4})
    worker = DeliveryWorker(store, channel, public_base_url="http://t", clock=clock, options=OPTS)
    t0 = clock.now()
    worker.run_until_idle()
    assert [c[1] for c in channel.calls] == [1]
    clock.advance(0.999)
    worker.run_until_idle()
    assert len(channel.calls) == 1  # not before 1 s
    summary = worker.run_until_idle(linger_until=clock.now() + 120)
    worker.close()
    assert [c[1] for c in channel.calls] == [1, 2, 3, 4] and summary.dead_lettered == 1
    rows = store.table(tables.DELIVERIES).query(nid)
    attempted = [datetime.fromisoformat(r["attempted_at"].replace("Z", "+00:00")).timestamp() for r in rows]
    gaps = [round(b - a, 3) for a, b in zip(attempted, attempted[1:], strict=False)]
    assert gaps == [1.0, 5.0, 20.0]
    assert abs(attempted[0] - t0) < 1e-3
    assert [r["outcome"] for r in rows] == ["retry_scheduled"] * 3 + ["dead_lettered"]
    assert store.table(tables.SCHEDULES).get(item["pk"], item["sk"])["status"] == "dead_lettered"
    dead = list(store.table(tables.DEAD_LETTERS).scan())
    assert [d["notification_id"] for d in dead] == [nid] and dead[0]["attempts"] == 4
    assert list(store.table(tables.RETRIES).scan()) == []  # the retry index is consumed


def test_a_stale_retry_index_entry_does_not_claim_a_later_attempt_early(store: SqliteStore, clock: ManualClock) -> None:
    """A retry claim names the attempt that failed: an index entry left from an earlier attempt (its delete
    lost) finds the item at a later attempt and claims nothing, so the backoff and the attempt count hold."""
    [item] = seed_due(store, n=1, start=minute_start(clock.now()))
    nid = item["notification_id"]
    channel = ScriptedChannel({nid: [Outcome.RETRYABLE] * 4})
    worker = DeliveryWorker(store, channel, public_base_url="http://t", clock=clock, options=OPTS)
    worker.run_until_idle()
    [stale] = list(store.table(tables.RETRIES).scan())  # attempt 1's entry, due 1 s later
    assert stale["attempt"] == 1
    clock.advance(1.0)
    worker.run_until_idle()
    assert [c[1] for c in channel.calls] == [1, 2]
    store.table(tables.RETRIES).put(dict(stale))  # attempt 1's entry again, as if its delete had been lost
    clock.advance(1.0)  # attempt 2's retry is due 5 s after it, not yet
    worker.run_until_idle()
    after = store.table(tables.SCHEDULES).get(item["pk"], item["sk"])
    assert [c[1] for c in channel.calls] == [1, 2]
    assert after["status"] == "retry_scheduled" and after["attempt"] == 2
    worker.run_until_idle(linger_until=clock.now() + 10)
    worker.close()
    assert [c[1] for c in channel.calls] == [1, 2, 3]


def test_a_retry_that_succeeds_and_a_permanent_failure(store: SqliteStore, clock: ManualClock) -> None:
    a, b = seed_due(store, n=2, start=minute_start(clock.now()))
    channel = ScriptedChannel({a["notification_id"]: [Outcome.RETRYABLE], b["notification_id"]: [Outcome.PERMANENT]})
    worker = DeliveryWorker(store, channel, public_base_url="http://t", clock=clock, options=OPTS)
    summary = worker.run_until_idle(linger_until=clock.now() + 30)
    worker.close()
    assert summary.delivered == 1 and summary.retried == 1 and summary.dead_lettered == 1
    assert store.table(tables.SCHEDULES).get(a["pk"], a["sk"])["attempt"] == 2
    assert store.table(tables.SCHEDULES).get(b["pk"], b["sk"])["status"] == "dead_lettered"  # 4xx: no retries


def test_five_percent_failing_sink_everything_ends_delivered_or_dead_lettered(
        tmp_path: Path, store: SqliteStore, clock: ManualClock) -> None:
    n = 3000
    seed_due(store, n=n, start=minute_start(clock.now()))
    sink = start_sink(tmp_path, "--fail-rate", "0.05", "--secret", SECRET, "--seed", "11")
    worker = DeliveryWorker(store, WebhookChannel(sink.url, secret=SECRET, clock=clock), public_base_url="http://t",
                            clock=clock,
                            options=WorkerOptions(concurrency=8, lookback_minutes=3))
    summary = worker.run_until_idle(linger_until=clock.now() + 60)
    worker.close()
    receipts = sink.stop()
    statuses = _statuses(store)
    assert set(statuses) <= {"sent", "dead_lettered"} and sum(statuses.values()) == n
    failure_rate = statuses.get("dead_lettered", 0) / n
    first_failures = sum(1 for r in receipts if r["status"] == 503)
    print(f"\n5% sink: {n} notifications, {len(receipts)} requests, {first_failures} failed requests "
          f"({first_failures / len(receipts):.2%}), retried {summary.retried}, delivered {statuses['sent']}, "
          f"dead-lettered {statuses.get('dead_lettered', 0)} -> failure rate after retries {failure_rate:.4%}")
    assert failure_rate <= 0.003
    assert 0.03 * n < summary.retried < 0.08 * n
    delivered_keys = Counter(r["key"] for r in receipts if r["status"] == 200)
    assert len(delivered_keys) == statuses["sent"] and max(delivered_keys.values()) == 1


def test_dedupe_window_suppresses_a_second_item_with_the_same_id_for_24_hours(store: SqliteStore,
                                                                               clock: ManualClock) -> None:
    now = clock.now()
    for age_h, expect_sent in ((23, False), (25, True)):
        clock.set(now - age_h * 3600)
        [item] = seed_due(store, n=1, start=minute_start(clock.now()), user_prefix=f"d{age_h}-")
        channel = ScriptedChannel()
        DeliveryWorker(store, channel, public_base_url="http://t", clock=clock, options=OPTS).run_until_idle()
        # the planner re-creates the same notification id in a later minute (e.g. after a re-plan)
        clock.set(now)
        copy = {**item, "pk": tables.schedule_pk(tables.due_minute(minute_start(now)), item["shard"]),
                "send_at": minute_start(now).strftime("%Y-%m-%dT%H:%M:%SZ"), "status": "pending"}
        store.table(tables.SCHEDULES).put(copy)
        summary = DeliveryWorker(store, channel, public_base_url="http://t", clock=clock, options=OPTS).run_until_idle()
        assert (summary.delivered, summary.duplicates) == ((1, 0) if expect_sent else (0, 1)), age_h
        assert len(channel.calls) == (2 if expect_sent else 1)


def test_an_expired_lease_is_reclaimed_and_an_active_one_is_not(store: SqliteStore, clock: ManualClock) -> None:
    a, b = seed_due(store, n=2, start=minute_start(clock.now()))
    table = store.table(tables.SCHEDULES)
    # a worker died after claiming both: one lease expired, one still running
    table.update(a["pk"], a["sk"], set={"status": "claimed", "claim_token": "dead", "lease_until": clock.now() - 1,
                                        "attempt": 1}, condition=Condition.matches(status="pending"))
    table.update(b["pk"], b["sk"], set={"status": "claimed", "claim_token": "alive", "lease_until": clock.now() + 10,
                                        "attempt": 1}, condition=Condition.matches(status="pending"))
    channel = ScriptedChannel()
    worker = DeliveryWorker(store, channel, public_base_url="http://t", clock=clock, options=OPTS)
    first = worker.run_until_idle()
    assert (first.delivered, first.reclaimed) == (1, 1) and channel.calls[0][0] == a["notification_id"]
    second = worker.run_until_idle(linger_until=clock.now() + 15)  # after b's lease expires
    worker.close()
    assert (second.delivered, second.reclaimed) == (1, 1) and _statuses(store) == {"sent": 2}


def test_a_killed_workers_expired_claims_are_sent_before_the_rest_of_the_minute(
        store: SqliteStore, clock: ManualClock) -> None:
    """Claims whose lease ran out are as due as when they were first claimed: they go ahead of the minute's
    sends due at the same time, not behind them all (the 100k kill loop: ~60 s late)."""
    items = seed_due(store, n=40, start=minute_start(clock.now()))
    clock.advance(10)  # the killed worker claimed them at their send time; their leases ran out since
    expired = items[30:32]
    for it in expired:
        store.table(tables.SCHEDULES).update(
            it["pk"], it["sk"], set={"status": "claimed", "claim_token": "killed", "attempt": 1,
                                     "lease_until": clock.now() - 1, "worker": "killed"},
            condition=Condition.matches(status="pending"))
    channel = ScriptedChannel()
    worker = DeliveryWorker(store, channel, public_base_url="http://t", clock=clock,
                            options=WorkerOptions(concurrency=2, max_batch=5, lookback_minutes=3, prefetch_s=0.0))
    first = worker.run_pass()
    worker.close()
    assert (first.delivered, first.reclaimed) == (5, 2)
    assert {it["notification_id"] for it in expired} <= {c[0] for c in channel.calls}


def test_a_dead_workers_claims_are_taken_over_while_the_minute_is_still_busy(
        store: SqliteStore, clock: ManualClock) -> None:
    """A worker killed mid-minute leaves claims with leases still running. Its heartbeat stops, and the
    claims are taken over within a heartbeat even though the minute's queue still holds most of its sends:
    the 100k kill loop found them taken over only once the minute had drained (~60 s late), by a later worker."""
    items = seed_due(store, n=60, start=minute_start(clock.now()))
    table = store.table(tables.SCHEDULES)
    victims = items[:3]
    for it in victims:
        table.update(it["pk"], it["sk"], set={"status": "claimed", "claim_token": "killed", "attempt": 1,
                                              "lease_until": clock.now() + 300, "worker": "killed"},
                     condition=Condition.matches(status="pending"))
    store.table(tables.DELIVERY_CURSOR).put({"pk": HEARTBEAT_PK, "sk": "killed", "alive_until": clock.now() + 2})
    channel = ScriptedChannel()
    worker = DeliveryWorker(store, channel, public_base_url="http://t", clock=clock,
                            options=WorkerOptions(concurrency=2, max_batch=5, lookback_minutes=3, prefetch_s=0.0))
    first = worker.run_pass()  # scans the minute: the victim's claims are running, its heartbeat fresh
    assert (first.delivered, first.reclaimed) == (5, 0)
    clock.advance(5)  # the heartbeat has run out; the leases have not
    second = worker.run_pass()
    worker.close()
    assert (second.delivered, second.reclaimed) == (5, 3)  # taken over first, with 52 still queued
    assert {it["notification_id"] for it in victims} <= {c[0] for c in channel.calls[5:]}


def test_a_claim_lost_while_the_held_claims_are_looked_at_stays_watched(
        store: SqliteStore, clock: ManualClock, monkeypatch: pytest.MonkeyPatch) -> None:
    """A claim another worker wins while this one looks at the claims it watches (the look is on the
    maintenance thread, claiming on the loop's) is still watched after that look, not left to the minute's
    rescan once the queue has drained."""
    items = seed_due(store, n=20, start=minute_start(clock.now()))
    table = store.table(tables.SCHEDULES)
    held, raced = items[0], items[1]
    table.update(held["pk"], held["sk"], set={"status": "claimed", "claim_token": "other", "attempt": 1,
                                              "lease_until": clock.now() + 300, "worker": "other"},
                 condition=Condition.matches(status="pending"))
    worker = DeliveryWorker(store, ScriptedChannel(), public_base_url="http://t", clock=clock,
                            options=WorkerOptions(concurrency=2, max_batch=5, lookback_minutes=3, prefetch_s=0.0))
    worker.run_pass()
    claims = worker.claims
    minute = next(m for m in claims._minutes.values() if m.held)
    assert minute.held == {(held["pk"], held["sk"])}
    looked_up = claims._schedules.batch_get

    def batch_get_while_a_claim_is_lost(keys: Any, **kw: Any) -> Any:
        claims._recheck_soon([(raced["pk"], raced["sk"])], clock.now())  # the loop lost it meanwhile
        return looked_up(keys, **kw)

    monkeypatch.setattr(claims._schedules, "batch_get", batch_get_while_a_claim_is_lost)
    claims._recheck_held(minute)
    worker.close()
    assert minute.held == {(held["pk"], held["sk"]), (raced["pk"], raced["sk"])}


def test_lambda_handler_runs_one_pass_for_an_eventbridge_scheduled_event(
        store: SqliteStore, clock: ManualClock) -> None:
    seed_due(store, n=50, start=minute_start(clock.now()))
    SCHEDULED = minute_start(clock.now()).strftime("%Y-%m-%dT%H:%M:%SZ")  # noqa: N806  # EventBridge's "time"
    worker = DeliveryWorker(store, ScriptedChannel(), public_base_url="http://t", clock=clock, options=OPTS)
    deliver_notifications.use_worker(worker)
    event = {"version": "0", "id": "53dc4d37-cffa-4f76-80c9-8b7d4a4d2eaa", "detail-type": "Scheduled Event",
             "source": "aws.events", "account": "123456789012", "time": SCHEDULED, "region": "eu-west-1",
             "resources": ["arn:aws:events:eu-west-1:123456789012:rule/notify-deliver-every-minute"], "detail": {}}

    class Context:
        def get_remaining_time_in_millis(self) -> int:
            return 60_000

    try:
        reply = deliver_notifications.handler(event, Context())
    finally:
        deliver_notifications.use_worker(None)
        worker.close()
    assert reply["trigger"] == "schedule" and reply["delivered"] == 50 and reply["dead_lettered"] == 0
    assert reply["lateness_p99_s"] is not None and reply["scheduled_time"] == SCHEDULED


def test_a_crash_between_outcome_and_derived_rows_is_repaired_when_the_minute_closes(
        store: SqliteStore, clock: ManualClock) -> None:
    items = seed_due(store, n=20, start=minute_start(clock.now()) - timedelta(minutes=2))
    worker = DeliveryWorker(store, ScriptedChannel(), public_base_url="http://t", clock=clock, options=OPTS)
    worker.flush = lambda: None  # type: ignore[method-assign]  # "crash": derived rows never written
    worker.run_pass()
    assert store.table(tables.DELIVERIES).get(items[0]["notification_id"], "attempt#1") is None
    clock.advance(OPTS.lease_s)  # the crashed worker's rows may still be queued until its lease is over
    fresh = DeliveryWorker(store, ScriptedChannel(), public_base_url="http://t", clock=clock, options=OPTS)
    summary = fresh.run_until_idle()
    fresh.close()
    assert summary.delivered == 0 and fresh.totals.repaired == 20
    assert store.table(tables.DELIVERIES).get(items[0]["notification_id"], "attempt#1")["outcome"] == "sent"
    assert store.table(tables.DELIVERY_CURSOR).get("minute", tables.due_minute(minute_start(clock.now())
                                                                                 - timedelta(minutes=2)))


class _LambdaContext:
    def get_remaining_time_in_millis(self) -> int:
        return 60_000


def test_lambda_handler_returns_at_once_when_nothing_is_due(store: SqliteStore) -> None:
    """Issue 15: an idle minute is one short invocation, not 25 s of billed waiting for later work."""
    clock = ManualClock()
    seed_due(store, n=5, start=minute_start(clock.now()) + timedelta(minutes=1, seconds=20))  # due next minute
    worker = DeliveryWorker(store, ScriptedChannel(), public_base_url="http://t", clock=clock, options=OPTS)
    deliver_notifications.use_worker(worker)
    before = clock.now()
    try:
        reply = deliver_notifications.handler({"detail-type": "Scheduled Event"}, _LambdaContext())
    finally:
        deliver_notifications.use_worker(None)
        worker.close()
    assert reply["delivered"] == 0 and clock.now() == before  # never slept on the clock
    assert reply["next_due_at"] is not None


def test_lambda_handler_lingers_only_for_its_own_retries(store: SqliteStore) -> None:
    clock = ManualClock()
    items = seed_due(store, n=3, start=minute_start(clock.now()))
    channel = ScriptedChannel({items[0]["notification_id"]: [Outcome.RETRYABLE]})
    worker = DeliveryWorker(store, channel, public_base_url="http://t", clock=clock, options=OPTS)
    deliver_notifications.use_worker(worker)
    try:
        reply = deliver_notifications.handler({"detail-type": "Scheduled Event"}, _LambdaContext())
    finally:
        deliver_notifications.use_worker(None)
        worker.close()
    assert reply["retried"] == 1 and reply["delivered"] == 3  # the +1 s retry went out in this invocation


def test_a_worker_knows_a_minute_scan_is_still_running(store: SqliteStore, clock: ManualClock) -> None:
    """``notify worker --idle-exit`` must not count a pass as idle while a scan is still looking: a restarted
    worker quit with 81,788 items pending because its scan of a 100k-item minute outlasted the idle timer."""
    seed_due(store, n=20, start=minute_start(clock.now()))
    worker = DeliveryWorker(store, ScriptedChannel(), public_base_url="http://t", clock=clock, options=OPTS)
    release = threading.Event()
    real_scan = worker.claims._scan

    def slow_scan(minute: object) -> None:
        release.wait(10)
        real_scan(minute)  # type: ignore[arg-type]

    worker.claims._scan = slow_scan  # type: ignore[method-assign]
    first = worker.run_pass(wait_for_scans=False)
    assert first.attempts == 0 and worker.claims.scanning  # nothing sent yet, but not idle
    release.set()
    worker.claims.wait_scans()
    assert not worker.claims.scanning
    assert worker.run_until_idle().delivered == 20
    worker.close()


def test_a_claim_carries_a_30_s_lease_by_default_and_the_dedupe_record_lives_24_h(
        store: SqliteStore, clock: ManualClock) -> None:
    """The README: a claim is ``pending -> claimed`` with ``lease_until = now + 30 s``; the dedupe record
    (pk = notification id) has a 24 h TTL. Read while the send is in flight, with the worker's defaults
    (WorkerOptions() and the settings' NOTIFY_DELIVERY_LEASE_S)."""
    from notify_core.settings import load_settings

    settings = load_settings(data_dir=Path("unused"))
    assert WorkerOptions().lease_s == settings.delivery_lease_s == 30.0
    assert WorkerOptions().max_late_s == settings.delivery_max_late_s == 3600.0  # the two copies of a default agree
    [item] = seed_due(store, n=1, start=minute_start(clock.now()))
    seen: dict[str, Any] = {}

    class Peeking(ScriptedChannel):
        def send(self, message: Any, *, idempotency_key: str) -> Any:
            seen["schedule"] = store.table(tables.SCHEDULES).get(item["pk"], item["sk"])
            seen["dedupe"] = store.table(tables.DEDUPE).get(message.notification_id, tables.DEDUPE_SK)
            return super().send(message, idempotency_key=idempotency_key)

    options = WorkerOptions(concurrency=1, lookback_minutes=3, prefetch_s=0.0)  # the lease left at its default
    DeliveryWorker(store, Peeking(), public_base_url="http://t", clock=clock, options=options).run_until_idle()
    claimed, dedupe = seen["schedule"], seen["dedupe"]
    assert claimed["status"] == "claimed" and claimed["claim_token"]
    assert claimed["lease_until"] == pytest.approx(clock.now() + 30, abs=1)
    assert dedupe is not None and int(dedupe["ttl"]) == pytest.approx(clock.now() + 24 * 3600, abs=60)

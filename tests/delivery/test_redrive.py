"""Dead letters sent again once their cause is fixed (`notify deliveries redrive`,
notify_core/delivery/redrive.py): a receiver down for longer than the 1 s / 5 s / 20 s retries dead-letters
what was due meanwhile; a redrive sends each once more, as its next attempt under the same idempotency key,
and is idempotent (run twice, or again after a run killed between its two writes)."""

from __future__ import annotations

import itertools
import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from notify_core.delivery import DeliveryWorker, ManualClock, WorkerOptions
from notify_core.delivery import redrive as redrive_module
from notify_core.delivery.channels import Outcome
from notify_core.delivery.redrive import dead_letters, redrive
from notify_core.delivery.synthetic import seed_due
from notify_core.errors import ValidationError
from notify_core.security import audit
from notify_core.store import tables
from notify_core.store.port import Store
from notify_core.store.sqlite import SqliteStore
from tests.delivery.conftest import ScriptedChannel, minute_start

# 4 shards, not the default 16: each minute the retries wait through, the worker reads the retries index over
# the lookback once a shard; the redrive does not depend on how many there are.
SHARDS = 4
OPTS = WorkerOptions(concurrency=4, lookback_minutes=15, prefetch_s=0.0, shards=SHARDS)
HOUR = 3600.0


def _dead_letter_an_outage(store: Store, clock: ManualClock, *, n: int = 20) -> tuple[list[dict], ScriptedChannel]:
    """``n`` notifications due while the receiver is down: four attempts each, then dead letters."""
    items = seed_due(store, n=n, start=minute_start(clock.now()), campaigns=2, shards=SHARDS)
    channel = ScriptedChannel({i["notification_id"]: [Outcome.RETRYABLE] * 4 for i in items})
    worker = DeliveryWorker(store, channel, public_base_url="http://t", clock=clock, options=OPTS)
    worker.run_until_idle(linger_until=clock.now() + 60)
    worker.close()
    assert Counter(str(i["status"]) for i in store.table(tables.SCHEDULES).scan()) == {"dead_lettered": n}
    return items, channel


def _deliver(store: Store, clock: ManualClock, channel: ScriptedChannel) -> None:
    worker = DeliveryWorker(store, channel, public_base_url="http://t", clock=clock, options=OPTS)
    worker.run_until_idle(linger_until=clock.now() + 30)
    worker.close()


def test_a_redrive_sends_each_dead_letter_once_more_as_its_next_attempt(either: tuple[Store, ManualClock]) -> None:
    store, clock = either
    since = datetime.fromtimestamp(clock.now(), UTC)
    items, channel = _dead_letter_an_outage(store, clock)
    clock.advance(300)  # the receiver is back five minutes later
    report = redrive(store, since=since, max_late_s=HOUR, clock=clock)
    assert report.as_dict() == {"dead_letters": 20, "redriven": 20, "too_late": 0, "not_dead": 0}

    _deliver(store, clock, channel)
    ids = {i["notification_id"] for i in items}
    fifth = [(nid, attempt, key) for nid, attempt, key in channel.calls if attempt == 5]
    assert {nid for nid, _a, _k in fifth} == ids and len(fifth) == 20  # once each, as attempt 5
    assert all(key == nid for nid, _a, key in fifth)  # the same idempotency key
    assert Counter(str(i["status"]) for i in store.table(tables.SCHEDULES).scan()) == {"sent": 20}
    history = [r["outcome"] for r in store.table(tables.DELIVERIES).query(items[0]["notification_id"])]
    assert history == ["retry_scheduled"] * 3 + ["dead_lettered", "sent"]  # the outage's attempts kept
    assert len(store.table(tables.SENDS).query(items[0]["user_id"])) == 1  # the recommender's cooldowns

    again = redrive(store, since=since, max_late_s=HOUR, clock=clock)  # idempotent: nothing left to move
    assert again.as_dict() == {"dead_letters": 20, "redriven": 0, "too_late": 0, "not_dead": 20}


def test_a_redriven_notification_gets_the_spec_retries_again(either: tuple[Store, ManualClock]) -> None:
    """The ladder counts from the redrive, as SQS's redrive resets a message's receive count: a receiver still
    flapping when the operator redrives (two more refusals) costs retries 1 s and 5 s apart, not a second dead
    letter; one that stays down is dead-lettered after the ladder's four tries, and redriven again. Before,
    counted from the first attempt, the first refusal after a redrive dead-lettered the notification."""
    store, clock = either
    since = datetime.fromtimestamp(clock.now(), UTC)
    items, channel = _dead_letter_an_outage(store, clock, n=2)
    flapping, down = (str(i["notification_id"]) for i in items)
    channel.script[flapping] = [Outcome.RETRYABLE] * 2
    channel.script[down] = [Outcome.RETRYABLE] * 4
    clock.advance(300)
    assert redrive(store, since=since, max_late_s=HOUR, clock=clock).redriven == 2
    worker = DeliveryWorker(store, channel, public_base_url="http://t", clock=clock, options=OPTS)
    worker.run_until_idle(linger_until=clock.now() + 60)
    worker.close()

    def history(nid: str) -> list[tuple[int, str, float]]:
        rows = store.table(tables.DELIVERIES).query(nid)
        return [(int(r["attempt"]), str(r["outcome"]),
                 datetime.fromisoformat(str(r["attempted_at"]).replace("Z", "+00:00")).timestamp()) for r in rows]

    after = history(flapping)[4:]  # the outage's four attempts first
    assert [(a, o) for a, o, _t in after] == [(5, "retry_scheduled"), (6, "retry_scheduled"), (7, "sent")]
    gaps = [round(b[2] - a[2]) for a, b in itertools.pairwise(after)]
    assert gaps == [1, 5]  # the spec's ladder, from its start
    stays_down = history(down)[4:]
    assert [(a, o) for a, o, _t in stays_down] == [(5, "retry_scheduled"), (6, "retry_scheduled"),
                                                  (7, "retry_scheduled"), (8, "dead_lettered")]
    assert [round(b[2] - a[2]) for a, b in itertools.pairwise(stays_down)] == [1, 5, 20]

    clock.advance(60)
    assert redrive(store, since=since, max_late_s=HOUR, clock=clock).redriven == 1  # the one still dead
    _deliver(store, clock, channel)
    assert [(a, o) for a, o, _t in history(down)[8:]] == [(9, "sent")]
    status = {str(i["notification_id"]): i["status"] for i in store.table(tables.SCHEDULES).scan()}
    assert status == {flapping: "sent", down: "sent"}
    assert Counter(nid for nid, _a, _k in channel.calls) == {flapping: 7, down: 9}  # each attempt sent once


def test_a_redrive_is_found_by_a_worker_started_twenty_minutes_later(store: SqliteStore, clock: ManualClock) -> None:
    """The redriven item's own minute is done and never scanned again: the retries index brings it, however
    long no worker ran (the full look back goes to the oldest minute not done)."""
    since = datetime.fromtimestamp(clock.now(), UTC)
    items, channel = _dead_letter_an_outage(store, clock, n=3)
    clock.advance(120)
    assert redrive(store, since=since, max_late_s=HOUR, clock=clock).redriven == 3
    clock.advance(20 * 60)
    _deliver(store, clock, channel)
    assert Counter(str(i["status"]) for i in store.table(tables.SCHEDULES).scan()) == {"sent": 3}
    assert sorted(nid for nid, attempt, _k in channel.calls if attempt == 5) == sorted(
        i["notification_id"] for i in items)


def test_a_redrive_by_campaign_dry_run_and_too_late(store: SqliteStore, clock: ManualClock) -> None:
    since = datetime.fromtimestamp(clock.now(), UTC)
    items, channel = _dead_letter_an_outage(store, clock)
    c0 = {i["notification_id"] for i in items if i["campaign_id"] == "c000"}
    dry = redrive(store, since=since, campaign_id="c000", max_late_s=HOUR, clock=clock, dry_run=True)
    assert dry.as_dict() == {"dead_letters": len(c0), "redriven": len(c0), "too_late": 0, "not_dead": 0}
    assert list(store.table(tables.RETRIES).scan()) == []  # a dry run writes nothing
    assert redrive(store, since=since, campaign_id="c000", max_late_s=HOUR, clock=clock).redriven == len(c0)
    _deliver(store, clock, channel)
    sent = {str(i["notification_id"]) for i in store.table(tables.SCHEDULES).scan() if i["status"] == "sent"}
    assert sent == c0
    clock.advance(2 * HOUR)  # the others are two hours late by now: a worker would not send them
    late = redrive(store, since=since, max_late_s=HOUR, clock=clock)
    assert late.as_dict() == {"dead_letters": 20, "redriven": 0, "too_late": 20 - len(c0), "not_dead": len(c0)}
    with pytest.raises(ValidationError):
        redrive(store, since=since, until=since - timedelta(seconds=1), max_late_s=HOUR, clock=clock)


def test_a_redrive_killed_between_its_two_writes_is_run_again_and_sends_each_once(
        store: SqliteStore, clock: ManualClock, monkeypatch: pytest.MonkeyPatch) -> None:
    since = datetime.fromtimestamp(clock.now(), UTC)
    items, channel = _dead_letter_an_outage(store, clock, n=5)
    schedules = type(store.table(tables.SCHEDULES))

    def killed(self: object, updates: object) -> None:
        raise SystemExit("killed after the retries index was written")

    with monkeypatch.context() as patched:
        patched.setattr(schedules, "update_many", killed)
        with pytest.raises(SystemExit):
            redrive(store, since=since, max_late_s=HOUR, clock=clock)
    assert len(list(store.table(tables.RETRIES).scan())) == 5  # stale entries: their items still dead-lettered
    _deliver(store, clock, channel)
    assert not [c for c in channel.calls if c[1] == 5]  # they claim nothing
    assert redrive(store, since=since, max_late_s=HOUR, clock=clock).redriven == 5
    _deliver(store, clock, channel)
    assert Counter(c[0] for c in channel.calls if c[1] == 5) == {i["notification_id"]: 1 for i in items}


def test_notify_deliveries_redrive_is_audited_and_refuses_a_time_without_a_zone(tmp_path: Path) -> None:
    from notify_cli import main

    data = tmp_path / "data"
    runner = CliRunner()
    since = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    done = runner.invoke(main.app, ["deliveries", "redrive", "--since", since, "--data-dir", str(data)])
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout) == {"dead_letters": 0, "redriven": 0, "too_late": 0, "not_dead": 0,
                                       "dry_run": False}
    store = SqliteStore(data / "store.sqlite")
    try:
        [entry] = [e for e in audit.entries(store) if e.action == "deliveries.redrive"]
        assert entry.target == "all" and entry.source == "cli" and entry.detail["redriven"] == 0
    finally:
        store.close()
    naive = runner.invoke(main.app, ["deliveries", "redrive", "--since", "2026-12-05T10:00",
                                     "--data-dir", str(data)])
    assert naive.exit_code == 2 and "time zone" in naive.output


def test_the_dead_letters_of_a_window_are_listed_with_their_error_and_status_now(
        either: tuple[Store, ManualClock], monkeypatch: pytest.MonkeyPatch) -> None:
    """What an operator reads before a redrive (which failed, how) and after it (which were sent); read a
    chunk at a time (7 rows here), oldest first, by campaign if asked."""
    store, clock = either
    monkeypatch.setattr(redrive_module, "LIST_CHUNK", 7)
    since = datetime.fromtimestamp(clock.now(), UTC)
    items, channel = _dead_letter_an_outage(store, clock)
    listed = list(dead_letters(store, since=since, clock=clock))
    assert sorted(d.notification_id for d in listed) == sorted(i["notification_id"] for i in items)
    assert {(d.status, d.attempts, d.last_error) for d in listed} == {("dead_lettered", 4, "retryable")}
    assert [d.dead_lettered_at for d in listed] == sorted(d.dead_lettered_at for d in listed)
    by_item = {i["notification_id"]: i for i in items}
    assert all((d.user_id, d.campaign_id) == (by_item[d.notification_id]["user_id"],
                                              by_item[d.notification_id]["campaign_id"]) for d in listed)
    c0 = {d.notification_id for d in dead_letters(store, since=since, campaign_id="c000", clock=clock)}
    assert c0 == {i["notification_id"] for i in items if i["campaign_id"] == "c000"} and 0 < len(c0) < 20

    assert redrive(store, since=since, campaign_id="c000", max_late_s=HOUR, clock=clock).redriven == len(c0)
    _deliver(store, clock, channel)
    after = {d.notification_id: d.status for d in dead_letters(store, since=since, clock=clock)}
    assert after == {i["notification_id"]: "sent" if i["notification_id"] in c0 else "dead_lettered" for i in items}
    with pytest.raises(ValidationError):
        list(dead_letters(store, since=since.replace(tzinfo=None), clock=clock))


def test_notify_deliveries_dead_letters_prints_one_json_object_a_line(tmp_path: Path) -> None:
    from notify_cli import main
    from notify_core.settings import load_settings
    from notify_core.store.factory import build_store

    data = tmp_path / "data"
    clock = ManualClock()  # the wall clock's time, standing still: the CLI's Store judges the rows' TTL by it
    store = build_store(load_settings(data_dir=data))
    try:
        items, _channel = _dead_letter_an_outage(store, clock, n=3)
    finally:
        store.close()
    window = ["--since", datetime.fromtimestamp(clock.now() - 60, UTC).isoformat(),
              "--until", datetime.fromtimestamp(clock.now() + 60, UTC).isoformat(), "--data-dir", str(data)]
    done = CliRunner().invoke(main.app, ["deliveries", "dead-letters", *window])
    assert done.exit_code == 0, done.output
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert sorted(line["notification_id"] for line in lines) == sorted(i["notification_id"] for i in items)
    assert {(line["status"], line["attempts"]) for line in lines} == {("dead_lettered", 4)}
    none = CliRunner().invoke(main.app, ["deliveries", "dead-letters", "--campaign", "nope", *window])
    assert none.exit_code == 0 and none.stdout == ""

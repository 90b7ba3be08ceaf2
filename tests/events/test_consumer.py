"""The consumer against both stream adapters and the SQLite Store: rows, idempotency, replay, dead letters."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from notify_core.clock import SYSTEM_CLOCK
from notify_core.events import CLICKSTREAM, PURCHASE_HISTORY, capture_events, dlq_topic
from notify_core.events.consumer import EventConsumer
from notify_core.schemas import PURCHASES
from notify_core.store import tables
from notify_core.store.sqlite import SqliteStore
from notify_core.stream.port import Message, Stream
from tests.events.helpers import click, events_clock, order
from tests.stream.test_contract import drain


def snapshot(store: SqliteStore) -> dict[str, list[dict[str, Any]]]:
    return {name: list(store.table(name).scan()) for name in (tables.EVENTS, tables.USER_EVENTS, tables.PURCHASES)}


def consume(stream: Stream, store: SqliteStore, landing: Path, n: int, *, replay: bool = False,
            group: str = "notify") -> EventConsumer:
    consumer = EventConsumer(stream=stream, store=store, landing=landing, group=group, poll_timeout=0.2,
                             clock=SYSTEM_CLOCK)  # persist latency is measured against the broker's real stamps
    if replay:
        consumer.seek_to_beginning()
    consumer.run(stop=threading.Event(), max_records=n, idle_exit=15)
    return consumer


def test_events_become_rows_landing_files_and_commits(stream_backend: Stream, tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "store.sqlite")
    body = json.dumps([click(i) for i in range(30)] + [order(i) for i in range(10)])
    assert capture_events(body, stream=stream_backend, clock=events_clock()).accepted == 40
    consumer = consume(stream_backend, store, tmp_path / "landing", 40)
    assert consumer.totals.persisted == 40 and consumer.lag() == 0
    rows = snapshot(store)
    assert len(rows[tables.EVENTS]) == 10  # one ledger row per order; a click is its user_events row
    assert len(rows[tables.USER_EVENTS]) == 30
    assert len(rows[tables.PURCHASES]) == 20  # two lines per order
    purchase = store.table(tables.PURCHASES).query("u0", limit=10)
    assert {p["product_id"] for p in purchase} == {"p1", "p2"} and purchase[0]["order_id"] == "o0"
    assert any(p["is_return"] for p in purchase)
    clicks = store.table(tables.USER_EVENTS).query("u1")
    assert clicks[0]["type"] == "click" and clicks[0]["sk"].startswith("2024-03-01T10:00:01#")
    frame = pl.concat([pl.read_parquet(p) for p in (tmp_path / "landing").glob("*.parquet")])
    assert dict(frame.schema) == PURCHASES
    assert frame.unique(["order_id", "product_id"]).height == 20
    consumer.close()
    store.close()


def test_replaying_the_whole_topic_from_offset_0_writes_no_new_rows(stream_backend: Stream, tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "store.sqlite")
    capture_events(json.dumps([click(i) for i in range(200)] + [order(i) for i in range(50)]), stream=stream_backend,
                   clock=events_clock())
    consume(stream_backend, store, tmp_path / "landing", 250).close()
    before = snapshot(store)
    # the same group from offset 0, and a brand-new group (also starts at 0): both read all 250 again
    replay = consume(stream_backend, store, tmp_path / "landing", 250, replay=True)
    fresh = consume(stream_backend, store, tmp_path / "landing", 250, group="another")
    assert replay.totals.records == 250 and fresh.totals.records == 250
    assert snapshot(store) == before  # not one row added or changed
    replay.close()
    fresh.close()
    store.close()


def test_the_same_event_twice_in_the_stream_is_one_row(stream_backend: Stream, tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "store.sqlite")
    capture_events(json.dumps([click(1), order(1)]), stream=stream_backend, clock=events_clock())
    capture_events(json.dumps([click(1), order(1)]), stream=stream_backend, clock=events_clock())  # a client retry
    consume(stream_backend, store, None, 4).close()  # type: ignore[arg-type]
    counts = {name: len(rows) for name, rows in snapshot(store).items()}
    assert counts == {tables.EVENTS: 1, tables.USER_EVENTS: 1, tables.PURCHASES: 2}  # ledger: the order only
    store.close()


def test_poison_messages_go_to_the_dead_letter_topic_with_a_reason(stream_backend: Stream, tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "store.sqlite")
    good = json.dumps(click(1)).encode()
    stream_backend.produce_batch(
        [
            Message(CLICKSTREAM, b"u1", b"\xff\x00 not json"),
            Message(CLICKSTREAM, b"u1", b'{"type": "teleport", "user_id": "u1", "ts": "2024-01-01T00:00:00Z"}'),
            Message(CLICKSTREAM, b"u2", json.dumps(order(1)).encode()),  # an order on the wrong topic
            Message(CLICKSTREAM, b"u1", good),
        ]
    )
    consumer = consume(stream_backend, store, tmp_path / "landing", 4)
    assert consumer.totals.dead_lettered == 3 and consumer.totals.persisted == 1
    assert consumer.lag() == 0  # poison does not block the partition
    dlq = stream_backend.consumer(group="dlq-reader", topics=[dlq_topic(CLICKSTREAM)])
    letters = [json.loads(r.value) for r in drain(dlq, 3)]
    dlq.close()
    reasons = sorted(letter["reason"] for letter in letters)
    assert any("undecodable" in r for r in reasons)
    assert any("unknown event type 'teleport'" in r for r in reasons)
    assert any("does not belong on notify_clickstream" in r for r in reasons)
    assert all(letter["topic"] == CLICKSTREAM and "offset" in letter for letter in letters)
    assert any("value_b64" in letter for letter in letters)
    assert len(snapshot(store)[tables.USER_EVENTS]) == 1 and not snapshot(store)[tables.EVENTS]
    consumer.close()
    store.close()


def test_one_poison_record_amid_good_ones_is_the_only_dead_letter(stream_backend: Stream, tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "store.sqlite")
    good = [Message(CLICKSTREAM, b"u1", json.dumps(click(i)).encode()) for i in range(40)]
    poison = Message(CLICKSTREAM, b"u1", json.dumps(click(99, user_id="")).encode())  # missing user id
    stream_backend.produce_batch([*good[:20], poison, *good[20:]])
    consumer = consume(stream_backend, store, tmp_path / "landing", 41)
    assert consumer.totals.dead_lettered == 1 and consumer.totals.persisted == 40
    dlq = stream_backend.consumer(group="dlq-reader", topics=[dlq_topic(CLICKSTREAM)])
    (letter,) = [json.loads(r.value) for r in drain(dlq, 1, timeout=5)]
    dlq.close()
    assert letter["reason"].startswith("user_id:") and json.loads(letter["value"])["ts"] == click(99)["ts"]
    assert len(snapshot(store)[tables.USER_EVENTS]) == 40
    consumer.close()
    store.close()


def test_purchase_history_and_clickstream_are_the_topics(stream_backend: Stream, tmp_path: Path) -> None:
    capture_events(json.dumps([click(1), order(1)]), stream=stream_backend, clock=events_clock())
    assert sum(stream_backend.end_offsets(CLICKSTREAM).values()) == 1
    assert sum(stream_backend.end_offsets(PURCHASE_HISTORY).values()) == 1


@pytest.mark.parametrize("signal_name", ["SIGTERM"])
def test_sigterm_finishes_the_batch_commits_and_exits(tmp_path: Path, signal_name: str) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    from notify_core.stream.local_log import LocalLog

    root = Path(__file__).resolve().parents[2]
    log = LocalLog(tmp_path / "stream" / "log.sqlite")
    capture_events(json.dumps([click(i) for i in range(100)]), stream=log, clock=events_clock())
    proc = subprocess.Popen(
        [sys.executable, "-m", "notify_cli.stream_commands", "consume", "--data-dir", str(tmp_path)],
        cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "NOTIFY_ENV": "local"},
    )
    deadline = time.monotonic() + 30
    while log.committed("notify-event-consumer", CLICKSTREAM) < 100 and time.monotonic() < deadline:
        time.sleep(0.1)
    proc.send_signal(getattr(signal, signal_name))
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert json.loads(out.strip().splitlines()[-1])["persisted"] == 100
    logged = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert any(line.get("message") == "consumer stopped" for line in logged)
    log.close()


def test_the_pipelined_loop_commits_a_batch_only_after_its_write(tmp_path: Path) -> None:
    """run() writes batch N on a writer thread while it polls and decodes N+1: while a write is held up,
    its offsets stay uncommitted (a crash would replay it), and they are committed once it lands."""
    from notify_core.stream.local_log import LocalLog

    log = LocalLog(tmp_path / "log.sqlite", poll_interval=0.002)
    store = SqliteStore(tmp_path / "store.sqlite")
    gate = threading.Event()
    writers: set[str] = set()
    consumer = EventConsumer(stream=log, store=store, landing=None, max_batch=10, poll_timeout=0.05,
                             clock=SYSTEM_CLOCK)
    table = consumer._user_events
    original = table.batch_put

    def held_batch_put(items: Any) -> int:
        writers.add(threading.current_thread().name)
        assert gate.wait(10)
        return original(items)

    table.batch_put = held_batch_put  # type: ignore[method-assign]
    capture_events(json.dumps([click(i) for i in range(30)]), stream=log, clock=events_clock())
    stop = threading.Event()
    runner = threading.Thread(target=consumer.run, kwargs={"stop": stop, "idle_exit": 2.0})
    runner.start()
    time.sleep(0.5)  # batch 1 is held in its write; batch 2 is polled and decoded meanwhile
    assert log.committed("notify-event-consumer", CLICKSTREAM) == 0
    assert not snapshot(store)[tables.USER_EVENTS]
    gate.set()
    runner.join(20)
    assert log.committed("notify-event-consumer", CLICKSTREAM) == 30 and consumer.totals.persisted == 30
    assert len(snapshot(store)[tables.USER_EVENTS]) == 30
    assert writers and all(name.startswith("notify-consumer-writer") for name in writers)
    consumer.close()
    store.close()
    log.close()

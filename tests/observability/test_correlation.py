"""One correlation id from the HTTP edge to the Store: POST /v1/events -> record headers -> consumer -> rows.

On both stream adapters (the embedded log and Kafka on a real Kafka-protocol broker), through the real
gateway; plus the local log's header column on a log file written before headers existed.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path

import httpx
import pytest

from lambdas import capture_events
from notify_core.clock import SYSTEM_CLOCK
from notify_core.events import CLICKSTREAM, PURCHASE_HISTORY
from notify_core.events.consumer import EventConsumer
from notify_core.store import tables
from notify_core.store.sqlite import SqliteStore
from notify_core.stream.local_log import LocalLog
from notify_core.stream.port import REQUEST_ID_HEADER, Message, Stream
from tests import auth
from tests.events.helpers import click, order
from tests.servers import local_gateway


def test_one_request_id_from_post_v1_events_to_the_store_rows(stream_backend: Stream, tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "store.sqlite")
    capture_events.use_stream(stream_backend)
    try:
        with local_gateway() as base:
            reply = httpx.post(f"{base}/v1/events", json=[click(1), order(2)],
                               headers={"x-request-id": "corr-0001", **auth.headers()}, timeout=30)
            other = httpx.post(f"{base}/v1/events", json=[click(4)], timeout=30,
                               headers=auth.headers())  # the gateway's own id
            odd = [httpx.post(f"{base}/v1/events", json=[click(5)], headers={"x-request-id": bad, **auth.headers()},
                              timeout=30)
                   for bad in ("x" * 129, "a b", "<script>")]
    finally:
        capture_events.use_stream(None)
    assert reply.status_code == 202 and reply.headers["x-request-id"] == "corr-0001"
    assert other.status_code == 202
    generated = other.headers["x-request-id"]
    assert generated and generated != "corr-0001"
    replaced = [r.headers["x-request-id"] for r in odd]  # long or odd client ids are replaced, not stored
    assert all(r.status_code == 202 for r in odd) and all(x.startswith(generated.split("-")[0]) for x in replaced)

    consumer = EventConsumer(stream=stream_backend, store=store, landing=tmp_path / "landing", poll_timeout=0.2,
                             clock=SYSTEM_CLOCK)
    consumer.run(stop=threading.Event(), max_records=6, idle_exit=15)
    consumer.close()

    clicks = store.table(tables.USER_EVENTS).query("u1")
    assert [(r["type"], r["request_id"]) for r in clicks] == [("click", "corr-0001")]
    lines = store.table(tables.PURCHASES).query("u2")
    assert len(lines) == 2 and {r["request_id"] for r in lines} == {"corr-0001"}
    ledger = [r for r in store.table(tables.EVENTS).scan() if r.get("type") == "order"]
    assert [r["request_id"] for r in ledger] == ["corr-0001"]
    assert store.table(tables.USER_EVENTS).query("u4")[0]["request_id"] == generated
    store.close()


def test_records_without_headers_write_rows_without_a_request_id(tmp_path: Path) -> None:
    """Producers that send no headers (batch tools, older gateways) still work; the row just has no id."""
    log = LocalLog(tmp_path / "log.sqlite")
    store = SqliteStore(tmp_path / "store.sqlite")
    log.produce(CLICKSTREAM, b"u1", json.dumps(click(1)).encode())
    consumer = EventConsumer(stream=log, store=store, landing=None, poll_timeout=0.1, clock=SYSTEM_CLOCK)
    assert consumer.run_once() is not None
    assert "request_id" not in store.table(tables.USER_EVENTS).query("u1")[0]
    consumer.close()
    log.close()
    store.close()


def test_a_log_file_from_before_headers_gains_the_column_and_keeps_its_records(tmp_path: Path) -> None:
    """The fault case of the additive schema change: an existing log (no ``headers`` column) is opened by
    the new code, which adds the column once; old records read back with no headers, new ones with theirs,
    and a second process opening the file concurrently does not add it twice."""
    path = tmp_path / "old.sqlite"
    conn = sqlite3.connect(path)
    conn.executescript(
        "CREATE TABLE topics (name TEXT PRIMARY KEY, id INTEGER NOT NULL UNIQUE);"
        "CREATE TABLE positions (grp TEXT NOT NULL, topic TEXT NOT NULL, position INTEGER NOT NULL,"
        " PRIMARY KEY (grp, topic)) WITHOUT ROWID;"
        f"INSERT INTO topics VALUES ('{PURCHASE_HISTORY}', 1);"
        "CREATE TABLE log_1 (offset INTEGER PRIMARY KEY, ts_ms INTEGER NOT NULL, key BLOB, value BLOB NOT NULL);"
        "INSERT INTO log_1 VALUES (0, 1, x'7531', x'7b7d');"
    )
    conn.commit()
    conn.close()
    first, second = LocalLog(path), LocalLog(path)
    first.produce_batch([Message(PURCHASE_HISTORY, b"u2", b"{}", ((REQUEST_ID_HEADER, b"r-2"),))])
    second.produce_batch([Message(PURCHASE_HISTORY, b"u3", b"{}")])
    records = first.consumer(group="g", topics=[PURCHASE_HISTORY]).poll_batch(timeout=0)
    assert [(r.offset, r.header(REQUEST_ID_HEADER)) for r in records] == [(0, None), (1, "r-2"), (2, None)]
    columns = [c[1] for c in sqlite3.connect(path).execute("PRAGMA table_info(log_1)")]
    assert columns.count("headers") == 1
    first.close()
    second.close()


@pytest.mark.parametrize("blob", [b"not json", b"{\"a\": 1}", b"[[1]]"])
def test_a_corrupt_header_blob_reads_as_no_headers(blob: bytes) -> None:
    from notify_core.stream.port import decode_headers

    assert decode_headers(blob) == ()


def test_a_tracking_click_carries_its_request_id_to_the_stored_click_event(tmp_path: Path) -> None:
    """GET /t/<notification id> with a request id: the notification_click event it records reaches the
    Store's ``user_events`` with that id beside the notification id (which joins the delivery log)."""
    from datetime import UTC, datetime

    from lambdas import track
    from notify_core.delivery.tracking import sign_token
    from notify_core.security.keyring import ephemeral_keyring
    from tests.observability.test_reports import delivered_day

    store, _base, sent = delivered_day(tmp_path)
    log = LocalLog(tmp_path / "log.sqlite")
    keys = ephemeral_keyring("tracking", now=datetime.now(UTC))
    track.use(store=store, stream=log, keys=keys)  # the click is recorded at the system clock's time
    try:
        with local_gateway() as base:
            token = sign_token(keys, sent[0], kind="click")
            reply = httpx.get(f"{base}/t/{token}", headers={"x-request-id": "click-77"}, timeout=30)
    finally:
        track.use(store=None, stream=None)
    assert reply.status_code == 302
    consumer = EventConsumer(stream=log, store=store, landing=None, poll_timeout=0.1, clock=SYSTEM_CLOCK)
    assert consumer.run_once() is not None
    consumer.close()
    [delivery] = store.table(tables.DELIVERIES).query(sent[0])
    [row] = [r for r in store.table(tables.USER_EVENTS).query(str(delivery["user_id"]))
             if r["type"] == "notification_click"]
    assert row["request_id"] == "click-77" and row["notification_id"] == sent[0]
    log.close()
    store.close()


def test_the_delivery_log_names_the_invocation_that_made_each_attempt(tmp_path: Path) -> None:
    """The deliver_notifications Lambda binds its request id (the Dagster asset its run id): every
    ``deliveries`` row of that run carries it, on the worker's sending threads too."""
    from datetime import UTC, datetime, timedelta

    from lambdas import deliver_notifications
    from notify_core.clock import ManualClock
    from notify_core.delivery.synthetic import seed_due
    from notify_core.delivery.worker import DeliveryWorker, WorkerOptions
    from tests.delivery.conftest import ScriptedChannel

    store = SqliteStore(tmp_path / "store.sqlite")
    start = datetime.fromtimestamp((int(datetime.now(UTC).timestamp()) // 60 + 60) * 60, UTC)
    items = seed_due(store, n=12, start=start)
    clock = ManualClock(start + timedelta(seconds=5))
    worker = DeliveryWorker(store, ScriptedChannel(), public_base_url="http://t.example", clock=clock,
                            options=WorkerOptions(concurrency=4, prefetch_s=0.0))
    deliver_notifications.use_worker(worker)

    class Context:
        aws_request_id = "lambda-req-9"

        def get_remaining_time_in_millis(self) -> int:
            return 20_000

    try:
        reply = deliver_notifications.handler({"linger_s": 0, "max_seconds": 10}, Context())
    finally:
        deliver_notifications.use_worker(None)
        worker.close()
    assert reply["delivered"] == 12
    rows = [r for i in items for r in store.table(tables.DELIVERIES).query(str(i["notification_id"]))]
    assert len(rows) == 12 and {r["request_id"] for r in rows} == {"lambda-req-9"}
    store.close()


def test_record_headers_round_trip_on_both_adapters(stream_backend: Stream) -> None:
    """Headers are part of the Stream contract now: what a message carries, its record carries (several,
    repeated names, non-ASCII text), and a message without headers reads back with none."""
    key = b"hdr-user"
    headers = ((REQUEST_ID_HEADER, b"r-1"), ("x-trace", "é-1".encode()), (REQUEST_ID_HEADER, b"r-2"))
    stream_backend.produce_batch([Message(CLICKSTREAM, key, b"{}", headers), Message(CLICKSTREAM, key, b"{}")])
    consumer = stream_backend.consumer(group="hdr-check", topics=[CLICKSTREAM])
    got = []
    for _ in range(50):
        got += consumer.poll_batch(max_records=10, timeout=0.5)
        if len(got) >= 2:
            break
    consumer.close()
    assert [r.headers for r in got] == [headers, ()]
    assert got[0].header(REQUEST_ID_HEADER) == "r-2" and got[0].header("x-trace") == "é-1"
    assert got[1].header(REQUEST_ID_HEADER) is None

"""An order dated far ahead of the consumer's clock, written straight to the log: dead-lettered, not persisted.

Capture refuses an event more than ``bounds.MAX_CLOCK_SKEW`` ahead of its clock, and batch ingestion
quarantines such a row ("ts above MAX_FUTURE_SKEW"); the consumer's full decode (a record without
capture's mark: another writer on ``purchase_history``) used to validate with no ``now``, so a year-9999
order reached the Store (the poison that once made every user's recency three million days) and the
landing file the lake then refused. The consumer now decodes with its clock's time, in process and in the
decoding process alike (both through ``prepare_columns``).
"""

from __future__ import annotations

import json
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from notify_core.errors import ValidationError
from notify_core.events import PURCHASE_HISTORY, dlq_topic
from notify_core.events.consumer import EventConsumer
from notify_core.events.models import decode_event, json_time
from notify_core.ingest.batch import ingest_dataset
from notify_core.lake import Lake
from notify_core.store import tables
from notify_core.store.sqlite import SqliteStore
from notify_core.stream.local_log import LocalLog
from notify_core.stream.port import Message
from tests.events.helpers import EVENTS_NOW, events_clock, order


def test_decode_event_applies_the_upper_time_bound_given_the_consumers_now() -> None:
    value = json.dumps(dict(order(7, ts="9999-12-31T23:59:59Z"), event_id="far-future")).encode()
    with pytest.raises(ValidationError, match="ahead of now"):
        decode_event(value, now=EVENTS_NOW)
    inside = json.dumps(order(7, ts=json_time(EVENTS_NOW + timedelta(hours=23)))).encode()
    assert decode_event(inside, now=EVENTS_NOW).user_id == "u7"  # within MAX_CLOCK_SKEW: fine


@pytest.mark.parametrize("decode_process", [False, True], ids=["in-process", "decode-process"])
@pytest.mark.parametrize("ts", ["9999-12-31T23:59:59Z", json_time(EVENTS_NOW + timedelta(days=2))])
def test_an_order_dated_past_the_consumers_clock_written_to_the_log_is_dead_lettered(
        tmp_path: Path, decode_process: bool, ts: str) -> None:
    log, store = LocalLog(tmp_path / "log.sqlite"), SqliteStore(tmp_path / "store.sqlite")
    landing = tmp_path / "landing"
    try:
        poison = dict(order(7, ts=ts), event_id="far-future")
        log.produce_batch([Message(PURCHASE_HISTORY, b"u7", json.dumps(poison).encode()),
                           Message(PURCHASE_HISTORY, b"u1", json.dumps(order(1)).encode())])
        consumer = EventConsumer(stream=log, store=store, landing=landing / "purchases", poll_timeout=0.1,
                                 clock=events_clock(), decode_process=decode_process)
        try:
            totals = consumer.run(stop=threading.Event(), idle_exit=0.5)
        finally:
            consumer.close()
        assert (totals.persisted, totals.dead_lettered) == (1, 1)
        reader = log.consumer(group="dlq-reader", topics=[dlq_topic(PURCHASE_HISTORY)])
        letters: list[dict[str, Any]] = [json.loads(r.value) for r in reader.poll_batch(max_records=10, timeout=0.5)]
        assert len(letters) == 1 and "ahead of now" in letters[0]["reason"]
        assert {row["order_id"] for row in store.table(tables.PURCHASES).scan()} == {"o1"}
        report = ingest_dataset("purchases", landing=landing, lake=Lake(tmp_path / "lake"), store=store,
                                quarantine=tmp_path / "q", clock=events_clock())
        assert not report.bad_rows, [(b.key, b.reason) for b in report.bad_rows]
    finally:
        store.close()
        log.close()

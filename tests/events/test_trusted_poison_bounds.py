"""Marked (x-notify-validated) orders beyond the bounds: dead-lettered with a reason, never a crash loop.

The audit's case: two lines of one product, 2^62 units each, marked as validated. The trusted path used
to check only the shape of order lines, so the merged row (2^63) reached the landing file, whose Int64
column refused it with a polars error that was neither a ValidationError nor a BackendError: run() died
uncommitted, and every restart died on the same record. What must hold now: the trusted path applies the
models' bounds (each line, and the lines of one product merged), so such a record takes the full decode
and is dead-lettered with its reason; and should a record still reach the landing file with lines it
cannot hold, the batch is isolated record by record and that record dead-lettered, with or without the
decoding process.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from notify_core.errors import ValidationError
from notify_core.events import CLICKSTREAM, PURCHASE_HISTORY, dlq_topic, models
from notify_core.events.consumer import BatchOutcome, EventConsumer, prepare_encoded, record_columns
from notify_core.events.models import VALIDATED_HEADERS, decode_trusted, encode_event, parse_event
from notify_core.store import tables
from notify_core.store.sqlite import SqliteStore
from notify_core.stream.local_log import LocalLog
from notify_core.stream.port import Message, Record
from tests.events.helpers import EVENTS_NOW, click, events_clock, order


def _marked(payload: dict[str, Any]) -> Message:
    topic = PURCHASE_HISTORY if payload["type"] == "order" else CLICKSTREAM
    return Message(topic, b"k", encode_event(parse_event(payload)), VALIDATED_HEADERS)


def _poison(items: list[dict[str, Any]], event_id: str = "poison-order") -> Message:
    """A marked order in the canonical form whose lines are ``items`` (written past the models)."""
    doc = json.loads(encode_event(parse_event(order(90))))
    doc["items"], doc["event_id"] = items, event_id
    return Message(PURCHASE_HISTORY, b"k", json.dumps(doc).encode(), VALIDATED_HEADERS)


OVERFLOW = [{"product_id": "p1", "quantity": 2**62, "unit_price": 1.0},
            {"product_id": "p1", "quantity": 2**62, "unit_price": 1.0}]  # merged: 2^63, past Int64
GOOD = [order(1), click(2), order(3), click(4)]


def _fill(path: Path, poison: Message) -> LocalLog:
    stream = LocalLog(path)
    good = [_marked(p) for p in GOOD]
    stream.produce_batch([good[0], good[1], poison, good[2], good[3]])  # the poison among good records
    return stream


def _run(tmp_path: Path, stream: LocalLog, *, decode_process: bool = False) -> tuple[BatchOutcome, int]:
    store = SqliteStore(tmp_path / "store.sqlite")
    consumer = EventConsumer(stream=stream, store=store, landing=tmp_path / "landing", poll_timeout=0.1,
                             clock=events_clock(), decode_process=decode_process)
    try:
        return consumer.run(stop=threading.Event(), idle_exit=0.5), consumer.lag()
    finally:
        consumer.close()
        store.close()


def _letters(stream: LocalLog) -> list[dict[str, Any]]:
    reader = stream.consumer(group="dlq-reader", topics=[dlq_topic(PURCHASE_HISTORY), dlq_topic(CLICKSTREAM)])
    try:
        return [json.loads(r.value) for r in reader.poll_batch(max_records=100, timeout=0.5)]
    finally:
        reader.close()


def _assert_landed_without_the_poison(tmp_path: Path, stream: LocalLog, totals: BatchOutcome, lag: int,
                                      reason: str) -> None:
    assert (totals.persisted, totals.dead_lettered, lag) == (4, 1, 0)
    letters = _letters(stream)
    assert len(letters) == 1 and json.loads(letters[0]["value"])["event_id"] == "poison-order"
    assert reason in letters[0]["reason"]
    store = SqliteStore(tmp_path / "store.sqlite")
    try:
        purchases = list(store.table(tables.PURCHASES).scan())
        assert {row["order_id"] for row in purchases} == {"o1", "o3"}  # nothing of the poison order
        assert {row["pk"] for row in store.table(tables.EVENTS).scan()} == {
            parse_event(order(1)).id, parse_event(order(3)).id}
        assert len(list(store.table(tables.USER_EVENTS).scan())) == 2
    finally:
        store.close()
    landed = pl.concat([pl.read_parquet(path) for path in sorted((tmp_path / "landing").glob("*.parquet"))])
    assert set(landed["order_id"]) == {"o1", "o3"}
    again, lag = _run(tmp_path, stream)  # a restart: nothing left to do, nothing written twice
    assert (again.records, again.dead_lettered, lag) == (0, 0, 0)
    assert len(_letters(stream)) == 1


@pytest.mark.parametrize("decode_process", [False, True], ids=["in-process", "decode-process"])
def test_a_marked_order_merging_past_int64_is_dead_lettered_and_the_good_records_land(
        tmp_path: Path, decode_process: bool) -> None:
    stream = _fill(tmp_path / "log.sqlite", _poison(OVERFLOW))
    try:
        totals, lag = _run(tmp_path, stream, decode_process=decode_process)  # used to raise, on every start
        _assert_landed_without_the_poison(tmp_path, stream, totals, lag, reason="quantity")
    finally:
        stream.close()


def test_marked_lines_within_bounds_that_merge_past_them_are_dead_lettered_with_the_bound(tmp_path: Path) -> None:
    """Each line within MAX_QUANTITY, their merged row (the one ``purchases`` row of the product) not."""
    items = [{"product_id": "p1", "quantity": 600_000, "unit_price": 1.0},
             {"product_id": "p1", "quantity": 600_000, "unit_price": 2.0}]
    poison = _poison(items)
    assert decode_trusted(poison.value) is None  # not trusted: the models decide, and name the bound
    with pytest.raises(ValidationError, match="merged"):
        models.decode_event(poison.value)
    with pytest.raises(ValidationError, match="merged"):
        parse_event(order(1, items=items))  # the edge refuses it too (one owner of the bound)
    parse_event(order(1, items=[{**items[0], "quantity": 400_000}, items[1]]))  # merged 10^6: at the bound, fine
    stream = _fill(tmp_path / "log.sqlite", poison)
    try:
        totals, lag = _run(tmp_path, stream)
        _assert_landed_without_the_poison(tmp_path, stream, totals, lag, reason="merged")
    finally:
        stream.close()


def _shape_only(lines: Any) -> bool:
    """The trusted path's old line check (shape only): a bound that slips past it, for the fallback."""
    return all(type(line.quantity) is int and type(line.unit_price) is float for line in lines)


def test_lines_the_landing_file_cannot_hold_are_isolated_into_the_dead_letters(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever slips past the bounds: a landing file that cannot be built fails the batch, which is then
    written record by record; the record at fault is dead-lettered with the reason, the rest land."""
    monkeypatch.setattr(models, "_lines", _shape_only)
    stream = _fill(tmp_path / "log.sqlite", _poison(OVERFLOW))
    try:
        totals, lag = _run(tmp_path, stream)
        _assert_landed_without_the_poison(tmp_path, stream, totals, lag, reason="landing file")
    finally:
        stream.close()


def test_the_decoding_process_leaves_an_unbuildable_landing_file_to_the_writer_which_isolates_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """:func:`prepare_encoded` (the decoding process's work, run here so the patch applies) does not raise
    on such lines: it keeps them, and the writer meets the error and isolates the record, as above."""
    monkeypatch.setattr(models, "_lines", _shape_only)
    stream = _fill(tmp_path / "log.sqlite", _poison(OVERFLOW))
    store = SqliteStore(tmp_path / "store.sqlite")
    consumer = EventConsumer(stream=stream, store=store, landing=tmp_path / "landing", poll_timeout=0.1,
                             clock=events_clock())
    try:
        encoders = consumer._row_encoders()
        assert encoders is not None
        reader = stream.consumer(group="probe", topics=[PURCHASE_HISTORY, CLICKSTREAM])
        records: list[Record] = list(reader.poll_batch(max_records=100, timeout=0.5))
        reader.close()
        prepared = prepare_encoded(record_columns(records), encoders, True, EVENTS_NOW)
        assert prepared.landing is None and prepared.purchases  # left to the writer
        prepared.records = records
        out = consumer._write_with_retry(prepared)
        assert (out.persisted, out.dead_lettered) == (4, 1)
        letters = _letters(stream)
        assert len(letters) == 1 and "landing file" in letters[0]["reason"]
        assert {row["order_id"] for row in store.table(tables.PURCHASES).scan()} == {"o1", "o3"}
    finally:
        consumer.close()
        store.close()
        stream.close()

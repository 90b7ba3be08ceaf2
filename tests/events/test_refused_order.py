"""An order the Store refuses a row of is dead-lettered whole: no line of it in the Store or a landing file.

The audit's case: the Store refused an order's ``events`` ledger row (written after its ``purchases``
lines and, then, after the landing file). The batch was isolated record by record and the order
dead-lettered, but its lines were already in ``purchases`` and in two landing files (the batch's and its
own), so analytics counted an order the dead-letter queue holds. What must hold now: the landing file is
put after the ledger rows (a refused row stops the write before it), the rows a refused record's failed
writes did put are deleted, and the other records of the batch are persisted whole. Also: the batch's
positions are written once, after its dead letters (they were written record by record, past refused
records not yet dead-lettered: a stop or a crash there lost their dead letters).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from notify_core.errors import BackendError, ValidationError
from notify_core.events import PURCHASE_HISTORY, capture_events, dlq_topic, parse_event
from notify_core.events.consumer import EventConsumer, StoppedWhileRetryingError
from notify_core.store import tables
from notify_core.store.port import Item, Store
from notify_core.store.sqlite import EncodedRows, SqliteStore
from notify_core.stream.local_log import LocalLog
from notify_core.stream.port import Message, OnRevoke, StartAt, StreamConsumer
from tests.events.helpers import click, events_clock, order
from tests.events.store_faults import FaultyStore, TableStandIn

MARK = "the-store-refuses-this-ledger-row"
REFUSED = order(2, properties={"note": MARK})  # only its ledger row carries its properties


class _RefusingLedger(TableStandIn):
    """``events`` refusing (a data error) a ledger row carrying :data:`MARK`, through ``batch_put`` or, with
    the decoding process, ``put_encoded``."""

    def batch_put(self, items: Iterable[Item]) -> int:
        items = list(items)
        if any(MARK in json.dumps(item) for item in items):
            raise ValidationError("cannot store item: a value the backend refuses")
        return self.table.batch_put(items)

    def put_encoded(self, rows: EncodedRows) -> int:
        if any(MARK.encode() in payload for payload in rows.payloads):
            raise ValidationError("cannot store item: a value the backend refuses")
        return self.table.put_encoded(rows)  # type: ignore[attr-defined,no-any-return]


def _refusing(store: Store) -> FaultyStore:
    return FaultyStore(store, name=tables.EVENTS, stand_in=_RefusingLedger)


def _dead_letters(stream: LocalLog) -> list[dict[str, Any]]:
    reader = stream.consumer(group="dlq-reader", topics=[dlq_topic(PURCHASE_HISTORY)])
    try:
        return [json.loads(r.value) for r in reader.poll_batch(max_records=100, timeout=0.5)]
    finally:
        reader.close()


def _landed_orders(landing: Path) -> list[set[str]]:
    """The order ids of each landing file."""
    return [set(pl.read_parquet(path)["order_id"]) for path in sorted(landing.glob("*.parquet"))]


@pytest.mark.parametrize("decode_process", [False, True], ids=["in-process", "decode-process"])
def test_an_order_whose_ledger_row_the_store_refuses_leaves_no_line_behind(tmp_path: Path,
                                                                           decode_process: bool) -> None:
    stream = LocalLog(tmp_path / "log.sqlite")
    body = json.dumps([order(1), REFUSED, order(3), click(4)])  # the refused order amid good ones
    assert capture_events(body, stream=stream, clock=events_clock()).accepted == 4
    store = _refusing(SqliteStore(tmp_path / "store.sqlite"))
    consumer = EventConsumer(stream=stream, store=store, landing=tmp_path / "landing",
                             poll_timeout=0.1, clock=events_clock(), decode_process=decode_process)
    try:
        totals = consumer.run(stop=threading.Event(), idle_exit=1.0)
        assert (totals.persisted, totals.dead_lettered, consumer.lag()) == (3, 1, 0)
    finally:
        consumer.close()
    letters = _dead_letters(stream)
    assert [json.loads(d["value"])["order_id"] for d in letters] == ["o2"]
    assert "the Store cannot hold it" in letters[0]["reason"]
    purchases = list(store.table(tables.PURCHASES).scan())
    assert sorted(row["order_id"] for row in purchases) == ["o1", "o1", "o3", "o3"]  # o2: none of its lines
    assert {row["pk"] for row in store.table(tables.EVENTS).scan()} == {parse_event(order(1)).id,
                                                                       parse_event(order(3)).id}
    assert len(list(store.table(tables.USER_EVENTS).scan())) == 1
    landed = _landed_orders(tmp_path / "landing")
    assert landed and all("o2" not in orders for orders in landed)
    assert set().union(*landed) == {"o1", "o3"}
    store.close()
    stream.close()


def test_a_refused_order_leaves_the_line_another_event_of_that_order_wrote(tmp_path: Path) -> None:
    """An order line's key is (user, time, order, product): another event of the same order line (the
    order captured again under another id) shares it. Deleting the refused event's lines must not take
    that event's lines with them."""
    stream = LocalLog(tmp_path / "log.sqlite")
    kept = order(2, properties={"note": "kept"})
    capture_events(json.dumps([kept, REFUSED]), stream=stream, clock=events_clock())
    store = _refusing(SqliteStore(tmp_path / "store.sqlite"))
    consumer = EventConsumer(stream=stream, store=store, landing=tmp_path / "landing",
                             poll_timeout=0.1, clock=events_clock())
    try:
        totals = consumer.run(stop=threading.Event(), idle_exit=1.0)
        assert (totals.persisted, totals.dead_lettered) == (1, 1)
    finally:
        consumer.close()
    kept_id = parse_event(kept).id
    assert kept_id != parse_event(REFUSED).id
    assert [json.loads(d["value"])["properties"]["note"] for d in _dead_letters(stream)] == [MARK]
    purchases = list(store.table(tables.PURCHASES).scan())
    assert len(purchases) == 2 and all(row["event_id"] == kept_id for row in purchases)
    assert [row["pk"] for row in store.table(tables.EVENTS).scan()] == [kept_id]
    store.close()
    stream.close()


class _DeadLettersDown:
    """The local log, but producing to a dead-letter topic fails (BackendError) while ``down`` is set;
    the first failure sets ``stop`` (a SIGTERM while the batch keeps failing)."""

    def __init__(self, log: LocalLog, stop: threading.Event) -> None:
        self.log, self.stop, self.down = log, stop, threading.Event()
        self.down.set()

    def produce_batch(self, messages: Sequence[Message]) -> None:
        if self.down.is_set():
            self.stop.set()
            raise BackendError("stream unavailable")
        self.log.produce_batch(messages)

    def produce(self, topic: str, key: bytes | None, value: bytes) -> None:
        self.produce_batch([Message(topic, key, value)])

    def consumer(self, *, group: str, topics: Sequence[str], start_at: StartAt | None = None,
                 on_revoke: OnRevoke | None = None) -> StreamConsumer:
        return self.log.consumer(group=group, topics=topics, start_at=start_at, on_revoke=on_revoke)

    def end_offsets(self, topic: str) -> dict[int, int]:
        return self.log.end_offsets(topic)

    def close(self) -> None:
        self.log.close()


def test_an_isolated_batch_moves_the_stored_position_only_after_its_dead_letters(tmp_path: Path) -> None:
    """A member starts where the Store's position says: written past a refused record before its dead
    letter was produced, a stop (or a kill -9) there lost the dead letter for good."""
    log = LocalLog(tmp_path / "log.sqlite")
    capture_events(json.dumps([order(1), REFUSED, order(3)]), stream=log, clock=events_clock())
    stop = threading.Event()
    stream = _DeadLettersDown(log, stop)
    store = _refusing(SqliteStore(tmp_path / "store.sqlite"))
    consumer = EventConsumer(stream=stream, store=store, landing=tmp_path / "landing",
                             poll_timeout=0.1, clock=events_clock())
    try:
        with pytest.raises(StoppedWhileRetryingError):
            consumer.run(stop=stop)
        assert consumer.stored_positions([(PURCHASE_HISTORY, 0)]) == {}
    finally:
        consumer.close()
    stream.down.clear()  # the stream is back: the next consumer isolates the batch again, dead letter included
    again = EventConsumer(stream=stream, store=store, landing=tmp_path / "landing",
                          poll_timeout=0.1, clock=events_clock())
    try:
        totals = again.run(stop=threading.Event(), idle_exit=1.0)
        assert (totals.persisted, totals.dead_lettered, again.lag()) == (2, 1, 0)
    finally:
        again.close()
    assert [json.loads(d["value"])["order_id"] for d in _dead_letters(log)] == ["o2"]
    assert {row["order_id"] for row in store.table(tables.PURCHASES).scan()} == {"o1", "o3"}
    store.close()
    log.close()

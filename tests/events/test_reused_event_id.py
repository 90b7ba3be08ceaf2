"""A client event_id reused for other content: stored the same way whatever the consumer's batching.

The consumer used to drop a repeated event_id within one poll as a "duplicate" (no row, no dead letter)
but persist both records when they arrived in two polls (their ``<ts>#<event_id>`` keys differ): one row
or two for the same two acknowledged events, depending on batch boundaries. Now a repeat is a duplicate
only when it is the same event (same bytes or same rows); another content under the id is written as the
cross-batch case writes it (see ``prepare_columns``), and a true duplicate is still written once.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

from notify_core.events import capture_events
from notify_core.events.consumer import BatchOutcome, EventConsumer
from notify_core.events.models import parse_event, topic_for
from notify_core.store import tables
from notify_core.store.sqlite import SqliteStore
from notify_core.stream.local_log import LocalLog
from notify_core.stream.port import Message
from tests.events.helpers import click, events_clock, order

PAIRS = {
    "clicks at two times": (click(1, event_id="reused"), click(2, event_id="reused")),
    "clicks at one time, another campaign": (click(1, event_id="reused"),
                                             click(1, event_id="reused", campaign_id="c9")),
    "orders, another country": (order(1, event_id="reused"), order(1, event_id="reused", country="France")),
    "orders at two times": (order(1, event_id="reused"), order(2, event_id="reused")),
}


def _consume(log: LocalLog, store: SqliteStore, *, decode_process: bool = False) -> BatchOutcome:
    consumer = EventConsumer(stream=log, store=store, landing=None, poll_timeout=0.1, clock=events_clock(),
                             decode_process=decode_process)
    try:
        return consumer.run(stop=threading.Event(), idle_exit=0.5)
    finally:
        consumer.close()


def _produce(log: LocalLog, payload: dict[str, Any], *, marked: bool) -> None:
    if marked:  # through capture: two requests, each answered 202
        assert capture_events(json.dumps(payload), stream=log, clock=events_clock()).accepted == 1
    else:  # another writer on the topic
        log.produce_batch([Message(topic_for(parse_event(payload)), payload["user_id"].encode(),
                                   json.dumps(payload).encode())])


def _stored(tmp_path: Path, pair: tuple[dict[str, Any], dict[str, Any]], *, one_poll: bool,
            marked: bool, decode_process: bool = False) -> tuple[dict[str, list[dict[str, Any]]], int]:
    name = f"{'one' if one_poll else 'two'}-{marked}-{decode_process}"
    log, store = LocalLog(tmp_path / f"log-{name}.sqlite"), SqliteStore(tmp_path / f"store-{name}.sqlite")
    try:
        written = 0
        for i, payload in enumerate(pair):
            _produce(log, payload, marked=marked)
            if not one_poll or i == len(pair) - 1:
                totals = _consume(log, store, decode_process=decode_process)
                written += totals.persisted
                assert totals.duplicates == totals.dead_lettered == 0
        content = {table: sorted((_bare(row) for row in store.table(table).scan()), key=lambda r: (r["pk"], r["sk"]))
                   for table in (tables.USER_EVENTS, tables.PURCHASES, tables.EVENTS)}
        return content, written
    finally:
        store.close()
        log.close()


def _bare(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k != "request_id"}


@pytest.mark.parametrize("marked", [True, False], ids=["marked", "unmarked"])
@pytest.mark.parametrize("name", list(PAIRS))
def test_a_reused_event_id_is_persisted_the_same_way_whatever_the_consumers_batching(
        tmp_path: Path, name: str, marked: bool) -> None:
    together, written_together = _stored(tmp_path, PAIRS[name], one_poll=True, marked=marked)
    apart, written_apart = _stored(tmp_path, PAIRS[name], one_poll=False, marked=marked)
    assert together == apart
    assert written_together == written_apart == 2  # both acknowledged events written, none dropped
    if name == "clicks at two times":
        assert len(together[tables.USER_EVENTS]) == 2


def test_the_decoding_process_keeps_a_reused_id_the_same_way(tmp_path: Path) -> None:
    """The decoding process runs the same ``prepare_columns``: both events of the reused id, in one poll."""
    pair = PAIRS["clicks at two times"]
    together, written = _stored(tmp_path, pair, one_poll=True, marked=True, decode_process=True)
    assert written == 2 and together == _stored(tmp_path, pair, one_poll=False, marked=True)[0]


def test_the_same_event_twice_in_one_poll_is_still_written_once(tmp_path: Path) -> None:
    """A retry (same content, another request or another form of the same JSON) stays a duplicate."""
    log, store = LocalLog(tmp_path / "log.sqlite"), SqliteStore(tmp_path / "store.sqlite")
    try:
        payload = click(1, event_id="again", properties={"a": 1, "b": 2})
        _produce(log, payload, marked=True)
        _produce(log, payload, marked=True)
        reordered = dict(reversed(list({**payload, "properties": {"b": 2, "a": 1}}.items())))
        _produce(log, reordered, marked=False)  # other bytes, the same event
        totals = _consume(log, store)
        assert (totals.persisted, totals.duplicates, totals.dead_lettered) == (1, 2, 0)
        assert len(list(store.table(tables.USER_EVENTS).scan())) == 1
    finally:
        store.close()
        log.close()

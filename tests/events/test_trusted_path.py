"""The consumer's trusted path (issue 21): events capture validated skip the models' second decode.

What must hold: a marked record in the canonical form gives the very rows the models' path gives (byte
for byte, so a replay through either path rewrites identical rows); a marked record that does not look
right falls back to the models, which persist it or dead-letter it with their reason; an unmarked record
is always decoded by the models.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

from notify_core.events import CLICKSTREAM, PURCHASE_HISTORY, capture_events, dlq_topic
from notify_core.events.consumer import EventConsumer
from notify_core.events.models import VALIDATED_HEADER, VALIDATED_HEADERS, decode_trusted, encode_event, parse_event
from notify_core.store import tables
from notify_core.store.sqlite import SqliteStore
from notify_core.stream.local_log import LocalLog
from notify_core.stream.port import REQUEST_ID_HEADER, Message, Record
from tests.events.helpers import click, events_clock, order

EVENTS = [
    click(1),
    click(2, properties={"a": 1, "b": "x", "c": True, "d": 2.5}),
    click(3, ts="2024-03-01T12:00:01.25+02:00", product_id="p9", notification_id="n1", url="https://x.test/a"),
    {"type": "campaign_view", "user_id": "u1", "ts": "2024-03-01T10:00:00Z", "campaign_id": "c1"},
    {"type": "notification_open", "user_id": "u2", "ts": "2024-03-01T10:00:00.000001Z", "notification_id": "n1"},
    {"type": "notification_click", "user_id": "u3", "ts": "2024-03-01T10:00:00", "notification_id": "n1",
     "campaign_id": "c1", "url": "https://x.test/b", "event_id": "client-id-1"},
    order(4),
    order(5, country=None, properties={"coupon": "X1"}),
    order(6, items=[{"product_id": "p1", "quantity": 2, "unit_price": 3},
                    {"product_id": "p1", "quantity": -1, "unit_price": 4.0}]),
]


def _record(value: bytes, *, topic: str, offset: int, marked: bool, rid: str | None = "req-1") -> Record:
    headers: tuple[tuple[str, bytes], ...] = ((REQUEST_ID_HEADER, rid.encode()),) if rid else ()
    return Record(topic, 0, offset, b"k", value, 0, headers + (VALIDATED_HEADERS if marked else ()))


def _topic(payload: dict[str, Any]) -> str:
    return PURCHASE_HISTORY if payload["type"] == "order" else CLICKSTREAM


def _stored(prepared: Any) -> list[str]:
    """The JSON each row is stored as, in write order: what must be equal byte for byte."""
    return [json.dumps(row) for rows in (prepared.purchases, prepared.user_events, prepared.ledger) for row in rows]


@pytest.fixture
def consumer(tmp_path: Path) -> Any:
    stream = LocalLog(tmp_path / "log.sqlite")
    store = SqliteStore(tmp_path / "store.sqlite")
    consumer = EventConsumer(stream=stream, store=store, landing=tmp_path / "landing", poll_timeout=0.1,
                             clock=events_clock())
    yield consumer
    consumer.close()
    store.close()
    stream.close()


@pytest.mark.parametrize("rid", ["req-1", None])
def test_trusted_rows_equal_the_models_rows_byte_for_byte(consumer: EventConsumer, rid: str | None) -> None:
    values = [encode_event(parse_event(payload)) for payload in EVENTS]  # what capture produces
    assert all(decode_trusted(v) is not None for v in values)  # every one takes the trusted path
    marked = [_record(v, topic=_topic(p), offset=i, marked=True, rid=rid)
              for i, (v, p) in enumerate(zip(values, EVENTS, strict=True))]
    plain = [r._replace(headers=r.headers[:-1]) for r in marked]
    fast, slow = consumer.prepare(marked), consumer.prepare(plain)
    assert _stored(fast) == _stored(slow)
    assert vars(fast.outcome) == vars(slow.outcome)
    assert fast.outcome.persisted == len(EVENTS) and not fast.poison


def test_a_duplicate_within_a_batch_is_written_once_on_either_path(consumer: EventConsumer) -> None:
    value = encode_event(parse_event(click(1)))
    records = [_record(value, topic=CLICKSTREAM, offset=i, marked=i % 2 == 0) for i in range(4)]
    prepared = consumer.prepare(records)
    assert (prepared.outcome.persisted, prepared.outcome.duplicates, len(prepared.user_events)) == (1, 3, 1)


def _canonical_click() -> dict[str, Any]:
    return json.loads(encode_event(parse_event(click(1))))


MALFORMED = {
    "not JSON": (b'{"type": "click", ', "undecodable"),
    "a JSON array": (b"[1, 2]", "event"),
    "unknown type": (json.dumps({**_canonical_click(), "type": "swipe"}).encode(), "unknown event type"),
    "type not a string": (json.dumps({**_canonical_click(), "type": ["click"]}).encode(), "type"),
    "unknown field": (json.dumps({**_canonical_click(), "colour": "red"}).encode(), "colour"),
    "user_id a number": (json.dumps({**_canonical_click(), "user_id": 7}).encode(), "user_id"),
    "user_id missing": (json.dumps({k: v for k, v in _canonical_click().items() if k != "user_id"}).encode(),
                        "user_id"),
    "month 13": (json.dumps({**_canonical_click(), "ts": "2024-13-01T10:00:00Z"}).encode(), "ts"),
    "ts before 2000": (json.dumps({**_canonical_click(), "ts": "1999-01-01T10:00:00Z"}).encode(), "2000"),
    "properties null": (json.dumps({**_canonical_click(), "properties": None}).encode(), "properties"),
    "properties a list": (json.dumps({**_canonical_click(), "properties": []}).encode(), "properties"),
    "nested property": (json.dumps({**_canonical_click(), "properties": {"a": {"b": 1}}}).encode(), "properties"),
    "property beyond 64 bits": (json.dumps({**_canonical_click(), "properties": {"n": 2**64}}).encode(), "64-bit"),
    "order line with an extra field": (
        json.dumps(order(1, event_id="o-1", items=[{"product_id": "p", "quantity": 1, "unit_price": 1.0,
                                                     "x": 1}])).encode(), "items"),
    "user_id over the models' longest field": (json.dumps({**_canonical_click(), "user_id": "u" * 3000}).encode(),
                                                "user_id"),
    "property text over 1,024 characters": (
        json.dumps({**_canonical_click(), "properties": {"a": "x" * 1025}}).encode(), "properties"),
    "more than 32 properties": (
        json.dumps({**_canonical_click(), "properties": {f"p{i}": i for i in range(33)}}).encode(), "properties"),
    "more than 500 order lines": (
        json.dumps(order(1, event_id="o-1", items=[{"product_id": f"p{i}", "quantity": 1, "unit_price": 1.0}
                                                    for i in range(501)])).encode(), "items"),
    "type repeated with another value": (json.dumps(_canonical_click()).encode()[:-1] + b', "type": "order"}',
                                         "order_id"),
    "an optional field null": (json.dumps({**_canonical_click(), "product_id": None}).encode(), None),
    "order line unit price an integer": (
        json.dumps(order(1, event_id="o-1", items=[{"product_id": "p", "quantity": 1, "unit_price": 2}])).encode(),
        None),
    "order line quantity zero": (
        json.dumps(order(1, event_id="o-1", items=[{"product_id": "p", "quantity": 0, "unit_price": 2.0}])).encode(),
        "quantity"),
    "order line quantity a string": (
        json.dumps(order(1, event_id="o-1", items=[{"product_id": "p", "quantity": "1",
                                                     "unit_price": 1.0}])).encode(), None),
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_a_marked_record_that_does_not_look_right_takes_the_models_path(consumer: EventConsumer, name: str) -> None:
    """Never persisted on trust: the models decide, and a defect is dead-lettered with their reason."""
    value, reason = MALFORMED[name]
    topic = PURCHASE_HISTORY if b'"order"' in value else CLICKSTREAM
    record = _record(value, topic=topic, offset=0, marked=True)
    assert decode_trusted(value) is None
    prepared = consumer.prepare([record])
    plain = consumer.prepare([record._replace(headers=record.headers[:-1])])  # the mark dropped
    if reason is None:  # the models accept it (lax "1" -> 1): the same rows as without the mark
        assert _stored(prepared) == _stored(plain) and prepared.outcome.persisted == 1
        return
    assert prepared.outcome.dead_lettered == 1 and prepared.outcome.persisted == 0
    letter = json.loads(prepared.poison[0].value)
    assert reason in letter["reason"] and letter["reason"] == json.loads(plain.poison[0].value)["reason"]


def test_a_marked_event_on_the_wrong_topic_is_dead_lettered(consumer: EventConsumer) -> None:
    value = encode_event(parse_event(order(1)))
    prepared = consumer.prepare([_record(value, topic=CLICKSTREAM, offset=0, marked=True)])
    assert prepared.outcome.dead_lettered == 1
    assert "does not belong on notify_clickstream" in json.loads(prepared.poison[0].value)["reason"]


def test_an_unmarked_record_is_always_decoded_by_the_models(consumer: EventConsumer) -> None:
    """Only capture's mark buys trust: an id the models' pattern refuses is persisted when marked (capture
    would never have produced it) and dead-lettered when not."""
    value = json.dumps({**_canonical_click(), "user_id": "has space"}).encode()
    assert consumer.prepare([_record(value, topic=CLICKSTREAM, offset=0, marked=False)]).outcome.dead_lettered == 1
    assert consumer.prepare([_record(value, topic=CLICKSTREAM, offset=0, marked=True)]).outcome.persisted == 1


def test_capture_marks_what_it_produced_and_the_consumer_persists_it(tmp_path: Path) -> None:
    stream = LocalLog(tmp_path / "log.sqlite")
    result = capture_events(json.dumps({"events": [click(1), order(2)]}), stream=stream, clock=events_clock())
    assert result.accepted == 2
    reader = stream.consumer(group="peek", topics=[CLICKSTREAM, PURCHASE_HISTORY])
    records = reader.poll_batch(max_records=10, timeout=0.5)
    reader.close()
    assert len(records) == 2 and all(r.header(VALIDATED_HEADER) == "1" for r in records)
    store = SqliteStore(tmp_path / "store.sqlite")
    consumer = EventConsumer(stream=stream, store=store, landing=tmp_path / "landing", poll_timeout=0.1,
                             clock=events_clock())
    totals = consumer.run(stop=threading.Event(), idle_exit=0.5)
    assert (totals.persisted, totals.dead_lettered, totals.purchase_rows, totals.user_event_rows) == (2, 0, 2, 1)
    assert consumer.lag() == 0
    consumer.close()
    assert len(list(store.table(tables.EVENTS).scan())) == 1
    store.close()
    stream.close()


def test_marked_poison_in_the_log_is_dead_lettered_and_the_consumer_commits_past_it(tmp_path: Path) -> None:
    """Straight into the log with the mark (a buggy or hostile writer): good events persist, every bad
    one is dead-lettered with its reason, the consumer neither stops nor stalls."""
    stream = LocalLog(tmp_path / "log.sqlite")
    good = [encode_event(parse_event(click(i))) for i in range(3)]
    bad = [MALFORMED[name][0] for name in ("not JSON", "unknown field", "month 13", "property beyond 64 bits")]
    stream.produce_batch([Message(CLICKSTREAM, b"k", v, VALIDATED_HEADERS) for v in [*good, *bad]])
    store = SqliteStore(tmp_path / "store.sqlite")
    consumer = EventConsumer(stream=stream, store=store, landing=tmp_path / "landing", poll_timeout=0.1,
                             clock=events_clock())
    totals = consumer.run(stop=threading.Event(), idle_exit=0.5)
    assert (totals.persisted, totals.dead_lettered) == (3, 4)
    assert consumer.lag() == 0
    consumer.close()
    reader = stream.consumer(group="dlq-reader", topics=[dlq_topic(CLICKSTREAM)])
    letters = [json.loads(r.value) for r in reader.poll_batch(max_records=100, timeout=0.5)]
    reader.close()
    assert len(letters) == 4 and all(letter["reason"] for letter in letters)
    assert len(list(store.table(tables.USER_EVENTS).scan())) == 3
    store.close()
    stream.close()


def test_the_trusted_shape_takes_up_to_500_order_lines_and_32_properties() -> None:
    """The README's bounds of the trusted path are bounds, not a cut below them: an order of exactly 500
    lines and a click with exactly 32 properties are decoded on trust (more takes the models' path, above)."""
    lines = [{"product_id": f"p{i}", "quantity": 1, "unit_price": 1.0} for i in range(500)]
    assert decode_trusted(json.dumps(order(1, event_id="o-1", items=lines)).encode()) is not None
    props = {**_canonical_click(), "properties": {f"p{i}": i for i in range(32)}}
    assert decode_trusted(json.dumps(props).encode()) is not None

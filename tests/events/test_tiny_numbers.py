"""Numbers too close to zero for DynamoDB (audit finding 2): the edge refuses them, so every backend keeps
what capture acknowledged.

A property or unit price of 1e-200 used to pass the models' bounds: capture answered 202, SQLite persisted
the event and DynamoDB (whose Number type stops at 1E-130) had the consumer dead-letter it, an acknowledged
event lost on one backend only. :func:`notify_core.bounds.float_reason` now refuses a nonzero magnitude
below 1e-130, so the client gets a 400 with the reason, the same on every backend, and a record that
reaches the log some other way is dead-lettered with that reason on every backend alike.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lambdas import capture_events as capture_handler
from notify_core.events import CLICKSTREAM, PURCHASE_HISTORY, capture_events, dlq_topic
from notify_core.events.consumer import EventConsumer
from notify_core.events.models import decode_trusted, encode_event, parse_event
from notify_core.store import tables
from notify_core.store.port import Store
from notify_core.store.sqlite import SqliteStore
from notify_core.stream.local_log import LocalLog
from notify_core.stream.port import Message
from tests.events.helpers import api_event, click, events_clock, order
from tests.servers import scratch_dynamo_store

TINY = 1e-200


@pytest.fixture
def log(tmp_path: Path) -> Iterator[LocalLog]:
    stream = LocalLog(tmp_path / "log.sqlite")
    capture_handler.use_stream(stream)
    yield stream
    capture_handler.use_stream(None)
    stream.close()


@pytest.fixture(params=[pytest.param("sqlite", id="sqlite"),
                        pytest.param("dynamodb", id="dynamodb", marks=pytest.mark.dynamodb)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        sqlite_store = SqliteStore(tmp_path / "store.sqlite")
        yield sqlite_store
        sqlite_store.close()
        return
    endpoint: str = request.getfixturevalue("dynamodb_endpoint")
    with scratch_dynamo_store(endpoint, name="tiny", region="us-east-1") as dynamo_store:
        yield dynamo_store


def _dead_letters(stream: LocalLog) -> list[dict[str, Any]]:
    consumer = stream.consumer(group=f"dlq-{uuid.uuid4().hex}", topics=[dlq_topic(CLICKSTREAM),
                                                                          dlq_topic(PURCHASE_HISTORY)])
    return [json.loads(r.value) for r in consumer.poll_batch(max_records=1000, timeout=0.5)]


def _click_id(payload: dict[str, Any]) -> str:
    return parse_event(payload).id


TINY_BODIES = {
    "click property": click(1, properties={"ratio": TINY}),
    "negative click property": click(1, properties={"ratio": -TINY}),
    "order property": order(2, properties={"ratio": TINY}),
    "unit price": order(3, items=[{"product_id": "p1", "quantity": 1, "unit_price": TINY}]),
}


@pytest.mark.parametrize("name", list(TINY_BODIES))
def test_the_edge_answers_400_naming_the_floor_for_a_number_too_close_to_zero(log: LocalLog, name: str) -> None:
    response = capture_handler.handler(api_event(TINY_BODIES[name]), None)
    body = json.loads(response["body"])
    assert response["statusCode"] == 400, body
    (result,) = body["results"]
    assert result["status"] == "rejected" and "too close to zero" in result["reason"], result
    assert "1e-130" in result["reason"]
    consumer = log.consumer(group="check", topics=[CLICKSTREAM, PURCHASE_HISTORY])
    assert consumer.poll_batch(max_records=10, timeout=0) == []  # nothing reached the stream


def test_zero_and_the_floor_itself_are_accepted(log: LocalLog) -> None:
    body = [click(1, properties={"zero": 0.0, "floor": 1e-130, "minus": -1e-130}),
            order(2, items=[{"product_id": "p1", "quantity": 1, "unit_price": 1e-130}])]
    response = capture_handler.handler(api_event(body), None)
    assert response["statusCode"] == 202 and json.loads(response["body"])["accepted"] == 2, response["body"]


def test_what_capture_acknowledges_every_backend_persists(store: Store, tmp_path: Path) -> None:
    """The audit's reproduction: the tiny numbers are refused at the edge, the rest is acknowledged and
    then persisted on SQLite and DynamoDB alike, nothing dead-lettered."""
    stream = LocalLog(tmp_path / "log.sqlite")
    body = json.dumps([click(1, properties={"ratio": TINY}), order(2, properties={"ratio": TINY}),
                       click(3, properties={"ratio": 1e-130}), order(4, properties={"zero": 0.0})])
    result = capture_events(body, stream=stream, clock=events_clock())
    assert [r.status for r in result.results] == ["rejected", "rejected", "accepted", "accepted"]
    assert all("too close to zero" in (r.reason or "") for r in result.results[:2])
    consumer = EventConsumer(stream=stream, store=store, landing=tmp_path / "landing", poll_timeout=0.1,
                             clock=events_clock())
    totals = consumer.run(stop=threading.Event(), idle_exit=1.0)
    consumer.close()
    assert (totals.persisted, totals.dead_lettered) == (2, 0)
    assert _dead_letters(stream) == []
    clicked, ordered = (r.event_id for r in result.results[2:])
    (click_row,) = store.table(tables.USER_EVENTS).scan()  # clicks land in user_events ...
    assert click_row["event_id"] == clicked and click_row["properties"] == {"ratio": 1e-130}
    assert {row["pk"] for row in store.table(tables.EVENTS).scan()} == {ordered}  # ... orders in the ledger
    stream.close()


def test_the_trusted_path_leaves_a_tiny_number_to_the_models() -> None:
    """A record marked validated but holding such a number is not trusted: the full decode names the bound."""
    event = parse_event(click(1, properties={"ratio": 1.0}), now=None)
    raw = encode_event(event).replace(b'"ratio":1.0', b'"ratio":1e-200')
    assert b"1e-200" in raw
    assert decode_trusted(raw) is None
    assert decode_trusted(encode_event(event)) is not None


def test_a_tiny_number_already_in_the_log_is_dead_lettered_with_the_reason_on_every_backend(
        store: Store, tmp_path: Path) -> None:
    """Written straight to the stream (bypassing the edge): the same dead letter and reason on every backend,
    not persisted on SQLite and refused by DynamoDB as before."""
    stream = LocalLog(tmp_path / "log.sqlite")
    poison = dict(click(5), event_id="tiny-5", properties={"ratio": TINY})
    stream.produce_batch([Message(CLICKSTREAM, b"u1", json.dumps(click(1)).encode()),
                          Message(CLICKSTREAM, b"u5", json.dumps(poison).encode())])
    consumer = EventConsumer(stream=stream, store=store, landing=tmp_path / "landing", poll_timeout=0.1,
                             clock=events_clock())
    totals = consumer.run(stop=threading.Event(), idle_exit=1.0)
    consumer.close()
    assert (totals.persisted, totals.dead_lettered) == (1, 1)
    (letter,) = _dead_letters(stream)
    assert "too close to zero" in letter["reason"] and "tiny-5" in letter["value"], letter
    assert [row["event_id"] for row in store.table(tables.USER_EVENTS).scan()] == [_click_id(click(1))]
    stream.close()

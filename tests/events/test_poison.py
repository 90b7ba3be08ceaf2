"""Poison-proof stream: the edge rejects what the Store cannot hold (400 with a reason), and whatever
still reaches the log is persisted or dead-lettered with its reason; the consumer never stops on data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from lambdas import capture_events as capture_handler
from notify_core.clock import ManualClock
from notify_core.errors import ValidationError
from notify_core.events import CLICKSTREAM, capture_events, dlq_topic
from notify_core.events.consumer import EventConsumer
from notify_core.settings import load_settings
from notify_core.store import tables
from notify_core.store.sqlite import SqliteStore
from notify_core.stream import open_stream
from notify_core.stream.local_log import LocalLog
from notify_core.stream.port import Message
from tests.events.helpers import api_event, click, events_clock, order
from tests.events.store_faults import FaultyStore, TableStandIn

REPO = Path(__file__).resolve().parents[2]
NOW = datetime(2031, 5, 6, 12, 0, tzinfo=UTC)  # the injected clock of the window tests


@pytest.fixture
def log(tmp_path: Path) -> Iterator[LocalLog]:
    stream = LocalLog(tmp_path / "log.sqlite")
    capture_handler.use_stream(stream)
    yield stream
    capture_handler.use_stream(None)
    stream.close()


def _post_raw(text: str) -> tuple[int, dict[str, Any]]:
    response = capture_handler.handler(api_event(text, raw=True), None)
    return response["statusCode"], json.loads(response["body"])


def _reasons(body: dict[str, Any]) -> str:
    return " | ".join(str(r.get("reason")) for r in body.get("results", [])) + str(body.get("error", ""))


BAD_BODIES = {
    "int 2^64 in properties": json.dumps(click(properties={"n": 2**64})),
    "int -2^63-1 in properties": json.dumps(click(properties={"n": -(2**63) - 1})),
    "NaN in properties": json.dumps(click(properties={"x": float("nan")})),
    "Infinity in properties": json.dumps(click(properties={"x": float("inf")})),
    "-Infinity price": json.dumps(order()).replace('"unit_price": 1.5', '"unit_price": -Infinity'),
    "huge float property": json.dumps(click(properties={"x": 1e300})),
    "nested 100k deep": "[" * 100_000 + "]" * 100_000,
    "nested object deep": '{"events": ' + "[" * 50_000 + "]" * 50_000 + "}",
    "ts at the calendar's start": json.dumps(click(ts="0001-01-01T00:00:00+01:00")),
    "ts at the calendar's end": json.dumps(click(ts="9999-12-31T23:59:59-01:00")),
    "ts before 2000": json.dumps(click(ts="1999-12-31T23:59:59Z")),
    "quantity 2 million": json.dumps(order(items=[{"product_id": "p1", "quantity": 2_000_000, "unit_price": 1.0}])),
    "quantity 2^64": json.dumps(order(items=[{"product_id": "p1", "quantity": 2**64, "unit_price": 1.0}])),
    "price 10 million": json.dumps(order(items=[{"product_id": "p1", "quantity": 1, "unit_price": 1e7}])),
    "line amount 1e9": json.dumps(order(items=[{"product_id": "p1", "quantity": 1_000_000, "unit_price": 1000.0}])),
}


@pytest.mark.parametrize("name", list(BAD_BODIES))
def test_the_edge_answers_400_with_a_reason_never_500(log: LocalLog, name: str) -> None:
    status, body = _post_raw(BAD_BODIES[name])
    assert status == 400, (name, body)
    assert _reasons(body).strip(" |None"), body
    consumer = log.consumer(group="check", topics=[CLICKSTREAM, "purchase_history"])
    assert consumer.poll_batch(max_records=10, timeout=0) == []  # nothing reached the stream


def test_int64_edges_and_sane_values_are_accepted(log: LocalLog) -> None:
    body = [click(1, properties={"max": 2**63 - 1, "min": -(2**63), "x": 1.5, "ok": True}),
            order(2, items=[{"product_id": "p1", "quantity": -1_000_000, "unit_price": 100.0}])]
    status, reply = _post_raw(json.dumps(body))
    assert status == 202 and reply["accepted"] == 2, reply


def test_time_window_follows_the_injected_clock(log: LocalLog) -> None:
    clock = ManualClock(NOW)
    inside = NOW + timedelta(hours=23)
    ahead = NOW + timedelta(days=1, minutes=1)
    result = capture_events(json.dumps([click(1, ts=inside.isoformat()), click(2, ts=ahead.isoformat()),
                                        click(3, ts="2000-01-01T00:00:00Z")]), stream=log, clock=clock)
    assert [r.status for r in result.results] == ["accepted", "rejected", "accepted"]
    assert "ahead of now" in (result.results[1].reason or "")


def test_a_duplicate_event_id_in_one_batch_gets_its_own_answer(log: LocalLog) -> None:
    batch = [click(1, event_id="same"), click(2, event_id="same"), click(3), click(3)]
    status, reply = _post_raw(json.dumps(batch))
    assert status == 202 and reply["accepted"] == 2 and reply["rejected"] == 2
    statuses = [(r["status"], r.get("reason", "")) for r in reply["results"]]
    assert statuses[0][0] == "accepted" and statuses[2][0] == "accepted"
    assert statuses[1][0] == "rejected" and "duplicate in batch" in statuses[1][1] and "event 0" in statuses[1][1]
    assert statuses[3][0] == "rejected" and "duplicate in batch" in statuses[3][1]


def _dead_letters(stream: LocalLog, topic: str) -> list[dict[str, Any]]:
    consumer = stream.consumer(group="dlq-reader", topics=[dlq_topic(topic)])
    return [json.loads(r.value) for r in consumer.poll_batch(max_records=1000, timeout=0.5)]


def test_an_int_beyond_64_bits_already_in_the_log_is_dead_lettered_and_the_consumer_commits_past_it(
        tmp_path: Path) -> None:
    """Written straight to the stream (bypassing the API): the consumer must neither exit nor stall."""
    stream = LocalLog(tmp_path / "log.sqlite")
    poison = dict(click(5), event_id="poison-64", properties={"n": 2**64})
    stream.produce_batch([Message(CLICKSTREAM, b"u1", json.dumps(click(1)).encode()),
                          Message(CLICKSTREAM, b"u5", json.dumps(poison).encode()),
                          Message(CLICKSTREAM, b"u2", json.dumps(click(2)).encode())])
    store = SqliteStore(tmp_path / "store.sqlite")
    consumer = EventConsumer(stream=stream, store=store, landing=tmp_path / "landing", poll_timeout=0.1,
                             clock=events_clock())
    totals = consumer.run(stop=threading.Event(), idle_exit=1.0)
    assert (totals.persisted, totals.dead_lettered) == (2, 1)
    assert consumer.lag() == 0  # committed past the poison
    letters = _dead_letters(stream, CLICKSTREAM)
    assert len(letters) == 1 and "64-bit" in letters[0]["reason"] and "poison-64" in letters[0]["value"]
    stream.produce_batch([Message(CLICKSTREAM, b"u3", json.dumps(click(3)).encode())])  # and it keeps going
    assert consumer.run(stop=threading.Event(), idle_exit=1.0).persisted == 3
    consumer.close()
    assert len(list(store.table(tables.USER_EVENTS).scan())) == 3
    store.close()
    stream.close()


class _RefusingU7(TableStandIn):
    """``user_events`` refusing (as a data error) any batch holding a row of user "u7"."""

    def batch_put(self, items: Any) -> int:
        items = list(items)
        if any(i.get("pk") == "u7" for i in items):
            raise ValidationError("cannot store item: value the backend refuses")
        return self.table.batch_put(items)


def test_a_row_the_store_refuses_is_dead_lettered_alone_and_the_batch_commits(tmp_path: Path) -> None:
    stream = LocalLog(tmp_path / "log.sqlite")
    stream.produce_batch([Message(CLICKSTREAM, b"k", json.dumps(click(i)).encode()) for i in range(20)])
    store = FaultyStore(SqliteStore(tmp_path / "store.sqlite"), name=tables.USER_EVENTS, stand_in=_RefusingU7)
    consumer = EventConsumer(stream=stream, store=store, landing=None, poll_timeout=0.1,
                             clock=events_clock())
    totals = consumer.run(stop=threading.Event(), idle_exit=1.0)
    refused = sum(1 for i in range(20) if i % 13 == 7)
    assert (totals.persisted, totals.dead_lettered) == (20 - refused, refused)
    assert consumer.lag() == 0
    letters = _dead_letters(stream, CLICKSTREAM)
    assert len(letters) == refused and all("the Store cannot hold it" in d["reason"] for d in letters)
    consumer.close()
    store.close()
    stream.close()


def test_notify_consume_does_not_exit_on_poison_in_the_log(tmp_path: Path) -> None:
    """The issue's reproduction with the real command: it used to exit 1 on every restart."""
    data = tmp_path / "data"
    stream = open_stream(load_settings(data_dir=data))
    stream.produce_batch([Message(CLICKSTREAM, b"u5", json.dumps(dict(click(5), properties={"n": 2**64})).encode()),
                          Message(CLICKSTREAM, b"u1", json.dumps(click(1)).encode())])
    stream.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOTIFY_")}
    done = subprocess.run([sys.executable, "-m", "notify_cli.main", "consume", "--data-dir", str(data),
                           "--idle-exit", "2"], cwd=REPO, env=env, capture_output=True, timeout=180)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert '"dead_lettered": 1' in done.stdout.decode() and '"lag": 0' in done.stdout.decode()

"""Event fixtures shared by the event tests: payloads, API Gateway v2 events, reading a Store back."""

from __future__ import annotations

import base64
import json
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from notify_core.clock import ManualClock
from notify_core.events import PURCHASE_HISTORY, dlq_topic
from notify_core.events.consumer import EventConsumer
from notify_core.ingest.batch import ingest_dataset
from notify_core.lake import Lake
from notify_core.store import tables
from notify_core.store.sqlite import SqliteStore
from notify_core.stream.local_log import LocalLog
from notify_core.stream.port import Message
from tests import auth

# The event tests' own "now": the day after the events below happened (the capture edge rejects events
# from the future, judged by this clock, never by the calendar).
EVENTS_NOW = datetime(2024, 3, 2, 9, 0, tzinfo=UTC)


def events_clock() -> ManualClock:
    return ManualClock(EVENTS_NOW)


def click(i: int = 0, **extra: Any) -> dict[str, Any]:
    return {"type": "click", "user_id": f"u{i % 13}", "ts": f"2024-03-01T10:{i // 60 % 60:02d}:{i % 60:02d}Z",
            "campaign_id": f"c{i % 5}", **extra}


def order(i: int = 0, **extra: Any) -> dict[str, Any]:
    return {
        "type": "order", "user_id": f"u{i % 13}", "ts": f"2024-03-01T11:{i // 60 % 60:02d}:{i % 60:02d}Z",
        "order_id": f"o{i}", "country": "United Kingdom",
        "items": [{"product_id": "p1", "quantity": 2, "unit_price": 1.5}, {"product_id": f"p{i % 9 + 2}",
                                                                           "quantity": -1, "unit_price": 3.0}],
        **extra,
    }


def api_event(body: Any, *, method: str = "POST", path: str = "/v1/events", base64_body: bool = False,
              raw: bool = False) -> dict[str, Any]:
    """An API Gateway HTTP API payload v2.0 event, as AWS documents it."""
    text = body if raw else json.dumps(body)
    encoded = base64.b64encode(text.encode() if isinstance(text, str) else text).decode() if base64_body else text
    return {
        "version": "2.0",
        "routeKey": f"{method} {path}",
        "rawPath": path,
        "rawQueryString": "",
        "cookies": [],
        "headers": {"content-type": "application/json", "host": "api.example.com", "user-agent": "pytest",
                    **auth.headers()},
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "api-id",
            "domainName": "api.example.com",
            "domainPrefix": "api",
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "192.0.2.1",
                     "userAgent": "pytest"},
            "requestId": "c6af9ac6-7b61-11e6-9a41-93e8deadbeef",
            "routeKey": f"{method} {path}",
            "stage": "$default",
            "time": "12/Mar/2020:19:03:58 +0000",
            "timeEpoch": 1583348638390,
        },
        "body": encoded,
        "isBase64Encoded": base64_body,
    }


@dataclass(frozen=True)
class LoggedThenIngested:
    """What the consumer made of records written straight to the log, and what batch ingestion then made
    of the consumer's own landing file (the Store and the lake must agree on what was accepted)."""

    persisted: int
    dead_lettered: int
    reasons: list[str]  # of the dead letters
    order_ids: set[str]  # in the Store's purchases
    quarantined: list[tuple[Any, str]]  # ingestion's bad rows of the landing file


def consume_then_ingest(tmp_path: Path, messages: list[Message], *, decode_process: bool) -> LoggedThenIngested:
    """``messages`` on a fresh embedded log, drained by one consumer (in process or with the decoding
    process) into a fresh Store and a landing folder, which batch ingestion then takes into a lake."""
    log, store = LocalLog(tmp_path / "log.sqlite"), SqliteStore(tmp_path / "store.sqlite")
    landing = tmp_path / "landing"
    try:
        log.produce_batch(messages)
        consumer = EventConsumer(stream=log, store=store, landing=landing / "purchases", poll_timeout=0.1,
                                 clock=events_clock(), decode_process=decode_process)
        try:
            totals = consumer.run(stop=threading.Event(), idle_exit=0.5)
        finally:
            consumer.close()
        reader = log.consumer(group="dlq-reader", topics=[dlq_topic(PURCHASE_HISTORY)])
        letters = [json.loads(r.value) for r in reader.poll_batch(max_records=10, timeout=0.5)]
        report = ingest_dataset("purchases", landing=landing, lake=Lake(tmp_path / "lake"), store=store,
                                quarantine=tmp_path / "q", clock=events_clock())
        return LoggedThenIngested(
            persisted=totals.persisted, dead_lettered=totals.dead_lettered,
            reasons=[str(letter["reason"]) for letter in letters],
            order_ids={str(row["order_id"]) for row in store.table(tables.PURCHASES).scan()},
            quarantined=[(b.key, b.reason) for b in report.bad_rows])
    finally:
        store.close()
        log.close()

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
from datetime import timedelta
from pathlib import Path

import pytest

from notify_core.errors import ValidationError
from notify_core.events import PURCHASE_HISTORY
from notify_core.events.models import decode_event, json_time
from notify_core.stream.port import Message
from tests.events.helpers import EVENTS_NOW, consume_then_ingest, order


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
    poison = dict(order(7, ts=ts), event_id="far-future")
    run = consume_then_ingest(tmp_path, [Message(PURCHASE_HISTORY, b"u7", json.dumps(poison).encode()),
                                         Message(PURCHASE_HISTORY, b"u1", json.dumps(order(1)).encode())],
                              decode_process=decode_process)
    assert (run.persisted, run.dead_lettered) == (1, 1)
    assert len(run.reasons) == 1 and "ahead of now" in run.reasons[0]
    assert run.order_ids == {"o1"}
    assert not run.quarantined, run.quarantined

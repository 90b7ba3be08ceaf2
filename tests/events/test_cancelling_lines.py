"""An order whose lines of one product cancel out (+1 and -1 of p1): refused everywhere, as ingestion does.

Each line is valid on its own, but the Store and the landing file keep one ``purchases`` row per product
(the lines merged), and that row's quantity is 0, which batch ingestion quarantines ("quantity must not
be 0"). Capture used to answer 202 and the consumer to write the row to the Store and to its landing file,
which the lake then refused: the Store and the lake disagreed about an acknowledged order. The rule is
``bounds.merged_lines_reason``'s, so capture answers 400 and a record written straight to the log (marked
as capture's or not, with or without the decoding process) is dead-lettered with the reason.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from notify_core import bounds
from notify_core.errors import ValidationError
from notify_core.events import PURCHASE_HISTORY, capture_events
from notify_core.events.models import VALIDATED_HEADERS, decode_event, decode_trusted, encode_event, parse_event
from notify_core.stream.local_log import LocalLog
from notify_core.stream.port import Message
from tests.events.helpers import consume_then_ingest, events_clock, order

CANCELLING = [{"product_id": "p1", "quantity": 1, "unit_price": 2.0},
              {"product_id": "p1", "quantity": -1, "unit_price": 2.0},
              {"product_id": "p2", "quantity": 1, "unit_price": 3.0}]


def test_merged_lines_that_cancel_out_are_refused_by_the_one_rule() -> None:
    reason = bounds.merged_lines_reason((line["product_id"], line["quantity"], line["unit_price"])
                                        for line in CANCELLING)
    assert reason is not None and "'p1'" in reason and "cancel out" in reason
    assert bounds.merged_lines_reason([("p1", 2, 2.0), ("p1", -1, 2.0)]) is None  # a net return or sale is fine


def test_capture_answers_400_for_lines_that_cancel_out(tmp_path: Path) -> None:
    log = LocalLog(tmp_path / "log.sqlite")
    try:
        result = capture_events(json.dumps(order(1, items=CANCELLING)), stream=log, clock=events_clock())
        assert result.accepted == 0 and "cancel out" in (result.results[0].reason or ""), result
        reader = log.consumer(group="check", topics=[PURCHASE_HISTORY])
        assert reader.poll_batch(max_records=10, timeout=0) == []  # nothing reached the stream
    finally:
        log.close()


def _written_past_capture(*, marked: bool) -> Message:
    """The order in capture's canonical form with cancelling lines, as another writer might put it on the log."""
    doc = json.loads(encode_event(parse_event(order(7))))
    doc["items"], doc["event_id"] = CANCELLING, "cancelling"
    return Message(PURCHASE_HISTORY, b"u7", json.dumps(doc).encode(), VALIDATED_HEADERS if marked else ())


@pytest.mark.parametrize("decode_process", [False, True], ids=["in-process", "decode-process"])
@pytest.mark.parametrize("marked", [True, False], ids=["marked", "unmarked"])
def test_a_logged_order_whose_lines_cancel_out_is_dead_lettered_and_the_lake_agrees_with_the_store(
        tmp_path: Path, marked: bool, decode_process: bool) -> None:
    poison = _written_past_capture(marked=marked)
    assert decode_trusted(poison.value) is None  # the trusted path leaves it to the models, which name it
    with pytest.raises(ValidationError, match="cancel out"):
        decode_event(poison.value)
    run = consume_then_ingest(tmp_path, [poison, Message(PURCHASE_HISTORY, b"u1", encode_event(parse_event(order(1))))],
                              decode_process=decode_process)
    assert (run.persisted, run.dead_lettered) == (1, 1)
    assert len(run.reasons) == 1 and "cancel out" in run.reasons[0]
    assert run.order_ids == {"o1"}
    assert not run.quarantined, run.quarantined

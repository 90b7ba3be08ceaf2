"""Event models and batch parsing: ids, routing, and every kind of bad input."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from notify_core.errors import PayloadTooLargeError, ValidationError
from notify_core.events import (
    CLICKSTREAM,
    MAX_BATCH_EVENTS,
    PURCHASE_HISTORY,
    decode_event,
    encode_event,
    parse_batch,
    parse_event,
    topic_for,
)
from tests.events.helpers import click, order


def test_single_event_batch_object_and_bare_array_all_parse() -> None:
    assert parse_batch(json.dumps(click())).single
    assert len(parse_batch(json.dumps({"events": [click(1), click(2)]})).accepted) == 2
    assert len(parse_batch(json.dumps([click(1), order(2)])).accepted) == 2


@pytest.mark.parametrize(
    "payload",
    [
        click(),
        order(),
        {"type": "campaign_view", "user_id": "u1", "ts": "2024-03-01T10:00:00Z", "campaign_id": "c1"},
        {"type": "notification_open", "user_id": "u1", "ts": "2024-03-01T10:00:00Z", "notification_id": "n1"},
        {"type": "notification_click", "user_id": "u1", "ts": "2024-03-01T10:00:00Z", "notification_id": "n1",
         "url": "https://example.com/x"},
    ],
)
def test_each_event_type_round_trips_through_the_stream_encoding(payload: dict[str, object]) -> None:
    event = parse_event(payload)
    assert event.event_id and event.event_id.startswith("ev_")
    assert decode_event(encode_event(event)) == event


def test_routing_orders_to_purchase_history_the_rest_to_the_clickstream() -> None:
    assert topic_for(parse_event(order())) == PURCHASE_HISTORY
    assert topic_for(parse_event(click())) == CLICKSTREAM


def test_client_event_id_is_kept() -> None:
    assert parse_event(click(event_id="client-42")).event_id == "client-42"


def test_stable_id_ignores_formatting_but_not_content() -> None:
    a = parse_event(click(ts="2024-03-01T10:00:00Z"))
    b = parse_event(click(ts="2024-03-01T11:00:00+01:00"))  # the same instant
    c = parse_event(click(ts="2024-03-01T10:00:01Z"))
    assert a.event_id == b.event_id != c.event_id
    assert parse_event(dict(reversed(list(click().items())))).event_id == parse_event(click()).event_id


@given(st.integers(min_value=0, max_value=10**6), st.integers(min_value=0, max_value=10**6))
def test_stable_ids_differ_when_payloads_differ(i: int, j: int) -> None:
    a, b = parse_event(click(0, campaign_id=f"c{i}")), parse_event(click(0, campaign_id=f"c{j}"))
    assert (a.event_id == b.event_id) == (i == j)


def test_naive_timestamps_are_utc() -> None:
    assert parse_event(click(ts="2024-03-01T10:00:00")).ts == datetime(2024, 3, 1, 10, tzinfo=UTC)


@pytest.mark.parametrize(
    ("body", "error", "needle"),
    [
        (b'{"type": "click", "user_id": ', ValidationError, "malformed JSON"),
        (b"\xff\xfe not json", ValidationError, "malformed JSON"),
        (b'"a string"', ValidationError, "body must be"),
        (b"[]", ValidationError, "empty"),
        (b'{"events": 5}', ValidationError, "body must be"),
        (b" " * (10 * 1024 * 1024), PayloadTooLargeError, "limit"),
        (json.dumps([click(i) for i in range(MAX_BATCH_EVENTS + 1)]).encode(), PayloadTooLargeError, "501 events"),
    ],
)
def test_whole_request_defects_raise_a_clear_4xx(body: bytes, error: type[Exception], needle: str) -> None:
    with pytest.raises(error, match=needle) as info:
        parse_batch(body)
    assert 400 <= info.value.http_status < 500  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("bad", "needle"),
    [
        ({"type": "purchase", "user_id": "u", "ts": "2024-01-01T00:00:00Z"}, "unknown event type 'purchase'"),
        ({"user_id": "u", "ts": "2024-01-01T00:00:00Z"}, "missing event type"),
        ({"type": "click", "ts": "2024-01-01T00:00:00Z"}, "user_id: Field required"),
        ({"type": "click", "user_id": "", "ts": "2024-01-01T00:00:00Z"}, "user_id"),
        ({"type": "click", "user_id": "u"}, "ts: Field required"),
        ({"type": "click", "user_id": "u", "ts": "yesterday"}, "ts"),
        ({"type": "order", "user_id": "u", "ts": "2024-01-01T00:00:00Z", "order_id": "o", "items": []}, "items"),
        ({"type": "order", "user_id": "u", "ts": "2024-01-01T00:00:00Z", "order_id": "o",
          "items": [{"product_id": "p", "quantity": 0, "unit_price": 1}]}, "quantity"),
        ({"type": "click", "user_id": "u", "ts": "2024-01-01T00:00:00Z", "colour": "red"}, "colour"),
        ("not an object", "JSON object"),
    ],
)
def test_bad_events_are_rejected_alone_and_good_ones_kept(bad: object, needle: str) -> None:
    batch = parse_batch(json.dumps([click(1), bad, order(2)]))
    assert [a.index for a in batch.accepted] == [0, 2]
    assert len(batch.rejected) == 1 and batch.rejected[0].index == 1
    assert needle in batch.rejected[0].reason


def test_undecodable_stream_values_raise_validation_errors() -> None:
    with pytest.raises(ValidationError, match="undecodable"):
        decode_event(b"\x00\x01garbage")
    with pytest.raises(ValidationError, match="unknown event type"):
        decode_event(b'{"type": "nope", "user_id": "u", "ts": "2024-01-01T00:00:00Z"}')

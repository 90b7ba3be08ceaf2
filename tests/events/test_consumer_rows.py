"""The consumer's hot-path helpers against the slow, obvious versions they replaced."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Histogram

from notify_core.events import decode_event
from notify_core.events.consumer import user_event_row
from notify_core.events.models import json_time
from notify_core.observability import BatchHistogram
from notify_core.store import tables

TS = "2024-03-01T10:00:01Z"
FULL = {
    "click": {"campaign_id": "c1", "product_id": "p1", "notification_id": "n1", "url": "https://x.test/a"},
    "campaign_view": {"campaign_id": "c1"},
    "notification_open": {"notification_id": "n1", "campaign_id": "c1"},
    "notification_click": {"notification_id": "n1", "campaign_id": "c1", "url": "https://x.test/b"},
}
REQUIRED = {"click": {}, "campaign_view": {"campaign_id": "c1"}, "notification_open": {"notification_id": "n1"},
            "notification_click": {"notification_id": "n1"}}


def _model_dump_row(event: Any, event_id: str) -> dict[str, Any]:
    """The row as the consumer first built it, with ``model_dump``: the reference the fast path must match
    (properties now ride on the row: clicks have no ledger row to hold them)."""
    row = {"pk": event.user_id, "sk": f"{tables.time_sk(event.ts)}#{event_id}", "event_id": event_id}
    row.update(event.model_dump(mode="json", exclude={"event_id", "user_id", "properties"}, exclude_none=True))
    if event.properties:
        row["properties"] = dict(event.properties)
    return row


@pytest.mark.parametrize("ts", [TS, "2024-03-01T10:00:01.250Z", "2024-03-01T12:00:01+02:00", "2024-03-01T10:00:01"])
@pytest.mark.parametrize("fields", ["full", "required"])
@pytest.mark.parametrize("kind", sorted(FULL))
def test_user_event_rows_equal_the_model_dump_rows_byte_for_byte(kind: str, fields: str, ts: str) -> None:
    payload = {"type": kind, "user_id": "u1", "ts": ts, "properties": {"a": 1},
               **(FULL if fields == "full" else REQUIRED)[kind]}
    event = decode_event(json.dumps(payload).encode())
    row = user_event_row(event, event_id=event.id)
    reference = _model_dump_row(event, event.id)
    assert list(row.items()) == list(reference.items())  # same keys, values and order: same stored JSON


@pytest.mark.parametrize(
    ("ts", "expected"),
    [
        (datetime(2024, 3, 1, 10, 0, 1, tzinfo=UTC), "2024-03-01T10:00:01Z"),
        (datetime(2024, 3, 1, 10, 0, 1, 5, tzinfo=UTC), "2024-03-01T10:00:01.000005Z"),
        (datetime(5, 1, 1, tzinfo=UTC), "0005-01-01T00:00:00Z"),
    ],
)
def test_json_time_is_the_events_json_form(ts: datetime, expected: str) -> None:
    assert json_time(ts) == expected


@pytest.mark.parametrize(
    ("ts", "expected"),
    [
        (datetime(2024, 3, 1, 10, 0, 1, 999999, tzinfo=UTC), "2024-03-01T10:00:01"),
        (datetime(2024, 3, 1, 10, 0, 1), "2024-03-01T10:00:01"),
        (datetime(2024, 3, 1, 12, 0, 1, tzinfo=timezone(timedelta(hours=2))), "2024-03-01T12:00:01"),
        (datetime(5, 1, 1, tzinfo=UTC), "0005-01-01T00:00:00"),  # four-digit years keep time order
    ],
)
def test_time_sort_keys_are_iso_seconds(ts: datetime, expected: str) -> None:
    assert tables.time_sk(ts) == expected


def _samples(histogram: Histogram) -> dict[tuple[str, str], float]:
    return {(s.name, s.labels.get("le", "")): s.value for metric in histogram.collect() for s in metric.samples
            if not s.name.endswith("_created")}


def test_batch_histogram_counts_like_one_observe_per_value() -> None:
    buckets = (0.01, 0.1, 1.0, 5.0)
    pairs = [(0.0, 3), (0.01, 2), (0.05, 1), (1.0, 4), (2.5, 1), (60.0, 2), (0.05, 5)]  # on and between bounds
    batch = BatchHistogram("batch_h", "test", buckets=buckets, registry=CollectorRegistry())
    single = Histogram("single_h", "test", buckets=buckets, registry=CollectorRegistry())
    batch.observe_counts(pairs)
    for value, count in pairs:
        for _ in range(count):
            single.observe(value)
    renamed = {(n.replace("batch", "single"), le): v for (n, le), v in _samples(batch).items()}
    assert renamed == pytest.approx(_samples(single))  # the sum may differ in the last bit (summing order)


def test_batch_histogram_with_labels_observes_through_its_children() -> None:
    histogram = BatchHistogram("labelled_h", "test", ["kind"], buckets=(1.0,), registry=CollectorRegistry())
    with pytest.raises(ValueError):
        histogram.observe_counts([(0.5, 1)])  # the parent of labelled children, like observe
    histogram.labels("a").observe_counts([(0.5, 2)])
    assert _samples(histogram)[("labelled_h_count", "")] == 2

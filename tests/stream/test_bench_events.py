"""The stream benchmark's load generator emits exactly what capture would: the canonical JSON of each event."""

from __future__ import annotations

import orjson

from bench.bench_stream import event_messages
from notify_core.events.models import VALIDATED_HEADERS, decode_event, encode_event
from notify_core.stream.port import REQUEST_ID_HEADER, Message


def _reference(start: int, count: int, *, run: str) -> list[Message]:
    """The events as dicts through orjson (what the byte templates replaced)."""
    out = []
    headers: tuple[tuple[str, bytes], ...] = ()
    for i in range(start, start + count):
        if i % 100 == 0 or not headers:
            headers = ((REQUEST_ID_HEADER, f"req-{run}-{i // 100}".encode()), *VALIDATED_HEADERS)
        user = f"u{i % 100003}"
        ts = f"2024-03-01T{i // 3600 % 24:02d}:{i // 60 % 60:02d}:{i % 60:02d}Z"
        head = {"event_id": f"{run}-{i}", "user_id": user, "ts": ts, "properties": {}}
        if i % 10 == 0:
            order = {**head, "type": "order", "order_id": f"{run}-o{i}",
                     "items": [{"product_id": f"p{i % 4000}", "quantity": 1, "unit_price": 2.5}]}
            out.append(Message("purchase_history", user.encode(), orjson.dumps(order), headers))
        else:
            click = {**head, "type": "click", "campaign_id": f"c{i % 300}"}
            out.append(Message("notify_clickstream", user.encode(), orjson.dumps(click), headers))
    return out


def test_the_templates_give_the_bytes_of_the_events_dicts() -> None:
    for start in (0, 99_950, 1_234_567):
        assert event_messages(start, 300, run="ab12cd34") == _reference(start, 300, run="ab12cd34")


def test_each_event_is_capture_canonical_json() -> None:
    for message in event_messages(86_390, 40, run="r1"):
        assert encode_event(decode_event(message.value)) == message.value

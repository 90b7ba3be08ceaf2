"""The events the consumer refused, read back from their dead-letter topics: which, when, and why.

Poison records (malformed JSON, a model's rule broken, a wrong topic) go to ``<topic>.dlq`` with the reason
(:func:`~notify_core.events.consumer.dead_letter`). On Kafka an operator has the broker's tools to look at
them; on the embedded log they sat in a SQLite table no command read. :func:`refused_events` reads the
newest of them on either backend, for ``notify events refused``.

Read without a trace on the stream: one consumer group of its own (:data:`READER_GROUP`) that starts every
partition where its newest ``limit`` records begin (the port's ``start_at`` hook) and never commits, so
nothing moves for the consumer or for a later read. One fixed group, not a new one a read: on the embedded
log each group has a lock file beside the log, and a random group a read left one more file each time.
A read that cannot reach the end it measured first (a broker that does
not answer in ``timeout_s``) says so (``RefusedRead.complete``): never a partial list passed off as the
whole.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from notify_core.errors import ValidationError
from notify_core.events.models import TOPICS, dlq_topic
from notify_core.stream.port import Stream, TopicPartition

READER_GROUP = "notify-refused-reader"  # never commits: every read starts from the partitions' ends


@dataclass(frozen=True, slots=True)
class RefusedRead:
    events: list[dict[str, Any]]  # oldest first: the dead letter's body, and where it sits in its topic
    read: int  # dead letters read (before the newest ``limit`` of them were kept)
    complete: bool  # every dead-letter partition read to the end measured when the read began


def refused_events(stream: Stream, *, topics: Sequence[str] = TOPICS, limit: int = 1000,
                   timeout_s: float = 30.0) -> RefusedRead:
    """The newest ``limit`` events refused from ``topics`` (by when they were refused, oldest first).

    Each is the dead letter's body (``reason``, the event's ``topic``/``partition``/``offset``, its
    ``timestamp_ms``, ``failed_at``, and its ``value`` as text or ``value_b64``) plus ``dlq_topic`` and
    ``dlq_offset``: where it sits, for a replay or a report. Complete once each partition's last record
    (as measured when the read began) has been read: records its retention removed are not waited for."""
    if limit < 1:
        raise ValidationError("limit must be at least 1")
    starts: dict[TopicPartition, int] = {}
    ends: dict[TopicPartition, int] = {}
    for name in map(dlq_topic, topics):
        for partition, end in stream.end_offsets(name).items():
            if end > 0:
                starts[(name, partition)], ends[(name, partition)] = max(0, end - limit), end
    if not ends:
        return RefusedRead([], 0, complete=True)
    reader = stream.consumer(group=READER_GROUP, topics=sorted({t for t, _p in ends}),
                             start_at=lambda assigned: {tp: starts.get(tp, 0) for tp in assigned})
    found: dict[tuple[str, int, int], dict[str, Any]] = {}
    pending = set(ends)  # partitions whose last record has not been read yet
    deadline = time.monotonic() + timeout_s
    try:
        while pending and time.monotonic() < deadline:
            for record in reader.poll_batch(max_records=limit, timeout=0.5):
                tp = (record.topic, record.partition)
                if not starts.get(tp, 0) <= record.offset < ends.get(tp, 0):
                    continue  # refused after the read began: the next read has it
                found[(record.topic, record.partition, record.offset)] = {
                    **_body(record.value), "dlq_topic": record.topic, "dlq_offset": record.offset}
                if record.offset == ends[tp] - 1:
                    pending.discard(tp)
    finally:
        reader.close()  # never committed: the group leaves no position behind
    events = sorted(found.values(), key=lambda e: (float(e.get("failed_at") or 0), e["dlq_topic"], e["dlq_offset"]))
    return RefusedRead(events[-limit:], len(found), complete=not pending)


def _body(value: bytes) -> dict[str, Any]:
    """A dead letter's JSON body; anything else (written by something other than the consumer) as text."""
    try:
        body = json.loads(value)
    except (ValueError, UnicodeDecodeError):
        return {"reason": "not a Notify dead letter", "value": value.decode("utf-8", "replace")}
    return body if isinstance(body, dict) else {"reason": "not a Notify dead letter", "value": body}

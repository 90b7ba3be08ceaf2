"""The Stream port: append-only, keyed, partitioned topics with consumer groups (Kafka's model).

Two adapters implement it: :mod:`notify_core.stream.local_log` (the embedded default, a durable log in
one SQLite file) and :mod:`notify_core.stream.kafka` (confluent-kafka). One contract suite,
``tests/stream/test_contract.py``, runs against both, so code written against this port (capture, the
consumer) never knows which one it is talking to.

Semantics every adapter keeps:

* ``produce_batch`` returns only once every message is durably accepted (the local log committed it,
  Kafka acknowledged it with acks=all); otherwise it raises ``BackendError`` and the caller may retry
  (event ids make retries harmless).
* Records with the same key land in the same partition, in produce order.
* A consumer's committed position is the offset of the *next* record to read, per partition; a new
  consumer of the group resumes from it (from offset 0 when the group never committed). Commit only
  after the records' effects are durable: that is what makes a crash replay, never skip.
* Membership changes are normal. ``start_at`` (optional) is asked, whenever partitions are given to a
  member, where to start reading them: the application's own record of what it persisted (the event
  consumer keeps it in the Store, so a restored Store replays what it lost). ``on_revoke`` (optional) is
  called on the polling thread before partitions are taken away, so the member finishes and commits the
  work in hand. A commit that a rebalance makes impossible is kept and retried, or dropped for
  partitions the member no longer owns (their new owner replays from the last committed position);
  it never raises.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple, Protocol, runtime_checkable


class Message(NamedTuple):
    """A message to produce. ``key`` picks the partition (same key, same partition, same order).

    ``headers`` travel with the record to every consumer (Kafka record headers; a column of the local log):
    metadata about the message, not part of it, such as the ``x-request-id`` of the HTTP request that
    produced it (:data:`REQUEST_ID_HEADER`).

    A named tuple, as :class:`Record` and for the same reason: capture builds one per event, and a
    frozen dataclass's ``__init__`` cost ~1 us of it, a tuple ~0.2 us. Immutable all the same.
    """

    topic: str
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()


class Record(NamedTuple):
    """A consumed record; ``timestamp_ms`` is when it was produced (epoch milliseconds).

    A named tuple, not a frozen dataclass: a consumer builds one per record (50k+ a second), and a
    frozen dataclass's ``__init__`` (one ``object.__setattr__`` per field) cost ~1.4 us of it, a tuple
    ~0.2 us. Immutable all the same.
    """

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    timestamp_ms: int
    headers: tuple[tuple[str, bytes], ...] = ()

    def header(self, name: str) -> str | None:
        """The last value of header ``name`` as text, or None."""
        return header_value(self.headers, name)


def header_value(headers: tuple[tuple[str, bytes], ...], name: str) -> str | None:
    """The last value of header ``name`` in ``headers`` as text, or None (:meth:`Record.header`)."""
    found: str | None = None
    for key, value in headers:
        if key == name:
            found = value.decode("utf-8", "replace")
    return found


REQUEST_ID_HEADER = "x-request-id"  # the correlation id of the request that produced a record


@functools.lru_cache(maxsize=4096)
def encode_headers(headers: tuple[tuple[str, bytes], ...]) -> bytes | None:
    """Headers as one blob for stores without a native header list (the local log): JSON of [name, text].

    Cached: the messages of one capture request share one headers tuple, and JSON per message would
    cost ~8 us of a ~13 us append.
    """
    if not headers:
        return None
    return json.dumps([[k, v.decode("utf-8", "replace")] for k, v in headers], separators=(",", ":")).encode()


@functools.lru_cache(maxsize=4096)
def decode_headers(blob: bytes | None) -> tuple[tuple[str, bytes], ...]:
    """The inverse of :func:`encode_headers`; a blob that is not a header list reads as no headers."""
    if not blob:
        return ()
    try:
        pairs = json.loads(blob)
        return tuple((str(k), str(v).encode()) for k, v in pairs)
    except (ValueError, TypeError):
        return ()


def next_positions(records: Sequence[Record]) -> dict[tuple[str, int], int]:
    """The positions to commit after ``records``: last offset + 1 per (topic, partition)."""
    positions: dict[tuple[str, int], int] = {}
    for record in records:
        tp = (record.topic, record.partition)
        if record.offset + 1 > positions.get(tp, -1):
            positions[tp] = record.offset + 1
    return positions


DEAD_LETTER_SUFFIX = ".dlq"
"""A dead-letter topic is its source topic's name plus this. No consumer group reads one (people do, with
``notify events refused``), so a broker's retention by time is all that bounds it, and the embedded log,
which otherwise keeps what no group has committed past, keeps one by time alone too."""


def is_dead_letter_topic(name: str) -> bool:
    return name.endswith(DEAD_LETTER_SUFFIX)


TopicPartition = tuple[str, int]
StartAt = Callable[[Sequence[TopicPartition]], Mapping[TopicPartition, int]]
"""Given partitions just assigned: the offset to start each at (partitions left out start at 0)."""
OnRevoke = Callable[[Sequence[TopicPartition]], None]
"""Called before partitions are taken from this member: finish and commit what is in hand."""


@runtime_checkable
class StreamConsumer(Protocol):
    """One member of a consumer group, subscribed to some topics. Not thread-safe: one loop owns it."""

    def poll_batch(self, *, max_records: int = 1000, timeout: float = 1.0) -> list[Record]:
        """Up to ``max_records`` records after the current position; waits at most ``timeout`` s for the first."""
        ...

    def commit(self, records: Sequence[Record]) -> None:
        """Durably commit the position after ``records`` (synchronously; raises ``BackendError``)."""
        ...

    def lag(self) -> int:
        """Records produced to the subscribed topics and not yet committed by this group."""
        ...

    def seek_to_beginning(self) -> None:
        """Read the subscribed topics again from offset 0 (committed positions move only on commit)."""
        ...

    def settle(self, *, timeout: float | None = None) -> int:
        """Commit the positions a group change deferred, waiting up to ``timeout`` s (``None``: the backend's
        own bound) for it to end; returns how many partitions' positions are still not committed."""
        ...

    def close(self) -> None:
        """Settle (see :meth:`settle`), then leave the group."""
        ...


@runtime_checkable
class Stream(Protocol):
    """A connection to one stream backend, shared by producers in a process (thread-safe)."""

    def produce_batch(self, messages: Sequence[Message]) -> None:
        """Append every message durably before returning; raises ``BackendError`` if any failed."""
        ...

    def produce(self, topic: str, key: bytes | None, value: bytes) -> None:
        """One message, durably (``produce_batch`` of one)."""
        ...

    def consumer(
        self,
        *,
        group: str,
        topics: Sequence[str],
        start_at: StartAt | None = None,
        on_revoke: OnRevoke | None = None,
    ) -> StreamConsumer:
        """A new member of ``group`` reading ``topics`` (see the module doc for the two hooks)."""
        ...

    def end_offsets(self, topic: str) -> dict[int, int]:
        """Per partition, the offset the next produced record will get (for lag and tests)."""
        ...

    def close(self) -> None: ...

"""Kafka adapter of the Stream port (confluent-kafka / librdkafka).

Producer: idempotent (``enable.idempotence`` implies acks=all, bounded in-flight requests and no
reordering on retry), so a broker retry never duplicates or reorders a partition. ``produce_batch``
waits for the delivery report of *its own* messages (not a global ``flush``), so many gateway threads can
share one producer and each request returns when its events are acknowledged.

Consumer: auto-commit and auto offset store are off; the application commits explicitly, synchronously,
after its Store write. ``auto.offset.reset=earliest`` so a new group starts at offset 0.

confluent-kafka is imported inside the constructors only: ``import notify_core`` stays light.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from notify_core.errors import BackendError
from notify_core.settings import KAFKA_DELIVERY_TIMEOUT_S, KAFKA_LINGER_MS
from notify_core.stream.port import Message, OnRevoke, Record, StartAt, next_positions

log = logging.getLogger(__name__)

PRODUCER_DEFAULTS: dict[str, Any] = {
    "enable.idempotence": True,
    "acks": "all",
    # lz4 batches: measured CPU-neutral on both ends (producing 4.08 vs 4.16 us an event, a bare consumer
    # 1.67 vs 1.72 us), ~4.8x fewer bytes per event on the wire and in the broker's log, so a broker that
    # retains by bytes (librdkafka's mock cluster: 5 MB a partition) keeps ~28 s of a 49k/s stream, not ~6 s.
    "compression.type": "lz4",
}
# How long past ``message.timeout.ms`` a produce still waits for librdkafka's own delivery reports (its
# timer fires them late under load) before it gives up on them itself: the longest a produce can block is
# ``delivery_timeout + REPORT_SLACK_S``.
REPORT_SLACK_S = 5.0
CONSUMER_DEFAULTS: dict[str, Any] = {
    "enable.auto.commit": False,
    "enable.auto.offset.store": False,
    "auto.offset.reset": "earliest",
    "session.timeout.ms": 6000,
    # Cooperative rebalancing: a member joining, leaving or dying moves only its share of the partitions;
    # the others keep consuming (and committing) through the rebalance instead of all stopping at once.
    "partition.assignment.strategy": "cooperative-sticky",
    # How long a broker may hold a fetch that found nothing new. Kafka answers early when data arrives;
    # librdkafka's mock broker (tests, benchmark) always holds it this long once the consumer has caught
    # up, which put ~35 ms on the median event at 15k events/s with 50. An idle consumer pays ~100 empty
    # fetches/s per broker for it, which costs a broker next to nothing.
    "fetch.wait.max.ms": 10,
}


class _Delivery:
    """Counts delivery reports of one produce_batch call."""

    def __init__(self, expected: int) -> None:
        self.pending = expected
        self.error: str | None = None
        self.done = threading.Event()
        self._lock = threading.Lock()

    def __call__(self, err: Any, _msg: Any) -> None:
        with self._lock:
            if err is not None and self.error is None:
                self.error = str(err)
            self.pending -= 1
            if self.pending <= 0:
                self.done.set()


class KafkaStream:
    """A Stream on a Kafka cluster. Thread-safe for producing; each consumer belongs to one thread."""

    def __init__(
        self,
        *,
        bootstrap_servers: str,
        client_id: str = "notify",
        producer_config: Mapping[str, Any] | None = None,
        consumer_config: Mapping[str, Any] | None = None,
        delivery_timeout: float = KAFKA_DELIVERY_TIMEOUT_S,
        linger_ms: int = KAFKA_LINGER_MS,
        security_config: Mapping[str, str] | None = None,
    ) -> None:
        from confluent_kafka import Producer

        self.bootstrap_servers = bootstrap_servers
        # TLS / SASL (notify_core.security.tls.kafka_security_config): every client this stream makes.
        self._security = dict(security_config or {})
        self._client_id = client_id
        self._consumer_config = {**CONSUMER_DEFAULTS, **(consumer_config or {})}
        self._delivery_timeout = delivery_timeout
        self._producer = Producer(
            {
                "bootstrap.servers": bootstrap_servers,
                "client.id": client_id,
                "message.timeout.ms": int(delivery_timeout * 1000),
                "linger.ms": linger_ms,
                **PRODUCER_DEFAULTS,
                **(producer_config or {}),
                **self._security,
            }
        )
        self._admin_consumer: Any = None
        self._admin_lock = threading.Lock()
        self._closed = False

    def produce(self, topic: str, key: bytes | None, value: bytes) -> None:
        self.produce_batch([Message(topic, key, value)])

    def produce_batch(self, messages: Sequence[Message]) -> None:
        if not messages:
            return
        delivery = _Delivery(len(messages))
        producer = self._producer
        deadline = time.monotonic() + self._delivery_timeout
        last: tuple[tuple[str, bytes], ...] = ()
        header_list: list[tuple[str, str | bytes | None]] = []
        try:
            for message in messages:
                headers = message.headers
                if headers is not last and headers:  # the messages of one request share one headers tuple
                    last, header_list = headers, list(headers)
                while True:
                    try:
                        if headers:
                            producer.produce(message.topic, message.value, message.key, on_delivery=delivery,
                                             headers=header_list)
                        else:
                            producer.produce(message.topic, message.value, message.key, on_delivery=delivery)
                        break
                    except BufferError:  # local queue full: let librdkafka drain it, then retry
                        producer.poll(0.05)
                        if time.monotonic() > deadline:
                            raise BackendError("Kafka producer queue stayed full") from None
            while not delivery.done.is_set():
                producer.poll(0.01)  # serves delivery reports (of any thread's messages)
                if time.monotonic() > deadline + REPORT_SLACK_S:
                    raise BackendError(f"Kafka delivery timed out ({delivery.pending} unacknowledged)")
        except BackendError:
            raise
        except Exception as exc:  # KafkaException and friends
            raise BackendError(f"Kafka produce failed: {exc}") from exc
        if delivery.error is not None:
            raise BackendError(f"Kafka delivery failed: {delivery.error}")

    def consumer(
        self,
        *,
        group: str,
        topics: Sequence[str],
        start_at: StartAt | None = None,
        on_revoke: OnRevoke | None = None,
    ) -> KafkaStreamConsumer:
        config = {
            "bootstrap.servers": self.bootstrap_servers,
            "client.id": self._client_id,
            "group.id": group,
            **self._consumer_config,
            **self._security,
        }
        return KafkaStreamConsumer(config, topics, start_at=start_at, on_revoke=on_revoke)

    def end_offsets(self, topic: str) -> dict[int, int]:
        from confluent_kafka import Consumer, TopicPartition

        with self._admin_lock:
            if self._admin_consumer is None:
                self._admin_consumer = Consumer(
                    {"bootstrap.servers": self.bootstrap_servers, "group.id": f"{self._client_id}-offsets",
                     **self._security}
                )
            consumer = self._admin_consumer
            try:
                meta = consumer.list_topics(topic, timeout=10)
                partitions = sorted(meta.topics[topic].partitions)
                return {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in partitions}
            except Exception as exc:
                raise BackendError(f"Kafka watermark query failed: {exc}") from exc

    def close(self) -> None:
        """Flush, then shut the producer down. Flushing alone left its librdkafka threads reconnecting to a
        broker that had gone, logging to stderr, until the garbage collector found the stream."""
        if self._closed:
            return
        self._closed = True
        self._producer.flush(10)  # normally empty: produce_batch waits for its delivery reports
        self._producer.purge()  # what a dead broker kept undelivered (its batch already raised): not on close
        self._producer.close()
        with self._admin_lock:
            if self._admin_consumer is not None:
                self._admin_consumer.close()
                self._admin_consumer = None


_LIBRDKAFKA_SESSION_TIMEOUT_MS = 45_000  # librdkafka's default ``session.timeout.ms``
_SETTLE_RETRY_S = 0.5  # how often settle() offers a deferred commit again

# Commit errors a membership change causes: the commit is kept and retried with the next one (or on
# revoke), and dropped for partitions this member no longer owns; never a reason to stop consuming.
_REBALANCE_ERRORS = frozenset(
    {
        "REBALANCE_IN_PROGRESS",
        "ILLEGAL_GENERATION",
        "UNKNOWN_MEMBER_ID",
        "FENCED_INSTANCE_ID",
        "NOT_COORDINATOR",
        "COORDINATOR_NOT_AVAILABLE",
        "COORDINATOR_LOAD_IN_PROGRESS",
        "REQUEST_TIMED_OUT",
        "_ASSIGNMENT_LOST",
        "_STATE",
        "_WAIT_COORD",
        "_TIMED_OUT",
        "_TRANSPORT",
        "_NO_OFFSET",
    }
)


def _error_name(exc: BaseException) -> str:
    """The librdkafka error name of a KafkaException (``""`` for anything else)."""
    args = getattr(exc, "args", ())
    error = args[0] if args else None
    name = getattr(error, "name", None)
    return name() if callable(name) else ""


def _records(messages: Sequence[Any]) -> list[Record]:
    """confluent-kafka messages -> :class:`Record` s; informational errors skipped, a fatal one raised.

    Per message Python is what this costs (at 49k events/s it was the consumer's largest share), so:
    the headers are converted once per run of equal header lists (the records of one capture request
    share their request id and mark: one list comparison in C instead of a tuple per header each), and
    the Record is built with ``tuple.__new__`` (its fields in order), not the named tuple's keyword
    ``__new__``. Same records as building each one in full (tests/stream).
    """
    records: list[Record] = []
    append = records.append
    new = tuple.__new__
    last_raw: Any = None
    headers: tuple[tuple[str, bytes], ...] = ()
    for m in messages:
        error = m.error()
        if error is not None:
            if error.fatal():
                raise BackendError(f"Kafka consumer error: {error}")
            continue  # informational (e.g. partition EOF); librdkafka retries the rest itself
        topic, partition, offset = m.topic(), m.partition(), m.offset()
        if topic is None or partition is None or offset is None:
            continue
        raw: Any = m.headers()  # a list of (name, bytes | None) pairs, or None
        if raw != last_raw:
            last_raw = raw
            headers = tuple([(str(k), bytes(v or b"")) for k, v in raw]) if raw else ()
        append(new(Record, (topic, partition, offset, m.key(), m.value() or b"", m.timestamp()[1], headers)))
    return records


class KafkaStreamConsumer:
    """A consumer-group member with explicit commits that survive membership changes.

    Cooperative rebalancing (``cooperative-sticky``): a member joining or leaving moves only the
    partitions that must move; the others keep being consumed through the rebalance. Commits are
    positions (next offset per partition) kept in ``_pending`` until the broker takes them: a commit
    refused because a rebalance is in progress stays pending and goes with the next commit, or with the
    revoke of its partition; positions of partitions this member lost are dropped (the new owner
    replays from the last committed position, and the consumer's writes are idempotent).
    """

    def __init__(
        self,
        config: Mapping[str, Any],
        topics: Sequence[str],
        *,
        start_at: StartAt | None = None,
        on_revoke: OnRevoke | None = None,
    ) -> None:
        from confluent_kafka import Consumer

        self.topics = list(dict.fromkeys(topics))
        self._consumer = Consumer(dict(config))
        # the Python client does not expose the protocol in use; the configured strategy decides it
        self._cooperative = "cooperative" in str(config.get("partition.assignment.strategy", ""))
        self._start_at = start_at
        self._app_on_revoke = on_revoke
        self._rewind = False
        self._rewound: set[tuple[str, int]] = set()
        self._pending: dict[tuple[str, int], int] = {}
        self._owned: set[tuple[str, int]] = set()
        self._flushed_at = 0.0
        self._settle_s = 2 * int(config.get("session.timeout.ms", _LIBRDKAFKA_SESSION_TIMEOUT_MS)) / 1000
        self._unsettled = False  # the last settle() ran out of time with positions still pending
        self._closing = False
        self.rebalances = 0
        self.dropped_commits = 0
        self._consumer.subscribe(self.topics, on_assign=self._on_assign, on_revoke=self._on_revoke,
                                 on_lost=self._on_lost)

    def _on_assign(self, consumer: Any, partitions: list[Any]) -> None:
        from confluent_kafka import OFFSET_BEGINNING

        self.rebalances += 1
        keys = [(tp.topic, tp.partition) for tp in partitions]
        starts = dict(self._start_at(keys)) if self._start_at is not None and keys else {}
        for tp, key in zip(partitions, keys, strict=True):
            if self._rewind and key not in self._rewound:
                tp.offset = OFFSET_BEGINNING
                self._rewound.add(key)
            elif self._start_at is not None:
                tp.offset = starts.get(key, OFFSET_BEGINNING)
        self._owned.update(keys)
        if self._cooperative:
            consumer.incremental_assign(partitions)
        else:
            consumer.assign(partitions)
        # The Store's position may be ahead of the group's (a member died between its Store write and its
        # commit): commit it, or the group's lag would count records that are persisted.
        for key, start in starts.items():
            if start > self._pending.get(key, -1):
                self._pending[key] = start

    def _on_revoke(self, consumer: Any, partitions: list[Any]) -> None:
        keys = [(tp.topic, tp.partition) for tp in partitions]
        self.rebalances += 1
        try:
            # Not from close()'s own revoke: close() flushed just before, and a call into the consumer from
            # inside its close (assignment(), a synchronous commit) can block for ever. A member stopped
            # during a rebalance hung there, SIGTERM'd and never exiting (py-spy: _on_revoke -> _flush ->
            # assignment(), librdkafka 2.16). What is still pending then is dropped; the next owner replays it.
            if not self._closing:
                if self._app_on_revoke is not None and keys:
                    self._app_on_revoke(keys)  # finishes the batch in hand and commits it (still ours here)
                self._flush(only=set(keys))
        except Exception as exc:  # never out of a callback: the partitions move anyway, their owner replays
            log.warning("commit on revoke failed", extra={"error": str(exc), "partitions": len(keys)})
        self._release(consumer, partitions, keys)

    def _on_lost(self, consumer: Any, partitions: list[Any]) -> None:
        """Partitions taken without a revoke (session timed out): nothing can be committed for them."""
        keys = [(tp.topic, tp.partition) for tp in partitions]
        self.rebalances += 1
        self._release(consumer, partitions, keys)

    def _release(self, consumer: Any, partitions: list[Any], keys: list[tuple[str, int]]) -> None:
        for key in keys:
            if self._pending.pop(key, None) is not None:
                self.dropped_commits += 1
            self._owned.discard(key)
        try:
            if self._cooperative:
                consumer.incremental_unassign(partitions)
            else:
                consumer.unassign()
        except Exception as exc:  # the handle is closing: nothing left to unassign
            log.debug("unassign skipped", extra={"error": str(exc)})

    def poll_batch(self, *, max_records: int = 1000, timeout: float = 1.0) -> list[Record]:
        """Wait up to ``timeout`` for the first message only, then take what is already fetched.

        ``consume(n, timeout)`` alone waits the whole timeout unless ``n`` messages arrive: below the
        consumer's full speed every batch would wait ``timeout`` for records that are already here.
        """
        try:
            messages = self._consumer.consume(num_messages=max_records, timeout=0)
            if not messages:
                first = self._consumer.poll(timeout)
                if first is not None:
                    rest = self._consumer.consume(num_messages=max_records - 1, timeout=0) if max_records > 1 else []
                    messages = [first, *rest]
        except BackendError:
            raise
        except Exception as exc:
            raise BackendError(f"Kafka consume failed: {exc}") from exc
        records = _records(messages)
        if self._pending and not records and time.monotonic() - self._flushed_at >= 1.0:
            self._flush(only=None)  # positions a rebalance deferred, on a partition that went quiet since
        return records

    def commit(self, records: Sequence[Record]) -> None:
        """Commit the positions after ``records`` (with any still pending); see the class doc."""
        for key, position in next_positions(records).items():
            if position > self._pending.get(key, -1):
                self._pending[key] = position
        self._flush(only=None)

    def _flush(self, *, only: set[tuple[str, int]] | None) -> None:
        from confluent_kafka import TopicPartition

        try:
            owned = {(tp.topic, tp.partition) for tp in self._consumer.assignment()}
        except Exception as exc:  # e.g. the handle is being destroyed
            raise BackendError(f"Kafka assignment unavailable: {exc}") from exc
        for key in [k for k in self._pending if k not in owned]:
            del self._pending[key]  # no longer ours: committing would overwrite the new owner's position
            self.dropped_commits += 1
        batch = {k: v for k, v in self._pending.items() if only is None or k in only}
        if not batch:
            return
        self._flushed_at = time.monotonic()
        try:
            self._consumer.commit(
                offsets=[TopicPartition(t, p, pos) for (t, p), pos in batch.items()], asynchronous=False
            )
        except Exception as exc:
            name = _error_name(exc)
            if name not in _REBALANCE_ERRORS:
                raise BackendError(f"Kafka commit failed: {exc}") from exc
            log.warning("Kafka commit deferred by a group change", extra={"error": name, "partitions": len(batch)})
            return
        for key, position in batch.items():
            if self._pending.get(key) == position:
                del self._pending[key]

    def lag(self) -> int:
        from confluent_kafka import TopicPartition

        try:
            partitions = []
            for topic in self.topics:
                meta = self._consumer.list_topics(topic, timeout=10)
                partitions += [TopicPartition(topic, p) for p in meta.topics[topic].partitions]
            committed = self._consumer.committed(partitions, timeout=10)
            total = 0
            for tp in committed:
                high = self._consumer.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), timeout=10)[1]
                total += max(high - max(tp.offset, 0), 0)
            return total
        except Exception as exc:
            raise BackendError(f"Kafka lag query failed: {exc}") from exc

    def seek_to_beginning(self) -> None:
        from confluent_kafka import OFFSET_BEGINNING, TopicPartition

        self._rewind = True
        assigned = self._consumer.assignment()
        if assigned:
            self._rewound.update((tp.topic, tp.partition) for tp in assigned)
            for tp in assigned:
                self._consumer.seek(TopicPartition(tp.topic, tp.partition, OFFSET_BEGINNING))

    def settle(self, *, timeout: float | None = None) -> int:
        """Commit the positions a group change deferred, serving the rebalance until it lets them through.

        A member stopped while the group rebalances (the member stopped before it starts one) had its last
        commits refused, and its close dropped them: the group's committed positions stayed behind what
        was persisted until a new owner committed them, and the last member to stop has none. Seen under
        load: 24,000 events persisted once each, 12,446 left uncommitted (tests/stream/test_groups.py).
        Polling lets librdkafka finish the rebalance; records it hands over meanwhile are not handed on,
        and their partitions are rewound to them. A partition taken from this member ends the wait for its
        position. Bounded by ``timeout`` (default: two session timeouts, as a cooperative change is two
        rebalances). Returns how many partitions' positions are still not committed; never raises.
        """
        deadline = time.monotonic() + (self._settle_s if timeout is None else timeout)
        waited = False
        next_try = 0.0
        unread: dict[tuple[str, int], int] = {}  # per partition, the first record polled here
        while True:
            now = time.monotonic()
            if now >= next_try:  # a refused commit is one round trip and one warning: not every poll
                next_try = now + _SETTLE_RETRY_S
                try:
                    self._flush(only=None)
                except BackendError as exc:
                    log.warning("Kafka commit while settling failed", extra={"error": str(exc)})
                    break
            if not self._pending or now >= deadline:
                break
            waited = True
            try:
                message = self._consumer.poll(0.1)  # serves the rebalance
            except Exception as exc:  # the handle failed: nothing more can be committed through it
                log.warning("Kafka poll while settling failed", extra={"error": str(exc)})
                break
            if message is not None and message.error() is None:  # not handled here: read again (below)
                topic, partition, offset = message.topic(), message.partition(), message.offset()
                if topic is not None and partition is not None and offset is not None:
                    unread[topic, partition] = min(unread.get((topic, partition), offset), offset)
        self._seek_back(unread)
        self._unsettled = bool(self._pending)
        if waited:
            log.info("Kafka commits settled" if not self._pending else "Kafka commits left unsettled",
                     extra={"partitions_pending": len(self._pending)})
        return len(self._pending)

    def _seek_back(self, unread: dict[tuple[str, int], int]) -> None:
        """Rewind to records settle() polled and did not hand over, on the partitions still ours: a loop that
        polls again after a settle (a ``run`` with ``max_records``, then another) reads them, not past them."""
        from confluent_kafka import TopicPartition

        if not unread:
            return
        try:
            owned = {(tp.topic, tp.partition) for tp in self._consumer.assignment()}
            for (topic, partition), offset in unread.items():
                if (topic, partition) in owned:
                    self._consumer.seek(TopicPartition(topic, partition, offset))
        except Exception as exc:  # the handle is failing: a new owner reads from the committed position
            log.warning("Kafka seek after settling failed", extra={"error": str(exc)})

    def close(self) -> None:
        """Settle what is pending (see :meth:`settle`), then leave the group: its partitions move at once.

        After a settle that ran out of time (the loop's, at its stop), one more try and no second wait: a
        stop stays within one bound."""
        self.settle(timeout=0.0 if self._unsettled else None)
        self._closing = True
        self._consumer.close()

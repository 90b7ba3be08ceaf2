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

import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from notify_core.errors import BackendError
from notify_core.stream.port import Message, Record, next_positions

PRODUCER_DEFAULTS: dict[str, Any] = {
    "enable.idempotence": True,
    "acks": "all",
    "linger.ms": 5,
    "compression.type": "none",
}
CONSUMER_DEFAULTS: dict[str, Any] = {
    "enable.auto.commit": False,
    "enable.auto.offset.store": False,
    "auto.offset.reset": "earliest",
    "session.timeout.ms": 6000,
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
        delivery_timeout: float = 30.0,
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
                **PRODUCER_DEFAULTS,
                **(producer_config or {}),
                **self._security,
            }
        )
        self._admin_consumer: Any = None
        self._admin_lock = threading.Lock()

    def produce(self, topic: str, key: bytes | None, value: bytes) -> None:
        self.produce_batch([Message(topic, key, value)])

    def produce_batch(self, messages: Sequence[Message]) -> None:
        if not messages:
            return
        delivery = _Delivery(len(messages))
        producer = self._producer
        deadline = time.monotonic() + self._delivery_timeout
        try:
            for message in messages:
                while True:
                    try:
                        if message.headers:
                            producer.produce(message.topic, message.value, message.key, on_delivery=delivery,
                                             headers=list(message.headers))
                        else:
                            producer.produce(message.topic, message.value, message.key, on_delivery=delivery)
                        break
                    except BufferError:  # local queue full: let librdkafka drain it, then retry
                        producer.poll(0.05)
                        if time.monotonic() > deadline:
                            raise BackendError("Kafka producer queue stayed full") from None
            while not delivery.done.is_set():
                producer.poll(0.01)  # serves delivery reports (of any thread's messages)
                if time.monotonic() > deadline + 5:
                    raise BackendError(f"Kafka delivery timed out ({delivery.pending} unacknowledged)")
        except BackendError:
            raise
        except Exception as exc:  # KafkaException and friends
            raise BackendError(f"Kafka produce failed: {exc}") from exc
        if delivery.error is not None:
            raise BackendError(f"Kafka delivery failed: {delivery.error}")

    def consumer(self, *, group: str, topics: Sequence[str]) -> KafkaStreamConsumer:
        config = {
            "bootstrap.servers": self.bootstrap_servers,
            "client.id": self._client_id,
            "group.id": group,
            **self._consumer_config,
            **self._security,
        }
        return KafkaStreamConsumer(config, topics)

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
        self._producer.flush(10)
        with self._admin_lock:
            if self._admin_consumer is not None:
                self._admin_consumer.close()
                self._admin_consumer = None


class KafkaStreamConsumer:
    """A consumer-group member with explicit, synchronous commits."""

    def __init__(self, config: Mapping[str, Any], topics: Sequence[str]) -> None:
        from confluent_kafka import Consumer

        self.topics = list(dict.fromkeys(topics))
        self._consumer = Consumer(dict(config))
        self._rewind = False
        self._rewound: set[tuple[str, int]] = set()
        self._consumer.subscribe(self.topics, on_assign=self._on_assign)

    def _on_assign(self, consumer: Any, partitions: list[Any]) -> None:
        from confluent_kafka import OFFSET_BEGINNING

        if self._rewind:
            for tp in partitions:
                if (tp.topic, tp.partition) not in self._rewound:
                    tp.offset = OFFSET_BEGINNING
                    self._rewound.add((tp.topic, tp.partition))
        consumer.assign(partitions)

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
        except Exception as exc:
            raise BackendError(f"Kafka consume failed: {exc}") from exc
        records: list[Record] = []
        for m in messages:
            error = m.error()
            if error is not None:
                if error.fatal():
                    raise BackendError(f"Kafka consumer error: {error}")
                continue  # informational (e.g. partition EOF); librdkafka retries the rest itself
            topic, partition, offset = m.topic(), m.partition(), m.offset()
            if topic is None or partition is None or offset is None:
                continue
            raw_headers: Any = m.headers()  # a list of (name, bytes | None) pairs, or None
            headers = tuple((str(k), bytes(v or b"")) for k, v in raw_headers) if raw_headers else ()
            records.append(Record(topic, partition, offset, m.key(), m.value() or b"", m.timestamp()[1], headers))
        return records

    def commit(self, records: Sequence[Record]) -> None:
        from confluent_kafka import TopicPartition

        positions = next_positions(records)
        if not positions:
            return
        try:
            self._consumer.commit(
                offsets=[TopicPartition(t, p, pos) for (t, p), pos in positions.items()], asynchronous=False
            )
        except Exception as exc:
            raise BackendError(f"Kafka commit failed: {exc}") from exc

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
            self._consumer.assign([TopicPartition(tp.topic, tp.partition, OFFSET_BEGINNING) for tp in assigned])

    def close(self) -> None:
        self._consumer.close()

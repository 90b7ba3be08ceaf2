"""A closed KafkaStream lets its producer go: no librdkafka thread keeps reconnecting to a broker that left."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from notify_core.stream.kafka import KafkaStream
from notify_core.stream.port import Message


def _librdkafka_threads() -> set[str]:
    """This process's librdkafka threads (named ``rdk:...``) by thread id: other tests' threads in the same
    process may start or end meanwhile, and are not this test's business."""
    found = set()
    for task in Path("/proc/self/task").iterdir():
        try:
            if (task / "comm").read_text().startswith("rdk:"):
                found.add(task.name)
        except OSError:  # ended while listed
            continue
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="counts threads in /proc")
def test_close_shuts_the_producer_down_and_is_idempotent(kafka_bootstrap: str) -> None:
    before = _librdkafka_threads()
    stream = KafkaStream(bootstrap_servers=kafka_bootstrap)
    stream.produce_batch([Message("notify_clickstream", b"k", b"v")])
    mine = _librdkafka_threads() - before  # the producer's own: its main thread and one per broker
    assert mine
    stream.close()  # the stream stays referenced: only close may end them
    deadline = time.monotonic() + 10
    while mine & _librdkafka_threads() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not mine & _librdkafka_threads()
    stream.close()  # twice: nothing left to do, no error


class _ClosingHandle:
    """Stands for librdkafka's consumer inside its own close(): reading the assignment or committing from
    the revoke callback there is what blocked for ever; unassigning is what the callback must still do."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def assignment(self) -> list[object]:
        self.calls.append("assignment")
        raise AssertionError("assignment() called from close()'s revoke: it can block for ever")

    def commit(self, **_: object) -> None:
        self.calls.append("commit")
        raise AssertionError("commit() called from close()'s revoke: it can block for ever")

    def incremental_unassign(self, partitions: list[object]) -> None:
        self.calls.append(f"incremental_unassign {len(partitions)}")


def test_the_revoke_of_close_itself_calls_nothing_that_can_block_and_drops_what_is_pending() -> None:
    from confluent_kafka import TopicPartition

    from notify_core.stream.kafka import KafkaStreamConsumer

    member = KafkaStreamConsumer({"bootstrap.servers": "127.0.0.1:9", "group.id": "g",
                                  "partition.assignment.strategy": "cooperative-sticky"}, ["notify_clickstream"])
    real, handle = member._consumer, _ClosingHandle()
    revoked: list[object] = []
    member._app_on_revoke = revoked.append
    member._consumer = handle  # librdkafka hands the callback its own handle: the same one
    try:
        member._pending = {("notify_clickstream", 0): 41, ("notify_clickstream", 1): 7}
        member._owned = {("notify_clickstream", 0), ("notify_clickstream", 1)}
        member._closing = True  # close() has flushed what it could and handed over to librdkafka's close
        member._on_revoke(handle, [TopicPartition("notify_clickstream", 0), TopicPartition("notify_clickstream", 1)])
        assert handle.calls == ["incremental_unassign 2"] and revoked == []
        assert member._pending == {} and member._owned == set() and member.dropped_commits == 2
    finally:
        real.close()

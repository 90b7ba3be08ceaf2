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


def test_a_member_closed_while_the_group_rebalances_commits_what_it_handled_once_the_group_settles(
    kafka_bootstrap: str,
) -> None:
    """Its last commit refused by the rebalance a joining member starts, a member's close waits for the
    group to let it through instead of dropping it: the member left behind owes nothing (its lag is 0)."""
    import threading

    from notify_core.events import CLICKSTREAM

    stream = KafkaStream(bootstrap_servers=kafka_bootstrap,
                         consumer_config={"session.timeout.ms": 3000, "heartbeat.interval.ms": 300})
    n = 300
    stream.produce_batch([Message(CLICKSTREAM, f"user-{i}".encode(), b"{}") for i in range(n)])
    first = stream.consumer(group="settle", topics=[CLICKSTREAM])
    records: list[object] = []
    deadline = time.monotonic() + 30
    while len(records) < n and time.monotonic() < deadline:
        records += first.poll_batch(timeout=0.5)
    assert len(records) == n
    second = stream.consumer(group="settle", topics=[CLICKSTREAM])
    done = threading.Event()
    serving = threading.Thread(target=lambda: [second.poll_batch(timeout=0.1) for _ in iter(done.is_set, True)])
    serving.start()  # the joining member serves its side of the rebalance on its own thread
    try:
        # one record's position at a time, until the rebalance refuses one
        for record in records:
            first.commit([record])  # type: ignore[list-item]
            if first._pending:  # type: ignore[attr-defined]
                break
            time.sleep(0.01)
        else:
            pytest.fail("no commit was refused: the second member never started a rebalance")
        first.commit(records)  # type: ignore[arg-type]  # all it handled, refused too: still rebalancing
        assert first._pending  # type: ignore[attr-defined]
        first.close()
        assert first._pending == {}  # type: ignore[attr-defined]
        done.set()
        serving.join(30)
        assert second.lag() == 0  # what first handled is the group's committed position: second owes nothing
    finally:
        done.set()
        serving.join(30)
        second.close()
        stream.close()

"""Closing Kafka clients: a closed KafkaStream lets its producer go (no librdkafka thread keeps reconnecting
to a broker that left); a member closed during a rebalance neither blocks in librdkafka's close nor drops
the commits the rebalance deferred: it settles them first, within one bound."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from typing import Any

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


class _RefusedCommit:
    """A member (``first``) that read ``n`` clickstream records, and a commit of them the group refused: a
    second member joined the group (reading another topic, so no partition moves and no revoke commits
    or drops anything) and serves its side of the rebalance on its own thread until :meth:`stop`."""

    def __init__(self, stream: KafkaStream, group: str, n: int) -> None:
        from notify_core.events import CLICKSTREAM, PURCHASE_HISTORY

        self.topic = CLICKSTREAM
        self.first = stream.consumer(group=group, topics=[CLICKSTREAM])
        stream.produce_batch([Message(CLICKSTREAM, f"old-{i}".encode(), b"{}") for i in range(n)])
        self.handled: list[Any] = []
        deadline = time.monotonic() + 30
        while len(self.handled) < n and time.monotonic() < deadline:
            self.handled += self.first.poll_batch(timeout=0.5)
        assert len(self.handled) == n
        self.second = stream.consumer(group=group, topics=[PURCHASE_HISTORY])
        self._done = threading.Event()
        self._serving = threading.Thread(target=self._serve)
        self._serving.start()
        pace = max(0.01, 5.0 / n)  # spread over >= 5 s: a joining member can be slow to ask on a busy box
        for record in self.handled:  # one position at a time, until the rebalance refuses one
            self.first.commit([record])
            if self.first._pending:  # type: ignore[attr-defined]
                break
            time.sleep(pace)
        else:
            self.stop()
            pytest.fail("no commit was refused: the second member never started a rebalance")
        self.first.commit(self.handled)  # all of them: refused too, the group still rebalancing
        assert self.first._pending  # type: ignore[attr-defined]

    def _serve(self) -> None:
        while not self._done.is_set():
            self.second.poll_batch(timeout=0.1)

    def stop(self) -> None:
        self._done.set()
        self._serving.join(30)


def _committed_lag(bootstrap: str, group: str, topic: str) -> int:
    """What the group has not committed of ``topic``, asked by a client that does not join the group."""
    from confluent_kafka import Consumer, TopicPartition

    client = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        partitions = [TopicPartition(topic, p) for p in client.list_topics(topic, timeout=10).topics[topic].partitions]
        committed = client.committed(partitions, timeout=10)
        return sum(client.get_watermark_offsets(tp, timeout=10)[1] - max(tp.offset, 0) for tp in committed)
    finally:
        client.close()


def test_a_member_closed_while_the_group_rebalances_commits_what_it_handled_once_the_group_settles(
    kafka_bootstrap: str,
) -> None:
    """Its last commit refused by the rebalance a joining member starts, a member's close waits for the
    group to let it through instead of dropping it: the group owes nothing of what it handled."""
    stream = KafkaStream(bootstrap_servers=kafka_bootstrap,
                         consumer_config={"session.timeout.ms": 3000, "heartbeat.interval.ms": 300})
    setup = _RefusedCommit(stream, "settle", 300)
    try:
        setup.first.close()
        assert setup.first._pending == {}  # type: ignore[attr-defined]
        assert _committed_lag(kafka_bootstrap, "settle", setup.topic) == 0
    finally:
        setup.stop()
        setup.second.close()
        stream.close()


def test_records_polled_while_settling_are_read_again_by_the_member(kafka_bootstrap: str) -> None:
    """settle() polls only to let the rebalance finish: records it is handed meanwhile are not handled, so
    the member rewinds to them, and its next polls read every record produced during the settle."""
    stream = KafkaStream(bootstrap_servers=kafka_bootstrap,
                         consumer_config={"session.timeout.ms": 3000, "heartbeat.interval.ms": 300})
    setup = _RefusedCommit(stream, "settle-again", 100)
    try:
        new = {f"new-{i}".encode() for i in range(200)}
        stream.produce_batch([Message(setup.topic, key, b"{}") for key in sorted(new)])
        assert setup.first.settle(timeout=20) == 0
        read: set[bytes | None] = set()
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < 3:
            batch = setup.first.poll_batch(timeout=0.2)
            if batch:
                read |= {r.key for r in batch}
                quiet_since = time.monotonic()
        assert new <= read, f"{len(new - read)} records polled during the settle were never read again"
    finally:
        setup.stop()
        setup.first.close()
        setup.second.close()
        stream.close()


class _RebalancingHandle:
    """Stands for librdkafka's consumer in a group that never stops rebalancing: every commit refused."""

    def __init__(self) -> None:
        self.commits = 0
        self.closed = False

    def assignment(self) -> list[object]:
        from confluent_kafka import TopicPartition

        return [TopicPartition("notify_clickstream", 0)]

    def commit(self, **_: object) -> None:
        from confluent_kafka import KafkaError, KafkaException

        self.commits += 1
        raise KafkaException(KafkaError(KafkaError.REBALANCE_IN_PROGRESS))

    def poll(self, timeout: float) -> None:
        time.sleep(timeout)

    def close(self) -> None:
        self.closed = True


def test_a_settle_that_runs_out_of_time_keeps_the_position_and_close_does_not_wait_again() -> None:
    from notify_core.stream.kafka import KafkaStreamConsumer

    member = KafkaStreamConsumer({"bootstrap.servers": "127.0.0.1:9", "group.id": "g",
                                  "session.timeout.ms": 3000}, ["notify_clickstream"])
    real, handle = member._consumer, _RebalancingHandle()
    member._consumer = handle
    try:
        member._pending = {("notify_clickstream", 0): 41}
        started = time.monotonic()
        assert member.settle(timeout=0.6) == 1  # still pending: the group never let it through
        waited = time.monotonic() - started
        assert 0.5 <= waited < 3.0  # its own bound, not two session timeouts (6 s here)
        assert 2 <= handle.commits <= 1 + waited / 0.5  # offered again every 0.5 s, not at every poll
        assert member._pending == {("notify_clickstream", 0): 41}
        commits, started = handle.commits, time.monotonic()
        member.close()  # one more try, no second wait of two session timeouts (6 s here)
        assert time.monotonic() - started < 3.0 and handle.commits == commits + 1 and handle.closed
    finally:
        real.close()

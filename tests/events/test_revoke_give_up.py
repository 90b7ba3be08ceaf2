"""A stop (SIGTERM) that gives a batch up inside a rebalance callback ends the consumer there.

The audit's case: the Store keeps failing batch N; a cooperative rebalance takes another partition away,
so the stream calls ``on_revoke`` from inside ``poll_batch`` and the hook waits for batch N; the SIGTERM
comes meanwhile, batch N is given up (StoppedWhileRetryingError) and the stream swallows that (it never
lets an exception out of a callback: kafka.py ``_on_revoke``). run() then wrote and committed batch N+1,
of a partition it still owned: the group's commit and the Store's position moved past batch N, whose
records no member ever read again. What must hold now: once a batch is given up nothing more is written
or committed, run() raises the give-up, and a re-run persists every record.

The stream is the local log with a member that does what KafkaStreamConsumer does on such a rebalance:
its second poll runs the hook (for a partition it does not hold) before it returns the records it read.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path

import pytest

from notify_core.clock import SYSTEM_CLOCK
from notify_core.errors import BackendError
from notify_core.events import CLICKSTREAM
from notify_core.events.consumer import DEFAULT_GROUP, EventConsumer, StoppedWhileRetryingError
from notify_core.store import tables
from notify_core.store.port import Item, Store, Table
from notify_core.store.sqlite import SqliteStore
from notify_core.stream.local_log import LocalLog
from notify_core.stream.port import Message, OnRevoke, Record, StartAt, StreamConsumer
from tests.events.helpers import click
from tests.events.store_faults import FaultyStore, TableStandIn

BATCH = 5


class _DownUntilStopped(FaultyStore):
    """A Store whose ``user_events`` writes fail (BackendError: down, throttled) until ``stop`` is set;
    ``failed`` is set at the first failure."""

    def __init__(self, inner: Store, stop: threading.Event) -> None:
        self.stop, self.failed = stop, threading.Event()
        super().__init__(inner, name=tables.USER_EVENTS, stand_in=lambda table: _Down(table, self))


class _Down(TableStandIn):
    def __init__(self, table: Table, store: _DownUntilStopped) -> None:
        super().__init__(table)
        self.store = store

    def batch_put(self, items: Iterable[Item]) -> int:
        if not self.store.stop.is_set():
            self.store.failed.set()
            raise BackendError("Store unavailable (throttled)")
        return self.table.batch_put(items)


class _RebalancingMember:
    """A local-log member whose second poll is a cooperative rebalance: once batch N's write has failed,
    the SIGTERM arrives (``stop``) and ``on_revoke`` runs for a partition another member takes, what it
    raises swallowed as the Kafka adapter does; then the records read from the partition kept."""

    def __init__(self, inner: StreamConsumer, on_revoke: OnRevoke, store: _DownUntilStopped) -> None:
        self.inner, self.on_revoke, self.store, self.polls = inner, on_revoke, store, 0
        self.swallowed: list[BaseException] = []

    def poll_batch(self, *, max_records: int = 1000, timeout: float = 1.0) -> list[Record]:
        self.polls += 1
        if self.polls == 2:
            assert self.store.failed.wait(10), "batch N was never written"
            self.store.stop.set()
            try:
                self.on_revoke([(CLICKSTREAM, 1)])
            except Exception as exc:  # never out of a callback (KafkaStreamConsumer._on_revoke)
                self.swallowed.append(exc)
        return self.inner.poll_batch(max_records=max_records, timeout=timeout)

    def commit(self, records: Sequence[Record]) -> None:
        self.inner.commit(records)

    def lag(self) -> int:
        return self.inner.lag()

    def seek_to_beginning(self) -> None:
        self.inner.seek_to_beginning()

    def settle(self, *, timeout: float | None = None) -> int:
        return self.inner.settle(timeout=timeout)

    def close(self) -> None:
        self.inner.close()


class _RebalancingLog:
    """The local log, its member a :class:`_RebalancingMember`."""

    def __init__(self, log: LocalLog, store: _DownUntilStopped) -> None:
        self.log, self.store = log, store
        self.member: _RebalancingMember | None = None

    def produce_batch(self, messages: Sequence[Message]) -> None:
        self.log.produce_batch(messages)

    def produce(self, topic: str, key: bytes | None, value: bytes) -> None:
        self.log.produce(topic, key, value)

    def consumer(self, *, group: str, topics: Sequence[str], start_at: StartAt | None = None,
                 on_revoke: OnRevoke | None = None) -> StreamConsumer:
        assert on_revoke is not None
        inner = self.log.consumer(group=group, topics=topics, start_at=start_at, on_revoke=on_revoke)
        self.member = _RebalancingMember(inner, on_revoke, self.store)
        return self.member

    def end_offsets(self, topic: str) -> dict[int, int]:
        return self.log.end_offsets(topic)

    def close(self) -> None:
        self.log.close()


def test_a_batch_given_up_inside_on_revoke_is_never_committed_past(tmp_path: Path) -> None:
    log = LocalLog(tmp_path / "log.sqlite", poll_interval=0.002)
    log.produce_batch([Message(CLICKSTREAM, b"k", json.dumps(click(i)).encode()) for i in range(2 * BATCH)])
    stop = threading.Event()
    store = _DownUntilStopped(SqliteStore(tmp_path / "store.sqlite"), stop)
    stream = _RebalancingLog(log, store)
    consumer = EventConsumer(stream=stream, store=store, landing=None, max_batch=BATCH, poll_timeout=0.05,
                             clock=SYSTEM_CLOCK)
    try:
        with pytest.raises(StoppedWhileRetryingError):
            consumer.run(stop=stop)
        assert stream.member is not None
        assert [type(exc) for exc in stream.member.swallowed] == [StoppedWhileRetryingError]
        # batch N+1 (read by that poll, of a partition still ours) was neither committed nor written
        assert log.committed(DEFAULT_GROUP, CLICKSTREAM) == 0
        assert consumer.stored_positions([(CLICKSTREAM, 0)]) == {}
        assert not list(store.table(tables.USER_EVENTS).scan())
    finally:
        consumer.close()
    # the next consumer (the Store up) starts where the Store says: at batch N, so nothing is lost
    again = EventConsumer(stream=log, store=store, landing=None, max_batch=BATCH, poll_timeout=0.05,
                          clock=SYSTEM_CLOCK)
    try:
        assert again.run(stop=threading.Event(), idle_exit=0.5).persisted == 2 * BATCH
        assert again.lag() == 0
    finally:
        again.close()
    assert len(list(store.table(tables.USER_EVENTS).scan())) == 2 * BATCH
    store.close()
    log.close()

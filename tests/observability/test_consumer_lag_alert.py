"""The consumer-lag alert during a Store outage (session-40 audit, docs/audit-findings.md).

``notify_consumer_lag_seconds`` was set only when a batch committed: while the Store kept failing the batch
in hand (the consumer retries it, never skips it) the gauge kept the last committed batch's age, ~0 s, so
NotifyConsumerLagAboveSLO stayed quiet for the whole outage, and the pipeline-success ratio had no traffic to
compute (0/0). Now each failed attempt sets the gauge to the age of the batch in hand.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable
from pathlib import Path

from prometheus_client import REGISTRY

from notify_core import slo
from notify_core.clock import ManualClock
from notify_core.errors import BackendError
from notify_core.events import CLICKSTREAM
from notify_core.events.consumer import EventConsumer
from notify_core.metrics import CONSUMER_LAG_SECONDS
from notify_core.store import tables
from notify_core.store.port import Item, Table
from notify_core.store.sqlite import SqliteStore
from notify_core.stream.local_log import LocalLog
from notify_core.stream.port import Message
from tests.events.helpers import click
from tests.events.store_faults import FaultyStore, TableStandIn


class _DownForAWhile(TableStandIn):
    """``user_events`` writes fail ``failures`` times (the Store down); each attempt notes the lag gauge and
    moves the clock 20 s (the outage goes on)."""

    def __init__(self, table: Table, clock: ManualClock, seen: list[float], failures: int) -> None:
        super().__init__(table)
        self.clock, self.seen, self.failures = clock, seen, failures

    def batch_put(self, items: Iterable[Item]) -> int:
        self.seen.append(REGISTRY.get_sample_value("notify_consumer_lag_seconds") or 0.0)
        if len(self.seen) <= self.failures:
            self.clock.advance(20)
            raise BackendError("Store unavailable")
        return self.table.batch_put(items)


def test_a_store_outage_raises_the_lag_the_consumer_lag_alert_reads(tmp_path: Path) -> None:
    log = LocalLog(tmp_path / "log.sqlite", poll_interval=0.002)
    log.produce_batch([Message(CLICKSTREAM, b"k", json.dumps(click(i)).encode()) for i in range(5)])
    [record] = log.consumer(group="peek", topics=[CLICKSTREAM]).poll_batch(max_records=1, timeout=1.0)
    clock = ManualClock(record.timestamp_ms / 1000)  # produced "now"
    seen: list[float] = []
    store = FaultyStore(SqliteStore(tmp_path / "store.sqlite"), name=tables.USER_EVENTS,
                        stand_in=lambda table: _DownForAWhile(table, clock, seen, failures=3))
    CONSUMER_LAG_SECONDS.set(0)  # the last committed batch was on time
    consumer = EventConsumer(stream=log, store=store, landing=None, max_batch=10, poll_timeout=0.05, clock=clock)
    try:
        assert consumer.run(stop=threading.Event(), idle_exit=0.3).persisted == 5
    finally:
        consumer.close()
        store.close()
        log.close()
    threshold = slo.objective("consumer_lag").threshold
    # before the first attempt: 0; after 1, 2, 3 failed attempts the batch in hand is 20, 40, 60 s old
    assert [round(x) for x in seen] == [0, 20, 40, 60]
    assert seen[2] > threshold  # the alert's expression, max(notify_consumer_lag_seconds) > 10, holds mid-outage

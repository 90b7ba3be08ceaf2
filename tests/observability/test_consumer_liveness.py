"""A consumer whose loop is stuck says so on /healthz (the consumer pod's liveness probe), while its metrics
stay readable; once the call returns it is healthy again. Before, the pod answered /metrics whatever its
loop did, so a consumer stuck on a call that never returned was never restarted."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from pathlib import Path

import pytest

from notify_core.events import CLICKSTREAM
from notify_core.events import consumer as consumer_module
from notify_core.events.consumer import EventConsumer
from notify_core.metrics_server import HEALTH_PATH, MetricsServer
from notify_core.store import tables
from notify_core.store.port import Item, Table
from notify_core.store.sqlite import SqliteStore
from notify_core.stream.local_log import LocalLog
from notify_core.stream.port import Message
from tests.events.helpers import click, events_clock
from tests.events.store_faults import FaultyStore, TableStandIn


class _Hangs(TableStandIn):
    """``user_events`` writes wait until released: a Store call that does not return."""

    def __init__(self, table: Table, entered: threading.Event, release: threading.Event) -> None:
        super().__init__(table)
        self.entered, self.release = entered, release

    def batch_put(self, items: Iterable[Item]) -> int:
        self.entered.set()
        self.release.wait(60)
        return self.table.batch_put(items)


def _get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_a_stuck_consumer_fails_its_liveness_probe_and_recovers(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(consumer_module, "STALLED_AFTER_S", 0.5)
    log = LocalLog(tmp_path / "log.sqlite", poll_interval=0.002)
    entered, release = threading.Event(), threading.Event()
    store = FaultyStore(SqliteStore(tmp_path / "store.sqlite"), name=tables.USER_EVENTS,
                        stand_in=lambda table: _Hangs(table, entered, release))
    consumer = EventConsumer(stream=log, store=store, landing=None, max_batch=10, poll_timeout=0.05,
                             clock=events_clock())
    server = MetricsServer(port=0, healthy=consumer.healthy)
    stop = threading.Event()
    persisted: list[int] = []
    loop = threading.Thread(target=lambda: persisted.append(consumer.run(stop=stop).persisted))
    try:
        loop.start()
        time.sleep(1.0)  # idle: polls return empty within their timeout, each one a turn
        assert _get(server.port, HEALTH_PATH) == (200, b"ok\n")
        log.produce_batch([Message(CLICKSTREAM, b"k", json.dumps(click(i)).encode()) for i in range(5)])
        assert entered.wait(10)
        deadline = time.monotonic() + 10
        while _get(server.port, HEALTH_PATH)[0] == 200 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _get(server.port, HEALTH_PATH) == (503, b"stalled\n")
        status, body = _get(server.port, "/metrics")  # the metrics still answer: an operator can look
        assert status == 200 and b"notify_consumer_lag_seconds" in body
        release.set()
        deadline = time.monotonic() + 10
        while _get(server.port, HEALTH_PATH)[0] != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _get(server.port, HEALTH_PATH) == (200, b"ok\n")
    finally:
        release.set()
        stop.set()
        loop.join(30)
        server.close()
        consumer.close()
        store.close()
        log.close()
    assert persisted == [5]

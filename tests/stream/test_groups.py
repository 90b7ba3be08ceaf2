"""Consumer groups under membership changes, with real processes.

Kafka (librdkafka's mock broker in its own process): three ``notify consume`` processes of one group,
members joining while events flow and one killed with ``kill -9``; every event ends up in the Store
exactly once and no surviving member exits. Embedded log: a second consumer of a group refuses with a
clear message, a ``--standby`` one waits and takes over, and two members never both handle a record.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from notify_core.events import CLICKSTREAM, PURCHASE_HISTORY
from tests.events import crash_harness
from tests.kafka_broker import running_broker

ROOT = Path(__file__).resolve().parents[2]


def start_consumer(data_dir: Path, name: str, *extra: str) -> subprocess.Popen[bytes]:
    err_path = data_dir.parent / f"{name}.err"
    err = err_path.open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "notify_cli.stream_commands", "consume", "--data-dir", str(data_dir), *extra],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=err,
        env={**os.environ, "NOTIFY_ENV": "local"},
    )
    ERRORS[proc.pid] = err_path
    return proc


ERRORS: dict[int, Path] = {}


def stderr_tail(proc: subprocess.Popen[bytes]) -> str:
    lines = [line for line in ERRORS[proc.pid].read_text().splitlines() if not line.startswith("%")]
    return "\n".join(lines[-15:])


def persisted(data_dir: Path) -> int:
    """Distinct events in the Store (an order's ledger row, a click's user_events row)."""
    path = data_dir / "store.sqlite"
    if not path.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30) as conn:
            orders = conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]
            clicks = conn.execute("SELECT COUNT(*) FROM user_events").fetchone()[0]
            return int(orders) + int(clicks)
    except sqlite3.Error:
        return 0


def wait_for(data_dir: Path, n: int, *, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    count = persisted(data_dir)
    while count < n and time.monotonic() < deadline:
        time.sleep(0.5)
        count = persisted(data_dir)
    return count


def stop(proc: subprocess.Popen[bytes]) -> dict[str, int]:
    """SIGTERM: the consumer finishes its batch, commits, prints its totals as JSON and exits 0."""
    proc.send_signal(signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail(f"consumer {proc.pid} still running 60 s after SIGTERM:\n{stderr_tail(proc)}")
    assert proc.returncode == 0, f"consumer exited {proc.returncode}:\n{stderr_tail(proc)}"
    totals: dict[str, int] = json.loads(out.decode().strip().splitlines()[-1])
    return totals


@pytest.mark.kafka
def test_three_kafka_consumers_survive_joins_and_a_kill_9_and_persist_every_event_once(tmp_path: Path) -> None:
    events = 24_000
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    with running_broker([(PURCHASE_HISTORY, 6), (CLICKSTREAM, 6)]) as broker:
        kafka = ("--kafka", broker.bootstrap, "--max-batch", "500")
        producer = crash_harness.produce(f"kafka:{broker.bootstrap}", events, 1_500)  # ~16 s of events
        members = {"a": start_consumer(data_dir, "a", *kafka)}
        time.sleep(3)
        members["b"] = start_consumer(data_dir, "b", *kafka)  # joins: a keeps the partitions it still has
        time.sleep(3)
        members["c"] = start_consumer(data_dir, "c", *kafka)
        time.sleep(4)
        members.pop("b").kill()  # kill -9 mid-stream: no leave, its partitions move after the session timeout
        time.sleep(2)
        members["d"] = start_consumer(data_dir, "d", *kafka)  # a replacement joins
        assert producer.wait(timeout=120) == 0
        count = wait_for(data_dir, events, timeout=90)
        time.sleep(1)
        exited = {name: proc.returncode for name, proc in members.items() if proc.poll() is not None}
        totals = {name: stop(proc) for name, proc in members.items() if name not in exited}
    report = crash_harness.CrashReport(events=events, kills=1)
    crash_harness.count(data_dir, report)
    report.final_lag = min(t["lag"] for t in totals.values())
    print("\nkafka group:", report.line(), "members:", json.dumps(totals))
    assert not exited, f"members exited while the group changed: {exited}"
    deferred = sum(ERRORS[p.pid].read_text().count("deferred by a group change") for p in members.values())
    print("commits deferred by a rebalance:", deferred)
    assert count == events
    assert report.ok, report.line()


def test_a_second_embedded_log_consumer_refuses_and_a_standby_takes_over(tmp_path: Path) -> None:
    """Events flow in two halves: the first member is stopped (gracefully) once it has persisted some of the
    first half, the second half is produced only after it stopped, so each member has records to handle
    however slowly the processes start on a busy box (fixed sleeps let the first handle them all)."""
    half = 6_000
    events = 2 * half
    data_dir = tmp_path / "data"
    log_path = data_dir / "stream" / "log.sqlite"
    log_path.parent.mkdir(parents=True)
    producer = crash_harness.produce(log_path, half, 2_000)
    first = start_consumer(data_dir, "first", "--max-batch", "500")
    assert wait_for(data_dir, 500, timeout=60) >= 500, stderr_tail(first)
    second = start_consumer(data_dir, "second")
    assert second.wait(timeout=60) == 3
    message = (tmp_path / "second.err").read_text()
    assert "already being consumed from this log by process" in message and str(first.pid) in message
    standby = start_consumer(data_dir, "standby", "--standby", "--max-batch", "500")
    time.sleep(2.5)
    assert standby.poll() is None and first.poll() is None
    handled_first = stop(first)["records"]  # graceful hand-over: the first commits what it handled
    assert producer.wait(timeout=120) == 0
    assert crash_harness.produce(log_path, half, 2_000, first=half).wait(timeout=120) == 0
    assert wait_for(data_dir, events, timeout=60) == events
    handled_standby = stop(standby)["records"]
    # one member at a time, and a clean hand-over: every record handled by exactly one of them
    assert handled_first > 0 and handled_standby > 0
    assert handled_first + handled_standby == events


def test_a_standby_takes_over_from_a_killed_embedded_log_consumer(tmp_path: Path) -> None:
    events = 10_000
    data_dir = tmp_path / "data"
    log_path = data_dir / "stream" / "log.sqlite"
    log_path.parent.mkdir(parents=True)
    producer = crash_harness.produce(log_path, events, 2_000)
    first = start_consumer(data_dir, "first", "--max-batch", "500")
    time.sleep(2.0)
    standby = start_consumer(data_dir, "standby", "--standby", "--max-batch", "500")
    time.sleep(1.5)
    first.kill()  # kill -9: the kernel releases its lock
    first.wait()
    assert producer.wait(timeout=120) == 0
    assert wait_for(data_dir, events, timeout=60) == events
    assert standby.poll() is None
    stop(standby)
    report = crash_harness.CrashReport(events=events, kills=1)
    crash_harness.count(data_dir, report)
    report.final_lag = 0
    assert report.ok, report.line()


def test_a_standby_stopped_before_it_took_over_says_it_handled_nothing(tmp_path: Path) -> None:
    """SIGTERM ends every ``notify consume`` with its totals as JSON, a standby still waiting for the group
    too (it printed nothing before, so a supervisor reading the last line had nothing to read)."""
    data_dir = tmp_path / "data"
    log_path = data_dir / "stream" / "log.sqlite"
    log_path.parent.mkdir(parents=True)
    assert crash_harness.produce(log_path, 1_000, 0).wait(timeout=120) == 0
    first = start_consumer(data_dir, "first", "--max-batch", "500")
    assert wait_for(data_dir, 1_000, timeout=60) == 1_000, stderr_tail(first)
    standby = start_consumer(data_dir, "standby", "--standby")
    time.sleep(2.5)
    assert standby.poll() is None and first.poll() is None
    waiting = stop(standby)
    assert waiting["records"] == 0 and waiting["persisted"] == 0 and waiting["lag"] is None
    assert stop(first)["records"] == 1_000

"""The fault-injection suite (``make test-faults``; marker ``faults``): kill -9 at random points of the
consumer and of the worker, in loops, and servers killed or taken down mid-run. Each test ends with
the invariants: no acknowledged event lost, the Store equal to a clean run's (per-table digest), and
duplicate deliveries under 0.01 % (the short versions, in the default suite, are too small for a rate:
there at most a few per kill). The long versions are also marked ``slow``.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from notify_core.clock import SYSTEM_CLOCK
from notify_core.events import CLICKSTREAM, PURCHASE_HISTORY
from notify_core.events.consumer import EventConsumer
from notify_core.store import tables
from notify_core.store.sqlite import SqliteStore
from notify_core.stream.local_log import LocalLog
from tests.delivery.crash_harness import run_crash_test
from tests.events import crash_harness
from tests.faults.invariants import table_digests
from tests.faults.record import record
from tests.kafka_broker import running_broker
from tests.servers import _dynamodb_answers, find_dynamodb_local, free_port, server_env

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.faults
EVENT_TABLES = (tables.EVENTS, tables.USER_EVENTS, tables.PURCHASES)


def _digests(path: Path, names: tuple[str, ...] = tables.ALL_TABLES) -> dict[str, str]:
    store = SqliteStore(path)
    try:
        return table_digests(store, names)
    finally:
        store.close()


def _consumer_loop(tmp_path: Path, *, events: int, kills: int, seed: int, rate: float,
                   window: tuple[float, float]) -> None:
    faulty = crash_harness.run(tmp_path / "faulty", events=events, kills=kills, seed=seed, rate=rate,
                               kill_window=window)
    clean = crash_harness.run(tmp_path / "clean", events=events, kills=0, seed=seed, rate=0, kill_window=window)
    same = _digests(tmp_path / "faulty" / "store.sqlite") == _digests(tmp_path / "clean" / "store.sqlite")
    entry = record(
        f"consumer kill -9 loop ({events:,} events)", injected=f"{kills} x SIGKILL of notify consume",
        invariants={"no acknowledged event lost": faulty.missing == 0,
                    "each event persisted once": faulty.ok,
                    "Store equals a clean run (per-table digest)": same and clean.ok},
        lost=faulty.missing, rows=faulty.events_rows, lag=faulty.final_lag, seconds=faulty.seconds,
    )
    assert entry.held, faulty.line()


def test_consumer_killed_at_random_points_in_a_loop(tmp_path: Path) -> None:
    _consumer_loop(tmp_path, events=20_000, kills=3, seed=int(os.environ.get("FAULTS_SEED", "13")), rate=6_000,
                   window=(1.2, 2.5))


@pytest.mark.slow
def test_consumer_killed_at_random_points_in_a_long_loop(tmp_path: Path) -> None:
    _consumer_loop(tmp_path, events=300_000, kills=10, seed=int(os.environ.get("FAULTS_SEED", "17")), rate=15_000,
                   window=(1.5, 4.0))


def _worker_loop(tmp_path: Path, *, n: int, kills: int, seed: int, max_duplicates: float,
                 channel: str = "outbox") -> None:
    faulty = run_crash_test(tmp_path / "faulty", n=n, kills=kills, seed=seed, timeout_s=1200, channel=channel)
    clean = run_crash_test(tmp_path / "clean", n=n, kills=0, seed=seed, timeout_s=1200, channel=channel)
    repaired = _close_minutes(tmp_path / "faulty")
    _close_minutes(tmp_path / "clean")
    got = _delivery_state(tmp_path / "faulty" / "store.sqlite")
    expected = _delivery_state(tmp_path / "clean" / "store.sqlite")
    same = got == expected
    entry = record(
        f"worker kill -9 loop ({n:,} notifications)", injected=f"{kills} x SIGKILL of notify worker",
        invariants={"no notification lost": faulty.lost == 0 and faulty.delivered == n,
                    "Store equals a clean run (per-table digest)": same and clean.lost == 0,
                    f"duplicate deliveries <= {max_duplicates:g}": faulty.duplicates <= max_duplicates},
        duplicates=faulty.duplicates, duplicate_rate=f"{faulty.duplicate_rate:.5%}", seconds=round(faulty.seconds, 1),
        sends_repaired_at_minute_close=repaired,
    )
    assert entry.held, (asdict(faulty), {k: (len(v), len(expected[k])) for k, v in got.items() if v != expected[k]})


def _close_minutes(data_dir: Path) -> int:
    """One worker pass as of two minutes later: the minutes are over, so the worker closes them and
    re-creates the derived rows (deliveries, sends, plans) a kill lost between an outcome and its batched
    projection. That is the designed convergence point; the Store is compared after it."""
    from notify_core.clock import OffsetClock
    from notify_core.delivery import DeliveryWorker, WorkerOptions
    from notify_core.delivery.channels import OutboxChannel

    store = SqliteStore(data_dir / "store.sqlite")
    try:
        before = sum(1 for _ in store.table(tables.SENDS).scan())
        late = OffsetClock(120)
        worker = DeliveryWorker(store, OutboxChannel(data_dir / "late-outbox.jsonl", clock=late),
                                public_base_url="http://x", clock=late,
                                options=WorkerOptions(concurrency=1, lookback_minutes=5))
        worker.run_pass()
        worker.flush()
        return sum(1 for _ in store.table(tables.SENDS).scan()) - before
    finally:
        store.close()


def _delivery_state(path: Path) -> dict[str, Any]:
    """What delivery leaves in the Store, without the wall-clock parts that differ between any two runs
    (the due minute in the schedules key, send times in the sends key): per notification its final
    status, its dedupe record, its send record (user, campaign) and its deliveries' final outcome."""
    store = SqliteStore(path)
    try:
        state = {
            "schedules": sorted((i["notification_id"], i["status"]) for i in store.table(tables.SCHEDULES).scan()),
            "dedupe": sorted(i["pk"] for i in store.table(tables.DEDUPE).scan()),
            "sends": sorted((i["pk"], i.get("campaign_id"), i.get("notification_id"))
                            for i in store.table(tables.SENDS).scan()),
            "campaigns": table_digests(store, (tables.CAMPAIGNS, tables.USERS)),
        }
    finally:
        store.close()
    return state


def test_worker_killed_at_random_points_in_a_loop(tmp_path: Path) -> None:
    _worker_loop(tmp_path, n=4_000, kills=3, seed=int(os.environ.get("FAULTS_SEED", "5")), max_duplicates=3 * 4)


@pytest.mark.slow
def test_worker_killed_at_random_points_in_a_long_loop(tmp_path: Path) -> None:
    _worker_loop(tmp_path, n=100_000, kills=5, seed=int(os.environ.get("FAULTS_SEED", "7")),
                 max_duplicates=100_000 * 0.0001)


def test_worker_killed_at_random_points_in_a_loop_async_webhook_senders(tmp_path: Path) -> None:
    """The same loop with the webhook channel: `notify worker` sends from its event-loop senders
    (notify_core/delivery/async_senders.py) to a loopback sink that outlives every kill."""
    _worker_loop(tmp_path, n=4_000, kills=3, seed=int(os.environ.get("FAULTS_SEED", "5")), max_duplicates=3 * 4,
                 channel="webhook")


@pytest.mark.slow
def test_worker_killed_at_random_points_in_a_long_loop_async_webhook_senders(tmp_path: Path) -> None:
    """100k / 5 kills on the webhook channel. The bound is the design's: a kill repeats at most the sends in
    flight, ``concurrency`` (4 here) per kill = 20. Over a network hop a request reaches the receiver before
    its answer comes back, so at a random kill most senders are between their send and their commit: the
    thread senders measured 19 on this loop (seed 11), the async senders 12 and 15 (seeds 7, 11); the outbox
    loop above (a local file, no round trip) keeps the < 0.01 % gate. The receiver drops them by key."""
    _worker_loop(tmp_path, n=100_000, kills=5, seed=int(os.environ.get("FAULTS_SEED", "7")),
                 max_duplicates=5 * 4, channel="webhook")


@pytest.mark.kafka
def test_kafka_broker_down_and_back_mid_run(tmp_path: Path) -> None:
    """Every broker goes down for 8 s while a consumer process reads and the producer writes: the
    producer's acknowledged events are all persisted, once, and the consumer never exits."""
    events, data = 15_000, tmp_path / "data"
    data.mkdir()
    with running_broker([(PURCHASE_HISTORY, 4), (CLICKSTREAM, 4)]) as broker:
        producer = crash_harness.produce(f"kafka:{broker.bootstrap}", events, 1500)
        consumer = subprocess.Popen(
            [sys.executable, "-m", "notify_cli.stream_commands", "consume", "--data-dir", str(data), "--kafka",
             broker.bootstrap, "--max-batch", "500"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            env={**os.environ, "NOTIFY_ENV": "local"})
        time.sleep(4)
        broker.down()
        time.sleep(8)
        survived_outage = consumer.poll() is None
        broker.up()
        producer_ok = producer.wait(timeout=180) == 0
        deadline = time.monotonic() + 90
        report = crash_harness.CrashReport(events=events, kills=0)
        while time.monotonic() < deadline:
            crash_harness.count(data, report)
            if report.distinct_event_ids >= events:
                break
            time.sleep(0.5)
        consumer.send_signal(signal.SIGTERM)
        consumer.communicate(timeout=60)
    crash_harness.count(data, report)
    report.final_lag = 0
    entry = record(
        "Kafka broker down 8 s and back", injected="mock broker set down/up mid-run",
        invariants={"producer retried to success": producer_ok,
                    "consumer never exited": survived_outage and consumer.returncode == 0,
                    "no acknowledged event lost": report.missing == 0,
                    "each event persisted once": report.ok},
        events=events, lost=report.missing,
    )
    assert entry.held, report.line()


def _start_dynamodb(port: int, db_path: Path, log: Path) -> subprocess.Popen[bytes]:
    home = find_dynamodb_local()
    java = shutil.which("java")
    assert java is not None
    proc = subprocess.Popen(
        [java, f"-Djava.library.path={home / 'DynamoDBLocal_lib'}", "-jar", str(home / "DynamoDBLocal.jar"),
         "-dbPath", str(db_path), "-sharedDb", "-disableTelemetry", "-port", str(port)],
        cwd=home, env=server_env(), stdin=subprocess.DEVNULL, stdout=log.open("ab"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120  # a JVM start under load (4 engineers on 2 cores) can take a minute
    while time.monotonic() < deadline and proc.poll() is None:
        if _dynamodb_answers(f"http://127.0.0.1:{port}"):
            return proc
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"DynamoDB Local did not start: {log.read_text()[-2000:]}")


_STALL_S = 90.0  # no commit for this long after the restart: the consumer is stuck, not slow


@pytest.mark.dynamodb
@pytest.mark.slow
def test_dynamodb_local_killed_and_restarted_mid_run(tmp_path: Path) -> None:
    """DynamoDB Local (on disk) is killed with SIGKILL while the consumer writes to it and restarted
    3 s later on the same port: the consumer retries the batch in hand and carries on; the DynamoDB
    Store ends equal, table by table, to a clean SQLite run over the same stream.

    Why this was xfail (diagnosed in notes/f13.md): DynamoDB Local with ``-dbPath`` commits every item
    to its SQLite file with an fsync, ~50-90 items/s on this shared disk (in memory: thousands), so the
    12,000 events (~15,600 items) needed 3-4 minutes and the test's fixed 180 s wait ran out while the
    consumer was still writing at that pace, before and after the restart alike. No row was lost and no
    table stopped. The wait is now "until caught up, unless nothing was committed for ``_STALL_S``" and
    the stream is smaller, so the test measures being stuck, not the disk."""
    from notify_core.store.dynamodb import DynamoStore

    events = 4_000
    log_path = tmp_path / "stream" / "log.sqlite"
    log_path.parent.mkdir()
    db_dir = tmp_path / "ddb"
    db_dir.mkdir()
    port = free_port()
    server = _start_dynamodb(port, db_dir, tmp_path / "ddb.log")
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "local")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "local")
    store = DynamoStore(region="us-east-1", endpoint_url=f"http://127.0.0.1:{port}", table_prefix="faults_")
    for name in (*EVENT_TABLES, tables.STREAM_POSITIONS):
        store.table(name)  # create the tables before the outage
    log = LocalLog(log_path)
    producer = crash_harness.produce(log_path, events, 2000)
    consumer = EventConsumer(stream=log, store=store, landing=None, max_batch=500, poll_timeout=0.1,
                             clock=SYSTEM_CLOCK)
    failure: list[BaseException] = []
    totals: list[Any] = []
    stop = threading.Event()

    def run() -> None:
        try:
            totals.append(consumer.run(stop=stop))
        except BaseException as exc:  # noqa: BLE001 - recorded and asserted below
            failure.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    try:
        time.sleep(random.Random(3).uniform(2.0, 3.0))
        server.kill()  # SIGKILL mid-write
        server.wait()
        time.sleep(3)
        server = _start_dynamodb(port, db_dir, tmp_path / "ddb.log")
        restarted_at = time.monotonic()
        assert producer.wait(timeout=120) == 0
        committed, progress_at, caught_up_s = -1, time.monotonic(), None
        while time.monotonic() - progress_at < _STALL_S and thread.is_alive():
            now_committed = sum(log.committed("notify-event-consumer", t) for t in (PURCHASE_HISTORY, CLICKSTREAM))
            if now_committed >= events:
                caught_up_s = round(time.monotonic() - restarted_at, 1)
                break
            if now_committed > committed:
                committed, progress_at = now_committed, time.monotonic()
            time.sleep(0.5)
        survived = thread.is_alive()
    finally:
        stop.set()
        thread.join(30)
        consumer.close()
    ends = {t: (log.end_offsets(t), log.committed("notify-event-consumer", t)) for t in (PURCHASE_HISTORY, CLICKSTREAM)}
    clean_store = SqliteStore(tmp_path / "clean.sqlite")
    clean = EventConsumer(stream=log, store=clean_store, landing=None, group="clean", max_batch=5000,
                          clock=SYSTEM_CLOCK)
    clean.run(stop=threading.Event(), idle_exit=1.0)
    clean.close()
    expected = table_digests(clean_store, EVENT_TABLES)
    got = table_digests(store, EVENT_TABLES)
    counts: dict[str, Any] = {f"{name}_rows": sum(1 for _ in store.table(name).scan()) for name in EVENT_TABLES}
    clean_store.close()
    log.close()
    server.kill()
    server.wait()
    entry = record(
        "DynamoDB Local killed and restarted", injected="SIGKILL of the Store server, back 3 s later",
        invariants={"consumer never exited": survived and not failure,
                    f"consumer caught up (never {_STALL_S:.0f} s without a commit)": caught_up_s is not None,
                    "no acknowledged event lost": counts["events_rows"] + counts["user_events_rows"] == events,
                    "Store equals a clean run (per-table digest)": got == expected},
        events=events, caught_up_after_restart_s=caught_up_s, **counts,
    )
    assert entry.held, (failure, totals, counts, ends, got, expected)

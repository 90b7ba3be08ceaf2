"""Kill -9 a consumer subprocess at random points while events flow; then count every Store row.

Used by the crash tests (small in the default suite, 1M events under ``-m slow``). Events carry ids
``e<i>``; every 10th is an order of two lines, the rest are clicks, so the expected rows are known:
``events`` (order ledger) + ``user_events`` = N distinct ids, ``purchases`` = 2 x orders. Every other
batch of 500 carries capture's validated mark, so kills land on both the trusted and the models' path.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GROUP = "notify-event-consumer"

PRODUCER = r"""
import sys, time
from notify_core.events.models import VALIDATED_HEADERS
from notify_core.stream.port import Message
path, total, rate = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
first = int(sys.argv[4]) if len(sys.argv) > 4 else 0  # event ids e<first>... (a second producer's go on)
if path.startswith("kafka:"):  # a Kafka bootstrap address instead of a local log file
    from notify_core.stream.kafka import KafkaStream
    log = KafkaStream(bootstrap_servers=path[len("kafka:"):], delivery_timeout=30.0)  # rides out a broker outage
else:
    from notify_core.stream.local_log import LocalLog
    log = LocalLog(path)
start = time.monotonic()
for lo in range(first, first + total, 500):
    batch = []
    marked = VALIDATED_HEADERS if lo // 500 % 2 else ()  # every other batch takes the trusted path
    for i in range(lo, min(lo + 500, first + total)):
        user = f"u{i % 997}"
        ts = f"2024-03-{1 + i // 86400 % 28:02d}T{i // 3600 % 24:02d}:{i // 60 % 60:02d}:{i % 60:02d}Z"
        if i % 10 == 0:
            value = ('{"event_id":"e%d","type":"order","user_id":"%s","ts":"%s","order_id":"o%d","items":'
                     '[{"product_id":"p1","quantity":1,"unit_price":2.5},{"product_id":"p%d","quantity":2,'
                     '"unit_price":1.0}]}' % (i, user, ts, i, i % 7 + 2))
            batch.append(Message("purchase_history", user.encode(), value.encode(), marked))
        else:
            value = '{"event_id":"e%d","type":"click","user_id":"%s","ts":"%s","campaign_id":"c%d"}' % (
                i, user, ts, i % 50)
            batch.append(Message("notify_clickstream", user.encode(), value.encode(), marked))
    log.produce_batch(batch)
    if rate > 0:
        ahead = (lo - first + 500) / rate - (time.monotonic() - start)
        if ahead > 0:
            time.sleep(ahead)
log.close()
"""


def produce(target: str | Path, events: int, rate: float, *, first: int = 0) -> subprocess.Popen[bytes]:
    """Events ``e<first>`` ... ``e<first + events - 1>`` at ``rate`` a second (0: flat out), in a producer
    process; ``target`` is a local log file or ``kafka:<bootstrap>``."""
    return subprocess.Popen([sys.executable, "-c", PRODUCER, str(target), str(events), str(rate), str(first)],
                            cwd=ROOT)


@dataclass
class CrashReport:
    events: int
    kills: int
    kill_points: list[int] = field(default_factory=list)  # committed records at each kill
    events_rows: int = 0
    distinct_event_ids: int = 0
    missing: int = 0
    unexpected: int = 0
    user_event_rows: int = 0
    purchase_rows: int = 0
    expected_user_event_rows: int = 0
    expected_purchase_rows: int = 0
    final_lag: int = -1
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return (
            self.events_rows == self.distinct_event_ids == self.events
            and self.missing == 0
            and self.unexpected == 0
            and self.user_event_rows == self.expected_user_event_rows
            and self.purchase_rows == self.expected_purchase_rows
            and self.final_lag == 0
        )

    def line(self) -> str:
        return json.dumps({**asdict(self), "ok": self.ok})


def _committed(log_path: Path) -> int:
    try:
        with sqlite3.connect(f"file:{log_path}?mode=ro", uri=True, timeout=30) as conn:
            row = conn.execute("SELECT COALESCE(SUM(position), 0) FROM positions WHERE grp=?", (GROUP,)).fetchone()
            return int(row[0])
    except sqlite3.Error:
        return 0


def _consumer(data_dir: Path, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "notify_cli.stream_commands", "consume", "--data-dir", str(data_dir), *extra],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "NOTIFY_ENV": "local"},
    )


def run(
    data_dir: Path, *, events: int, kills: int, seed: int, rate: float, kill_window: tuple[float, float],
    consume_args: tuple[str, ...] = (),
) -> CrashReport:
    """Produce ``events`` (paced at ``rate``/s, 0 = flat out) while killing consumers ``kills`` times."""
    started = time.monotonic()
    log_path = data_dir / "stream" / "log.sqlite"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    report = CrashReport(events=events, kills=kills)
    producer = produce(log_path, events, rate)
    try:
        for _ in range(kills):
            consumer = _consumer(data_dir, *consume_args)
            time.sleep(rng.uniform(*kill_window))
            consumer.kill()  # SIGKILL: no batch finishing, no commit, no cleanup
            consumer.wait()
            report.kill_points.append(_committed(log_path))
        if producer.wait(timeout=1800) != 0:
            raise RuntimeError("producer failed")
        final = _consumer(data_dir, "--idle-exit", "3", *consume_args)
        if final.wait(timeout=1800) != 0:
            raise RuntimeError("final consumer failed")
    finally:
        for proc in (producer,):
            if proc.poll() is None:
                proc.kill()
    count(data_dir, report)
    with sqlite3.connect(log_path) as conn:
        ids = conn.execute("SELECT id FROM topics WHERE name IN ('purchase_history', 'notify_clickstream')").fetchall()
        end = sum(conn.execute(f"SELECT COALESCE(MAX(offset) + 1, 0) FROM log_{i}").fetchone()[0] for (i,) in ids)
    report.final_lag = end - _committed(log_path)
    report.seconds = round(time.monotonic() - started, 1)
    return report


def count(data_dir: Path, report: CrashReport) -> None:
    orders = len(range(0, report.events, 10))
    report.expected_purchase_rows = 2 * orders
    report.expected_user_event_rows = report.events - orders
    with sqlite3.connect(data_dir / "store.sqlite") as conn:
        # an event is persisted as its user_events row (key <ts>#<event_id>) or, an order, its ledger row
        keys = [row[0] for row in conn.execute("SELECT pk FROM events")]
        keys += [row[0].split("#", 1)[1] for row in conn.execute("SELECT sk FROM user_events")]
        report.events_rows = len(keys)
        ids = set(keys)
        report.distinct_event_ids = len(ids)
        expected = {f"e{i}" for i in range(report.events)}
        report.missing = len(expected - ids)
        report.unexpected = len(ids - expected)
        report.user_event_rows = conn.execute("SELECT COUNT(*) FROM user_events").fetchone()[0]
        report.purchase_rows = conn.execute("SELECT COUNT(*) FROM purchases").fetchone()[0]

"""Crash test harness: a `notify worker` subprocess delivering N notifications to the outbox, killed with
SIGKILL at random points K times and restarted each time; counts delivered, lost and duplicated at the sink.

Run directly for the full-size numbers: ``python -m tests.delivery.crash_harness --n 100000 --kills 5``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from notify_core.delivery.channels import read_outbox
from notify_core.delivery.synthetic import seed_due
from notify_core.delivery.worker import execution_report
from notify_core.store import tables
from notify_core.store.sqlite import SqliteStore

REPO = Path(__file__).resolve().parents[2]


@dataclass
class CrashReport:
    notifications: int
    kills: int
    delivered: int  # distinct notification ids at the sink
    lost: int
    duplicates: int  # extra receipts of an id already received
    duplicate_rate: float
    store_statuses: dict[str, int]
    seconds: float


def _start(data_dir: Path, outbox: Path, *, lease_s: float, concurrency: int,
           idle_exit: float | None = None) -> subprocess.Popen[bytes]:
    idle = lease_s + 3 if idle_exit is None else idle_exit
    cmd = [sys.executable, "-m", "notify_cli.delivery_commands", "--data-dir", str(data_dir), "--outbox", str(outbox),
           "--lease-s", str(lease_s), "--concurrency", str(concurrency), "--idle-exit", str(idle)]
    return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "NOTIFY_DELIVERY_CHANNEL": "outbox"})


def run_crash_test(data_dir: Path, *, n: int, kills: int, seed: int = 7, lease_s: float = 2.0,
                   concurrency: int = 4, timeout_s: float = 900.0) -> CrashReport:
    rng = random.Random(seed)
    store = SqliteStore(data_dir / "store.sqlite")
    start = datetime.fromtimestamp(int(time.time()) - 2, UTC)
    items = seed_due(store, n=n, start=start, campaigns=20)
    store.close()
    outbox = data_dir / "outbox.jsonl"
    points = sorted(rng.uniform(0.05, 0.95) for _ in range(kills))  # fractions of n delivered when killed
    began = time.perf_counter()
    deadline = began + timeout_s
    for point in points:
        proc = _start(data_dir, outbox, lease_s=lease_s, concurrency=concurrency)
        target = point * n
        while time.perf_counter() < deadline:
            size = outbox.stat().st_size if outbox.exists() else 0
            lines = size / 420  # ~bytes per outbox line; a trigger point, not a count
            if lines >= target or proc.poll() is not None:
                break
            time.sleep(0.005)
        proc.kill()  # SIGKILL: no cleanup, no flush of anything in flight
        proc.wait()
    proc = _start(data_dir, outbox, lease_s=lease_s, concurrency=concurrency)
    proc.communicate(timeout=max(1.0, deadline - time.perf_counter()))
    seconds = time.perf_counter() - began
    keys = Counter(r["idempotency_key"] for r in read_outbox(outbox))
    ids = {i["notification_id"] for i in items}
    store = SqliteStore(data_dir / "store.sqlite")
    statuses = Counter(str(i["status"]) for i in store.table(tables.SCHEDULES).scan())
    store.close()
    delivered = len(ids & set(keys))
    duplicates = sum(c - 1 for c in keys.values())
    return CrashReport(n, kills, delivered, len(ids) - delivered, duplicates, duplicates / n, dict(statuses), seconds)


@dataclass
class TakeoverReport:
    notifications: int
    delivered: int  # distinct notification ids at the two sinks
    lost: int
    duplicates: int
    delivered_at_kill: int
    held_by_dead: int  # claimed by the killed worker, then re-claimed and sent by the survivor
    kill_to_all_sent_s: float  # kill -9 of one worker -> every notification delivered by the survivor
    store_statuses: dict[str, int]
    stuck: int


def _outbox_ids(path: Path) -> Counter[str]:
    return Counter(r["idempotency_key"] for r in read_outbox(path)) if path.exists() else Counter()


def run_two_worker_takeover(data_dir: Path, *, n: int, kill_at: float = 0.3, lease_s: float = 30.0,
                            concurrency: int = 4, timeout_s: float = 300.0) -> TakeoverReport:
    """Two `notify worker` processes share ``n`` due notifications; one is killed (-9) once ``kill_at`` of
    them were delivered. The lease is long (30 s, the default): only the heartbeat can make the survivor
    take the dead worker's claims over within seconds."""
    store = SqliteStore(data_dir / "store.sqlite")
    start = datetime.fromtimestamp(int(time.time()) - 2, UTC)
    items = seed_due(store, n=n, start=start, campaigns=20)
    store.close()
    boxes = [data_dir / "outbox-a.jsonl", data_dir / "outbox-b.jsonl"]
    victim, survivor = (_start(data_dir, box, lease_s=lease_s, concurrency=concurrency, idle_exit=6.0)
                        for box in boxes)
    deadline = time.perf_counter() + timeout_s
    try:
        while time.perf_counter() < deadline:
            sizes = sum(b.stat().st_size if b.exists() else 0 for b in boxes)
            if sizes / 420 >= kill_at * n or victim.poll() is not None:
                break
            time.sleep(0.005)
        victim.kill()
        killed = time.perf_counter()
        victim.wait()
        at_kill = len(set(_outbox_ids(boxes[0])) | set(_outbox_ids(boxes[1])))
        all_sent = math.inf
        while time.perf_counter() < deadline and survivor.poll() is None:
            if len(set(_outbox_ids(boxes[0])) | set(_outbox_ids(boxes[1]))) >= n:
                all_sent = time.perf_counter()
                break
            time.sleep(0.05)
        survivor.send_signal(signal.SIGTERM)
        out = survivor.communicate(timeout=60)[0].decode().strip().splitlines()
        totals = json.loads(out[-1]) if out else {}
    finally:
        for proc in (victim, survivor):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    keys = _outbox_ids(boxes[0]) + _outbox_ids(boxes[1])
    ids = {i["notification_id"] for i in items}
    store = SqliteStore(data_dir / "store.sqlite")
    final = list(store.table(tables.SCHEDULES).scan())
    report = execution_report(store, start=start.timestamp(), end=start.timestamp(), now=time.time())
    store.close()
    statuses = Counter(str(i["status"]) for i in final)
    held = int(totals.get("reclaimed", 0))
    delivered = len(ids & set(keys))
    return TakeoverReport(n, delivered, len(ids) - delivered, sum(c - 1 for c in keys.values()), at_kill, held,
                          round(all_sent - killed, 2), dict(statuses), report["stuck"])


if __name__ == "__main__":
    import tempfile

    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        print(json.dumps(asdict(run_crash_test(Path(tmp), n=args.n, kills=args.kills, seed=args.seed)), indent=2))

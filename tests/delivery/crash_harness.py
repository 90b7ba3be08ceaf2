"""Crash test harness: a `notify worker` subprocess delivering N notifications to the outbox, killed with
SIGKILL at random points K times and restarted each time; counts delivered, lost and duplicated at the sink.

Run directly for the full-size numbers: ``python -m tests.delivery.crash_harness --n 100000 --kills 5``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from notify_core.delivery.channels import read_outbox
from notify_core.delivery.synthetic import seed_due
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


def _start(data_dir: Path, outbox: Path, *, lease_s: float, concurrency: int) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "notify_cli.delivery_commands", "--data-dir", str(data_dir), "--outbox", str(outbox),
           "--lease-s", str(lease_s), "--concurrency", str(concurrency), "--idle-exit", str(lease_s + 3)]
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


if __name__ == "__main__":
    import tempfile

    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        print(json.dumps(asdict(run_crash_test(Path(tmp), n=args.n, kills=args.kills, seed=args.seed)), indent=2))

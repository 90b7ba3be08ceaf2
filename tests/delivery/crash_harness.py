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

from notify_core.delivery.channels import ALREADY_IN_OUTBOX, read_outbox
from notify_core.delivery.sink import read_receipts
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
    # sends a restarted worker found in the outbox already (its predecessor's, killed before recording them)
    # and answered without writing again: the duplicates the outbox's dedupe took away
    answered_from_outbox: int = 0


WEBHOOK_SECRET = "crash-harness-secret"
_RECEIPT_BYTES = 90  # ~bytes per sink receipt line; a trigger point, not a count


def _start(data_dir: Path, outbox: Path, *, lease_s: float, concurrency: int,
           idle_exit: float | None = None, webhook_url: str | None = None) -> subprocess.Popen[bytes]:
    """A `notify worker`: to the outbox, or with ``webhook_url`` the webhook channel (the async senders)."""
    idle = lease_s + 3 if idle_exit is None else idle_exit
    cmd = [sys.executable, "-m", "notify_cli.delivery_commands", "--data-dir", str(data_dir), "--outbox", str(outbox),
           "--lease-s", str(lease_s), "--concurrency", str(concurrency), "--idle-exit", str(idle)]
    env = {**os.environ, "NOTIFY_DELIVERY_CHANNEL": "outbox"}
    if webhook_url is not None:
        env.update(NOTIFY_DELIVERY_CHANNEL="webhook", NOTIFY_WEBHOOK_URL=webhook_url,
                   NOTIFY_WEBHOOK_SECRET=WEBHOOK_SECRET)
    return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)


def _start_sink(receipts: Path) -> tuple[subprocess.Popen[str], str]:
    """The loopback webhook receiver (one for the whole run: it outlives every killed worker)."""
    sink = subprocess.Popen([sys.executable, "-m", "notify_core.delivery.sink", "--out", str(receipts),
                             "--secret", WEBHOOK_SECRET], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert sink.stdout is not None
    port = int(json.loads(sink.stdout.readline())["port"])
    return sink, f"http://127.0.0.1:{port}/hook"


def _stop_sink(sink: subprocess.Popen[str]) -> None:
    sink.send_signal(signal.SIGTERM)  # it writes the receipts it still holds, then exits
    try:
        sink.wait(timeout=30)
    except subprocess.TimeoutExpired:
        sink.kill()
        sink.wait()


def run_crash_test(data_dir: Path, *, n: int, kills: int, seed: int = 7, lease_s: float = 2.0,
                   concurrency: int = 4, timeout_s: float = 900.0, channel: str = "outbox") -> CrashReport:
    """``channel="webhook"``: the workers send to a loopback sink (the webhook channel, so the async
    senders of ``run_forever``), which counts what it received with a 2xx; else the outbox file does."""
    rng = random.Random(seed)
    data_dir.mkdir(parents=True, exist_ok=True)
    store = SqliteStore(data_dir / "store.sqlite")
    start = datetime.fromtimestamp(int(time.time()) - 2, UTC)
    items = seed_due(store, n=n, start=start, campaigns=20)
    store.close()
    outbox = data_dir / "outbox.jsonl"
    receipts = data_dir / "receipts.jsonl"
    sink, url = _start_sink(receipts) if channel == "webhook" else (None, None)
    written, per_line = (receipts, _RECEIPT_BYTES) if sink is not None else (outbox, 420)
    points = sorted(rng.uniform(0.05, 0.95) for _ in range(kills))  # fractions of n delivered when killed
    began = time.perf_counter()
    deadline = began + timeout_s
    try:
        for point in points:
            proc = _start(data_dir, outbox, lease_s=lease_s, concurrency=concurrency, webhook_url=url)
            target = point * n
            while time.perf_counter() < deadline:
                size = written.stat().st_size if written.exists() else 0
                lines = size / per_line  # ~bytes per line; a trigger point, not a count
                if lines >= target or proc.poll() is not None:
                    break
                time.sleep(0.005)
            proc.kill()  # SIGKILL: no cleanup, no flush of anything in flight
            proc.wait()
        proc = _start(data_dir, outbox, lease_s=lease_s, concurrency=concurrency, webhook_url=url)
        proc.communicate(timeout=max(1.0, deadline - time.perf_counter()))
    finally:
        if sink is not None:
            _stop_sink(sink)
    seconds = time.perf_counter() - began
    if sink is not None:
        keys = Counter(r["key"] for r in read_receipts(receipts) if r["status"] == 200)
    else:
        keys = Counter(r["idempotency_key"] for r in read_outbox(outbox))
    ids = {i["notification_id"] for i in items}
    store = SqliteStore(data_dir / "store.sqlite")
    schedules = list(store.table(tables.SCHEDULES).scan())
    store.close()
    statuses = Counter(str(i["status"]) for i in schedules)
    answered = sum(1 for i in schedules if i.get("detail") == ALREADY_IN_OUTBOX)
    delivered = len(ids & set(keys))
    duplicates = sum(c - 1 for c in keys.values())
    return CrashReport(n, kills, delivered, len(ids) - delivered, duplicates, duplicates / n, dict(statuses), seconds,
                       answered)


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
    answered_from_outbox: int = 0  # the victim's sends the survivor found in a shared outbox, not written again


def _outbox_ids(path: Path) -> Counter[str]:
    return Counter(r["idempotency_key"] for r in read_outbox(path)) if path.exists() else Counter()


def run_two_worker_takeover(data_dir: Path, *, n: int, kill_at: float = 0.3, lease_s: float = 30.0,
                            concurrency: int = 4, timeout_s: float = 300.0,
                            shared_outbox: bool = False) -> TakeoverReport:
    """Two `notify worker` processes share ``n`` due notifications; one is killed (-9) once ``kill_at`` of
    them were delivered. The lease is long (30 s, the default): only the heartbeat can make the survivor
    take the dead worker's claims over within seconds. Each has its own outbox, or with ``shared_outbox``
    both append to one."""
    store = SqliteStore(data_dir / "store.sqlite")
    start = datetime.fromtimestamp(int(time.time()) - 2, UTC)
    items = seed_due(store, n=n, start=start, campaigns=20)
    store.close()
    names = ("outbox.jsonl", "outbox.jsonl") if shared_outbox else ("outbox-a.jsonl", "outbox-b.jsonl")
    workers = [data_dir / name for name in names]
    boxes = sorted(set(workers))
    victim, survivor = (_start(data_dir, box, lease_s=lease_s, concurrency=concurrency, idle_exit=6.0)
                        for box in workers)
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
        at_kill = len(set().union(*map(_outbox_ids, boxes)))
        all_sent = math.inf
        while time.perf_counter() < deadline and survivor.poll() is None:
            if len(set().union(*map(_outbox_ids, boxes))) >= n:
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
    keys = sum(map(_outbox_ids, boxes), Counter[str]())
    ids = {i["notification_id"] for i in items}
    store = SqliteStore(data_dir / "store.sqlite")
    final = list(store.table(tables.SCHEDULES).scan())
    report = execution_report(store, start=start.timestamp(), end=start.timestamp(), now=time.time())
    store.close()
    statuses = Counter(str(i["status"]) for i in final)
    held = int(totals.get("reclaimed", 0))
    delivered = len(ids & set(keys))
    answered = sum(1 for i in final if i.get("detail") == ALREADY_IN_OUTBOX)
    return TakeoverReport(n, delivered, len(ids) - delivered, sum(c - 1 for c in keys.values()), at_kill, held,
                          round(all_sent - killed, 2), dict(statuses), report["stuck"], answered)


if __name__ == "__main__":
    import tempfile

    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--channel", choices=("outbox", "webhook"), default="outbox")
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        print(json.dumps(asdict(run_crash_test(Path(tmp), n=args.n, kills=args.kills, seed=args.seed,
                                               channel=args.channel, concurrency=args.concurrency)), indent=2))

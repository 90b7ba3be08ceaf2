"""The disaster-recovery drill: lose the data directory while events flow and the worker delivers, then
restore, replay and measure RPO and RTO. Used by ``tests/backup/test_dr_drill.py`` (a small sample) and
``bench/bench_dr.py`` (the demo-size Store).

Real processes, as an operator runs them: ``notify backup`` (Litestream to a folder), ``notify serve``,
``notify consume`` and ``notify worker``, plus a client that POSTs click events and records each event
the API acknowledged (202 with status ``accepted``). The disaster is ``kill -9`` of all four and
``rm -rf`` of the data directory. Recovery is ``notify restore``, then the same three services again.

* RPO, events: acknowledged events missing from the Store once the consumer has caught up. With the
  stream retained (the log on its own volume here; Kafka in production) it should be 0: the Store's
  backup carries the consumer's position and the consumer replays the rest. With the log inside the
  lost directory, its replica is at most Litestream's lag behind, and those events are gone.
* RPO, state: rows of every Store table present just before the disaster and absent after restore +
  replay, and deliveries the worker made but the restored Store does not know of (they are re-sent:
  duplicates at the receiver, which drops them by Idempotency-Key).
* RTO: from the start of the restore until the API acknowledges an event again, and until the worker
  delivers a notification again.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx

from notify_core.delivery.synthetic import seed_due
from notify_core.security.crypto import MASTER_FILE
from notify_core.store.sqlite import SqliteStore
from tests.servers import free_port, kill_with_children, serve_admin_key

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class DrillReport:
    scenario: str
    seed_rows: int
    acked: int = 0
    persisted_acked: int = 0
    lost_acked: int = 0  # RPO in events
    lost_window_s: float = 0.0  # RPO in time: from the oldest lost acknowledgement to the disaster
    table_rows_lost: dict[str, int] = field(default_factory=dict)  # rows present before, absent after
    restore_s: float = 0.0
    rto_api_s: float = 0.0
    rto_worker_s: float = 0.0
    deliveries_before: int = 0
    deliveries_total: int = 0
    duplicate_deliveries: int = 0  # re-sends at the receiver (dropped there by Idempotency-Key)
    backup_bytes: int = 0
    store_bytes: int = 0
    initial_backup_s: float = 0.0  # ``notify backup --once`` before the services start (prime_backup)

    def line(self) -> str:
        return json.dumps(asdict(self))


class Client:
    """POSTs batches of click events at a steady rate; remembers which ids were acknowledged, and when."""

    def __init__(self, base_url: str, *, rate: float, key: str, batch: int = 20) -> None:
        self.base_url = base_url
        self.key = key
        self.rate = rate
        self.batch = batch
        self.acked: dict[str, float] = {}
        self.errors = 0
        self._seq = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        with httpx.Client(timeout=5, headers={"x-api-key": self.key}) as http:
            while not self._stop.is_set():
                started = time.monotonic()
                events = []
                now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
                for _ in range(self.batch):
                    events.append({"event_id": f"dr{self._seq}", "type": "click", "user_id": f"u{self._seq % 97}",
                                   "ts": now, "campaign_id": f"c{self._seq % 11}"})
                    self._seq += 1
                try:
                    reply = http.post(f"{self.base_url}/v1/events", json=events)
                    if reply.status_code == 202:
                        at = time.monotonic()
                        for result in reply.json()["results"]:
                            if result["status"] == "accepted":
                                self.acked[result["event_id"]] = at
                    else:
                        self.errors += 1
                except httpx.HTTPError:
                    self.errors += 1
                self._stop.wait(max(self.batch / self.rate - (time.monotonic() - started), 0.0))


class Services:
    """``notify serve`` / ``consume`` / ``worker`` (and ``backup``) as subprocesses with one environment."""

    def __init__(self, root: Path, env: dict[str, str], port: int) -> None:
        self.root = root
        self.env = env
        self.port = port
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, *args: str) -> None:
        err = (self.root / f"{name}.err").open("ab")
        self.procs[name] = subprocess.Popen([sys.executable, *args], cwd=ROOT, env=self.env,
                                            stdout=subprocess.DEVNULL, stderr=err)

    def start_all(self, *, backup: bool) -> None:
        if backup:
            self.start("backup", "-m", "notify_cli.backup_commands", "backup", "--interval", "2")
        self.start("gateway", "-m", "notify_cli.stream_commands", "serve", "--port", str(self.port))
        self.start("consumer", "-m", "notify_cli.stream_commands", "consume", "--max-batch", "2000")
        self.start("worker", "-m", "notify_cli.delivery_commands", "--concurrency", "4")

    def kill_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                kill_with_children(proc)
            proc.wait()
        self.procs.clear()

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()


def _store_keys(path: Path) -> dict[str, set[tuple[str, str]]]:
    """Every (pk, sk) of every table (``stream_positions`` and the delivery bookkeeping move on purpose)."""
    moving = {"stream_positions", "delivery_cursor"}
    out: dict[str, set[tuple[str, str]]] = {}
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=60) as conn:
        names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for name in names:
            columns = {r[1] for r in conn.execute(f"PRAGMA table_info({name})")}
            if {"pk", "sk"} <= columns and name not in moving:
                out[name] = set(conn.execute(f"SELECT pk, sk FROM {name}").fetchall())
    return out


def _persisted_ids(path: Path) -> set[str]:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=60) as conn:
        return {sk.split("#", 1)[1] for (sk,) in conn.execute("SELECT sk FROM user_events")}


def _logged_ids(path: Path) -> set[str]:
    """The event ids the stream log holds (every topic), read-only beside the running consumer."""
    if not path.exists():
        return set()
    ids: set[str] = set()
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=60) as conn:
        for (topic_id,) in conn.execute("SELECT id FROM topics").fetchall():
            for (value,) in conn.execute(f"SELECT value FROM log_{int(topic_id)}"):
                try:
                    event = json.loads(value)
                except ValueError:
                    continue
                if isinstance(event, dict) and isinstance(event.get("event_id"), str):
                    ids.add(event["event_id"])
    return ids


def _outbox_keys(path: Path) -> list[str]:
    if not path.exists():
        return []
    keys = []
    for line in path.read_text().splitlines():
        try:
            keys.append(json.loads(line)["idempotency_key"])
        except (ValueError, KeyError):
            continue
    return keys


def run_drill(
    root: Path, *, retained: bool, seed_dir: Path | None = None, rate: float = 500.0, run_s: float = 8.0,
    after_s: float = 4.0, notifications: int = 300, catch_up_s: float = 120.0, prime_backup: bool = False,
) -> DrillReport:
    """One drill (see the module doc). ``prime_backup`` runs ``notify backup --once`` before the services
    start, as a backup that has been running for a while would have: with a large Store (1M users, over a
    GB) the continuous backup's first snapshot would otherwise still be uploading at the disaster."""
    data, backup, outbox = root / "data", root / "backup", root / "outbox.jsonl"
    log_path = (root / "stream" / "log.sqlite") if retained else (data / "stream" / "log.sqlite")
    # The master key lives off the data directory's disk, as the README's runbook says: the backup holds the
    # keys the data needs sealed by it, and the disaster takes the disk (notify_core/backup/keys.py).
    master = root / "keys" / MASTER_FILE
    master.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if seed_dir is not None:  # e.g. the demo's data directory: Store, lake, landing, artefacts
        shutil.copytree(seed_dir, data, ignore=shutil.ignore_patterns("stream", "dagster", "*.lock"))
        if (data / "secrets" / MASTER_FILE).exists():  # its master moves off the disk with the keys it wraps
            shutil.move(data / "secrets" / MASTER_FILE, master)
    data.mkdir(parents=True, exist_ok=True)
    store = SqliteStore(data / "store.sqlite")
    # notifications due from now on, one every ~0.25 s, so the worker delivers before and after the disaster
    seed_due(store, n=notifications, start=datetime.fromtimestamp(int(time.time()) + 2, UTC),
             spread_s=notifications * 0.25)
    store.close()
    seed_rows = sum(len(keys) for keys in _store_keys(data / "store.sqlite").values())
    port = free_port()
    env = {**os.environ, "NOTIFY_ENV": "local", "NOTIFY_DATA_DIR": str(data), "NOTIFY_STREAM_LOG_PATH": str(log_path),
           "NOTIFY_BACKUP_URL": str(backup), "NOTIFY_DELIVERY_CHANNEL": "outbox", "NOTIFY_OUTBOX_PATH": str(outbox),
           # The API key pepper lives outside the data directory (as in aws, where it comes from a secret): the
           # disaster takes the disk, and the restored api_keys rows must still verify the client's key.
           "NOTIFY_API_KEY_PEPPER": secrets.token_hex(32), "NOTIFY_MASTER_KEY_FILE": str(master)}
    report = DrillReport(scenario="stream retained" if retained else "stream lost with the data directory",
                         seed_rows=seed_rows)
    services = Services(root, env, port)
    base = f"http://127.0.0.1:{port}"
    if prime_backup:
        started = time.monotonic()
        subprocess.run([sys.executable, "-m", "notify_cli.backup_commands", "backup", "--once"], cwd=ROOT, env=env,
                       capture_output=True, check=True, timeout=1800)
        report.initial_backup_s = round(time.monotonic() - started, 2)
    services.start_all(backup=True)
    key = _admin_key(data, timeout=60)  # the first start writes it; the client keeps it across the disaster
    _wait_api(base, key=key, timeout=60)
    client = Client(base, rate=rate, key=key)
    client.start()
    try:
        time.sleep(run_s)
        before = _store_keys(data / "store.sqlite")
        report.deliveries_before = len(_outbox_keys(outbox))
        disaster = time.monotonic()
        services.kill_all()  # the machine's disk is gone: nothing gets to finish or flush
        _remove_tree(data)
        report.backup_bytes = sum(p.stat().st_size for p in backup.rglob("*") if p.is_file())

        started = time.monotonic()
        restored = subprocess.run([sys.executable, "-m", "notify_cli.backup_commands", "restore"], cwd=ROOT, env=env,
                                  capture_output=True, text=True, timeout=600)
        if restored.returncode != 0:
            raise RuntimeError(f"restore failed: {restored.stderr[-2000:]}")
        report.restore_s = round(time.monotonic() - started, 2)
        delivered_at_restart = len(_outbox_keys(outbox))
        services.start_all(backup=True)
        report.rto_api_s = round(_wait_api(base, key=key, timeout=120) - started, 2)
        report.rto_worker_s = round(_wait_delivery(outbox, delivered_at_restart, timeout=120) - started, 2)
        time.sleep(after_s)
    finally:
        client.stop()
    try:
        acked = set(client.acked)
        deadline = time.monotonic() + catch_up_s
        persisted = _persisted_ids(data / "store.sqlite")
        # Caught up when every acknowledged event the stream still holds is persisted. With the stream lost
        # too, the events after its last replicated page are gone for good: waiting for them only ran the
        # deadline out (118 s of the drill's 138 s). The client has stopped, so the log no longer grows.
        held = acked & _logged_ids(log_path)
        while not held <= persisted and time.monotonic() < deadline:
            time.sleep(0.5)
            persisted = _persisted_ids(data / "store.sqlite")
        after = _store_keys(data / "store.sqlite")
    finally:
        services.stop_all()
    report.acked = len(acked)
    report.persisted_acked = len(acked & persisted)
    lost = acked - persisted
    report.lost_acked = len(lost)
    report.lost_window_s = round(max((disaster - client.acked[i] for i in lost), default=0.0), 3)
    report.table_rows_lost = {name: len(keys - after.get(name, set())) for name, keys in before.items()
                              if keys - after.get(name, set())}
    keys = _outbox_keys(outbox)
    report.deliveries_total = len(keys)
    report.duplicate_deliveries = sum(n - 1 for n in Counter(keys).values())
    report.store_bytes = (data / "store.sqlite").stat().st_size
    return report


def _admin_key(data: Path, *, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(FileNotFoundError):
            key = serve_admin_key(data)
            if key:
                return key
        time.sleep(0.1)
    raise RuntimeError(f"notify serve wrote no admin key under {data} within {timeout} s")


def _wait_api(base: str, *, key: str, timeout: float) -> float:
    """Until the API acknowledges an event (a probe click): the API answers."""
    deadline = time.monotonic() + timeout
    probe = 0
    while time.monotonic() < deadline:
        probe += 1
        body = [{"event_id": f"probe-{time.monotonic_ns()}-{probe}", "type": "click", "user_id": "probe",
                 "ts": datetime.now(UTC).isoformat().replace("+00:00", "Z"), "campaign_id": "c0"}]
        try:
            if httpx.post(f"{base}/v1/events", json=body, timeout=2, headers={"x-api-key": key}).status_code == 202:
                return time.monotonic()
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"the API at {base} did not answer within {timeout} s")


def _wait_delivery(outbox: Path, count: int, *, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(_outbox_keys(outbox)) > count:
            return time.monotonic()
        time.sleep(0.1)
    raise RuntimeError(f"the worker delivered nothing within {timeout} s of the restore")


def _remove_tree(path: Path) -> None:
    """``rm -rf``, tolerant of files that vanish meanwhile (a replicator still closing its temp files)."""
    for _ in range(100):
        shutil.rmtree(path, ignore_errors=True)
        if not path.exists():
            return
        time.sleep(0.05)
    raise RuntimeError(f"could not remove {path}")

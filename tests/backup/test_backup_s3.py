"""Backups to an S3-compatible bucket, for real: ``notify backup --to s3://...`` replicating to SeaweedFS
(tests/servers.py starts ``weed server -s3``), the data directory deleted, ``notify restore --from s3://...``.

The Store comes back equal to the original, table by table (per-table digest, every attribute), the lake
and the index artefacts byte for byte, the stream log from its own replica, and every acknowledged event
(produced to the log: the producer's call returned) is in the Store after the consumer catches up. The
fault version kills SeaweedFS with SIGKILL while the backup runs and events are written, and brings it
back on the same data folder: the backup carries on (Litestream retries, a failed file snapshot is
retried on the next tick) and the same invariants hold.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from notify_core.clock import SYSTEM_CLOCK
from notify_core.events.consumer import EventConsumer
from notify_core.security import audit
from notify_core.settings import load_settings
from notify_core.store import tables
from notify_core.store.sqlite import SqliteStore
from notify_core.stream.local_log import LocalLog
from tests.events import crash_harness
from tests.faults.invariants import table_digests
from tests.faults.record import record
from tests.servers import SeaweedS3, _s3_client, free_port, kill_with_children

ROOT = Path(__file__).resolve().parents[2]
BUCKET = "notify-backups"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local"}


@pytest.fixture
def own_seaweed() -> Iterator[SeaweedS3]:
    """A server of the fault test's own: it is killed and restarted, so not the session's ``s3_server``."""
    server = SeaweedS3.start(timeout=120)
    try:
        server.create_bucket(BUCKET)
        yield server
    finally:
        server.stop()
    assert not server.leftovers(), f"SeaweedFS left these behind: {server.leftovers()}"


def _env() -> dict[str, str]:
    return {**os.environ, "NOTIFY_ENV": "local", **CREDENTIALS}


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "notify_cli.backup_commands", *args], cwd=ROOT, text=True,
                          capture_output=True, timeout=300, env=_env())


def _files(data: Path) -> dict[str, str]:
    """sha256 of every file under the lake and the artefacts (what the file snapshots carry)."""
    return {p.relative_to(data).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for folder in ("lake", "artefacts") for p in sorted((data / folder).rglob("*")) if p.is_file()}


def _seed(data: Path) -> None:
    """A Store with profile and campaign rows, a lake and a campaign index (bytes the backup must keep)."""
    store = SqliteStore(data / "store.sqlite")
    store.table(tables.USERS).batch_put({"pk": f"u{i}", "sk": tables.PROFILE_SK, "country": "FR", "n": i * 1.5}
                                        for i in range(2_000))
    store.table(tables.CAMPAIGNS).batch_put({"pk": f"c{i}", "sk": "meta", "title": f"campaign {i}"}
                                            for i in range(50))
    store.close()
    for month in ("2011-01", "2011-02"):
        path = data / "lake" / "purchases" / f"{month}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(300_000))
    index = data / "artefacts" / "campaign_index" / "v1" / "index.faiss"
    index.parent.mkdir(parents=True)
    index.write_bytes(os.urandom(500_000))


def _consume(log: LocalLog, store: SqliteStore) -> None:
    consumer = EventConsumer(stream=log, store=store, landing=None, max_batch=1000, poll_timeout=0.05,
                             clock=SYSTEM_CLOCK)
    consumer.run(stop=threading.Event(), idle_exit=1.0)
    consumer.close()


def _event_ids(store: SqliteStore) -> set[str]:
    ids = {row["event_id"] for row in store.table(tables.USER_EVENTS).scan()}
    return ids | {row["pk"] for row in store.table(tables.EVENTS).scan()}


def _wait_shipped(server: SeaweedS3, bucket: str, prefix: str, *, since: datetime, quiet_s: float = 2.0,
                  timeout: float = 120.0) -> None:
    """Until the Store's and the stream log's replicas hold a level-0 LTX file written at or after ``since``
    (S3 times are whole seconds) and no new one for ``quiet_s``: Litestream has caught up."""
    client: Any = _s3_client(server.endpoint)
    deadline = time.monotonic() + timeout
    seen, quiet_from = -1, time.monotonic()
    while time.monotonic() < deadline:
        keys = [(obj["Key"].removeprefix(f"{prefix}/").split("/"), obj["LastModified"]) for page in
                client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{prefix}/")
                for obj in page.get("Contents", [])]
        ltx = [(parts[0], modified) for parts, modified in keys  # <db>/0000/<txid range>.ltx: level 0
               if len(parts) == 3 and parts[1] == "0000" and parts[2].endswith(".ltx")]
        if len(ltx) != seen:
            seen, quiet_from = len(ltx), time.monotonic()
        fresh = {db for db, modified in ltx if modified >= since}
        if {"store", "stream"} <= fresh and time.monotonic() - quiet_from >= quiet_s:
            return
        time.sleep(0.2)
    raise AssertionError(f"Litestream did not ship the last writes to {bucket}/{prefix} within {timeout:.0f} s")


def _drill(tmp_path: Path, server: SeaweedS3, *, bucket: str = BUCKET, events: int,
           during: Callable[[], threading.Thread] | None = None, settle_s: float = 4.0) -> dict[str, object]:
    """Seed, back up to the bucket while events are produced and consumed (``during`` runs mid-way and
    may hand back a thread, joined before the end), lose the data directory, restore from the bucket,
    replay; returns what the invariants need."""
    data = tmp_path / "data"
    _seed(data)
    prefix = f"notify/{tmp_path.name}"
    url = f"s3://{bucket}/{prefix}?endpoint={server.endpoint}"
    settings = load_settings(data_dir=data)
    log = LocalLog(settings.local_log_path)  # inside the data directory: lost with it, restored from its replica
    metrics = free_port()
    backup = subprocess.Popen([sys.executable, "-m", "notify_cli.backup_commands", "backup", "--data-dir", str(data),
                               "--to", url, "--interval", "1", "--metrics-port", str(metrics)], cwd=ROOT, env=_env(),
                              stdout=subprocess.DEVNULL, stderr=(tmp_path / "backup.err").open("wb"))
    store = SqliteStore(settings.sqlite_path)
    try:
        time.sleep(3)
        half = events // 2
        assert crash_harness.produce(settings.local_log_path, half, 5000).wait(timeout=120) == 0
        _consume(log, store)
        outage = during() if during is not None else None
        (data / "lake" / "purchases" / "2011-03.parquet").write_bytes(os.urandom(200_000))  # a later snapshot
        # events e<half>... on from the first
        assert crash_harness.produce(settings.local_log_path, events - half, 5000, first=half).wait(timeout=120) == 0
        _consume(log, store)
        acknowledged = {f"e{i}" for i in range(events)}
        if outage is not None:
            outage.join(180)
            assert not outage.is_alive()
        # A last write to each database, then wait until Litestream has shipped it: after an outage of the
        # bucket it retries with a backoff, and a fixed sleep here lost the second half 1 run in 3.
        marked = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1)
        time.sleep(max(0.0, marked.timestamp() - time.time()))
        store.table(tables.CAMPAIGNS).put({"pk": "marker", "sk": "meta", "at": marked.isoformat()})
        assert crash_harness.produce(settings.local_log_path, 1, 0, first=events).wait(timeout=120) == 0
        _wait_shipped(server, bucket, prefix, since=marked)
        time.sleep(settle_s)  # file snapshots every 1 s: let them catch up too
        original = table_digests(store, RESTORED_AS_IS)
        original_files = _files(data)
        # what the backup alert reads, looked up in the bucket (the replica's newest transaction) after ~15 looks
        behind = {name: _gauge(metrics, "notify_backup_replica_behind_seconds", database=name)
                  for name in ("store", "stream")}
    finally:
        store.close()
        log.close()
        kill_with_children(backup)  # the machine is gone: no final sync
    assert backup.returncode == -9, (tmp_path / "backup.err").read_text()[-3000:]
    keys = [obj["Key"] for page in _s3_client(server.endpoint).get_paginator(  # type: ignore[attr-defined]
        "list_objects_v2").paginate(Bucket=bucket, Prefix=f"{prefix}/") for obj in page.get("Contents", [])]
    shutil.rmtree(data)

    started = time.monotonic()
    out = _cli("restore", "--data-dir", str(data), "--from", url)
    restore_s = round(time.monotonic() - started, 2)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout)
    store = SqliteStore(settings.sqlite_path)
    log = LocalLog(settings.local_log_path)
    try:
        restored = table_digests(store, RESTORED_AS_IS)
        chain = audit.verify(store)
        last_action = list(audit.entries(store))[-1].action if chain.entries else None
        _consume(log, store)  # replay whatever the restored Store's positions say it has not seen
        persisted = _event_ids(store)
    finally:
        store.close()
        log.close()
    return {"report": report, "keys": keys, "original": original, "restored": restored,
            "files_equal": _files(data) == original_files, "files": len(original_files),
            "lost": len(acknowledged - persisted), "acknowledged": len(acknowledged), "restore_s": restore_s,
            "mode": oct(settings.sqlite_path.stat().st_mode & 0o777), "behind": behind,
            "audit": {"ok": chain.ok, "last_action": last_action}}


# The restore appends its own audit entry (naming the head it replaced): the audit trail is checked by its
# chain and that entry, every other table by digest.
RESTORED_AS_IS = tuple(t for t in tables.ALL_TABLES if t != tables.AUDIT_LOG)


def _gauge(port: int, name: str, **labels: str) -> float | None:
    """One sample of the backup's ``/metrics``."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    wanted = name + "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "} "
    return next((float(line[len(wanted):]) for line in text.splitlines() if line.startswith(wanted)), None)


def _prefixes(keys: list[str]) -> set[str]:
    return {"/".join(key.split("/")[2:4]) if key.split("/")[2] == "files" else key.split("/")[2] for key in keys}


def test_backup_to_seaweedfs_and_restore_from_it(tmp_path: Path, s3_server: SeaweedS3) -> None:
    s3_server.create_bucket("notify-backup-restore")  # the session's server; a bucket of this test's own
    got = _drill(tmp_path, s3_server, bucket="notify-backup-restore", events=20_000)
    assert not (tmp_path / "notify").exists()  # nothing went to a folder named like the prefix
    assert {"store", "stream", "files/blobs", "files/manifests"} <= _prefixes(got["keys"])  # type: ignore[arg-type]
    assert got["report"]["databases"] == {"store": "restored", "stream": "restored"}  # type: ignore[index]
    assert got["restored"] == got["original"] and set(got["original"]) >= {  # type: ignore[arg-type]
        tables.USERS, tables.CAMPAIGNS, tables.USER_EVENTS, tables.PURCHASES, tables.EVENTS, tables.STREAM_POSITIONS}
    assert got["files_equal"] and got["files"] == 4
    assert got["lost"] == 0
    assert got["mode"] == "0o600"
    assert got["audit"] == {"ok": True, "last_action": "backup.restore"}
    assert got["behind"] == {"store": 0.0, "stream": 0.0}  # the replicas in the bucket keep up


@pytest.mark.faults
def test_backup_to_seaweedfs_survives_the_bucket_server_killed_and_restarted(tmp_path: Path,
                                                                             own_seaweed: SeaweedS3) -> None:
    """SIGKILL of SeaweedFS while ``notify backup`` replicates and the Store is written, back 3 s later on
    the same data folder: the restored Store still equals the original and no acknowledged event is lost."""
    def outage() -> threading.Thread:
        own_seaweed.kill()  # the second half of the events is written while the bucket is down
        back = threading.Thread(target=own_seaweed.restart, kwargs={"down_s": 3})
        back.start()
        return back

    got = _drill(tmp_path, own_seaweed, events=20_000, during=outage, settle_s=8.0)
    same = got["restored"] == got["original"]
    entry = record(
        "SeaweedFS killed and restarted mid-backup", injected="SIGKILL of the S3 server, back 3 s later",
        invariants={"Store restored from S3 equals the original (per-table digest)": same,
                    "lake and artefacts restored byte for byte": bool(got["files_equal"]),
                    "no acknowledged event lost": got["lost"] == 0,
                    "the audit chain verifies, the restore recorded": got["audit"] == {
                        "ok": True, "last_action": "backup.restore"},
                    "the replicas caught up after the outage": got["behind"] == {"store": 0.0, "stream": 0.0}},
        events=got["acknowledged"], lost=got["lost"], restore_s=got["restore_s"],
    )
    assert entry.held, {k: v for k, v in got.items() if k != "keys"}

"""Backups of the embedded default: file snapshots by content, Litestream replication and restore,
``--at`` point-in-time, the restore rules, and the consumer's position travelling with the Store."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from notify_core.backup import BackupService, BackupTarget, plan_backup
from notify_core.backup.files import FileBackup
from notify_core.backup.target import FolderBlobs
from notify_core.clock import SYSTEM_CLOCK, ManualClock
from notify_core.errors import ConditionFailedError, ConfigurationError
from notify_core.events import CLICKSTREAM, capture_events
from notify_core.events.consumer import EventConsumer
from notify_core.settings import NotifySettings, load_settings
from notify_core.store import tables
from notify_core.store.sqlite import SqliteStore
from notify_core.stream.local_log import LocalLog
from tests.events.helpers import click, events_clock
from tests.servers import kill_with_children

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2031, 5, 4, 12, 0, tzinfo=UTC)


def test_file_snapshots_are_by_content_skip_temporaries_and_restore_as_of_a_time(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "lake" / "purchases").mkdir(parents=True)
    (data / "lake" / "purchases" / "2011-01.parquet").write_bytes(b"v1")
    (data / "artefacts" / "campaign_index" / "v1").mkdir(parents=True)
    (data / "artefacts" / "campaign_index" / "v1" / "index.faiss").write_bytes(b"index")
    (data / "lake" / "purchases" / ".x.parquet.abc.tmp").write_bytes(b"half")
    clock = ManualClock(NOW)
    backup = FileBackup(FolderBlobs(tmp_path / "backup"), root=data, folders=["lake", "artefacts"], clock=clock)
    first = backup.snapshot()
    assert (first.files, first.uploaded) == (2, 2) and first.manifest is not None
    clock.advance(60)
    assert backup.snapshot().manifest is None  # nothing changed: nothing written
    (data / "lake" / "purchases" / "2011-01.parquet").write_bytes(b"v2")
    (data / "artefacts" / "campaign_index" / "v2").mkdir()
    (data / "artefacts" / "campaign_index" / "v2" / "index.faiss").write_bytes(b"index")  # same content
    clock.advance(60)
    second = backup.snapshot()
    assert (second.files, second.uploaded) == (3, 1)  # the identical index is stored once
    modes = {oct(p.stat().st_mode & 0o777) for p in (tmp_path / "backup").rglob("*") if p.is_file()}
    assert modes == {"0o600"}

    restored = tmp_path / "restored"
    FileBackup(FolderBlobs(tmp_path / "backup"), root=restored, folders=[], clock=clock).restore(
        restored, at=NOW + timedelta(seconds=30)
    )
    assert (restored / "lake" / "purchases" / "2011-01.parquet").read_bytes() == b"v1"
    assert not (restored / "artefacts" / "campaign_index" / "v2").exists()
    assert not list(restored.rglob("*.tmp"))
    latest = tmp_path / "latest"
    FileBackup(FolderBlobs(tmp_path / "backup"), root=latest, folders=[], clock=clock).restore(latest)
    assert (latest / "lake" / "purchases" / "2011-01.parquet").read_bytes() == b"v2"


def test_backup_targets_parse_folders_and_s3_urls(tmp_path: Path) -> None:
    folder = BackupTarget.parse(str(tmp_path))
    assert folder.kind == "file" and folder.litestream_replica("store") == {"type": "file",
                                                                              "path": str(tmp_path / "store")}
    s3 = BackupTarget.parse("s3://bkt/notify/prod?endpoint=http://127.0.0.1:9000&region=eu-west-1")
    assert s3.litestream_replica("stream") == {
        "type": "s3", "bucket": "bkt", "path": "notify/prod/stream", "region": "eu-west-1",
        "endpoint": "http://127.0.0.1:9000", "force-path-style": True,
    }
    for bad in ("", "ftp://x/y", "s3:///nobucket"):
        with pytest.raises(ConfigurationError):
            BackupTarget.parse(bad)


def _rows(path: Path) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {row[0] for row in conn.execute("SELECT pk FROM users")}


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "notify_cli.backup_commands", *args], cwd=ROOT, text=True,
                          capture_output=True, timeout=120, env={**os.environ, "NOTIFY_ENV": "local", **(env or {})})


def _replicated_ltx(target: Path, *, after: set[Path], timeout: float = 60.0) -> set[Path]:
    """The Store's level-0 LTX files in the replica once one beyond ``after`` has been shipped."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        shipped = set((target / "store" / "ltx" / "0").glob("*.ltx"))
        if shipped - after:
            return shipped
        time.sleep(0.1)
    raise AssertionError(f"Litestream shipped nothing new to {target} in {timeout} s")


def test_continuous_backup_survives_losing_the_data_directory_and_restores_as_of_a_time(tmp_path: Path) -> None:
    data, target = tmp_path / "data", tmp_path / "backup"
    store = SqliteStore(data / "store.sqlite")
    users = store.table(tables.USERS)
    users.batch_put([{"pk": f"a{i}", "sk": tables.PROFILE_SK} for i in range(200)])
    (data / "lake").mkdir()
    (data / "lake" / "users.parquet").write_bytes(b"lake")
    proc = subprocess.Popen([sys.executable, "-m", "notify_cli.backup_commands", "backup", "--data-dir", str(data),
                             "--to", str(target), "--interval", "0.5"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env={**os.environ, "NOTIFY_ENV": "local"})
    try:
        # Wait for what is measured, not for a guess: under load the first replication took over 3 s.
        first = _replicated_ltx(target, after=set())
        time.sleep(1)  # `middle` strictly after the replicated first transaction, before the b rows
        middle = datetime.now(UTC)
        time.sleep(1)
        for k in range(20):  # single-row commits while replication runs
            users.put({"pk": f"b{k}", "sk": tables.PROFILE_SK})
        _replicated_ltx(target, after=first)
        time.sleep(1)  # the last of the 20 commits may ship one sync interval (200 ms) after the first
    finally:
        kill_with_children(proc)  # the machine is gone: no final sync
    store.close()
    shutil.rmtree(data)

    out = _cli("restore", "--data-dir", str(data), "--from", str(target))
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["databases"]["store"] == "restored" and report["files"] == 1
    assert _rows(data / "store.sqlite") == {f"a{i}" for i in range(200)} | {f"b{k}" for k in range(20)}
    assert (data / "lake" / "users.parquet").read_bytes() == b"lake"
    assert oct((data / "store.sqlite").stat().st_mode & 0o777) == "0o600"

    again = _cli("restore", "--data-dir", str(data), "--from", str(target))
    assert again.returncode == 2 and "exists" in again.stderr  # never over a live Store without --force

    earlier = tmp_path / "earlier"
    out = _cli("restore", "--data-dir", str(earlier), "--from", str(target), "--at", middle.isoformat())
    assert out.returncode == 0, out.stderr
    assert _rows(earlier / "store.sqlite") == {f"a{i}" for i in range(200)}


def backed_up_once(tmp_path: Path) -> tuple[NotifySettings, SqliteStore, BackupService]:
    """A data directory under ``tmp_path`` whose Store holds user ``a`` (left open) and a stream log, backed
    up once to ``tmp_path / "b"``."""
    settings = load_settings(data_dir=tmp_path / "data")
    store = SqliteStore(settings.sqlite_path)
    store.table(tables.USERS).put({"pk": "a", "sk": tables.PROFILE_SK})
    LocalLog(settings.local_log_path).close()
    service = BackupService(plan_backup(settings, BackupTarget.parse(str(tmp_path / "b"))), clock=ManualClock(NOW))
    service.once()
    return settings, store, service


def test_restore_refuses_a_live_store_and_keeps_a_retained_stream_log(tmp_path: Path) -> None:
    settings, store, service = backed_up_once(tmp_path)
    store.table(tables.USERS).put({"pk": "x", "sk": tables.PROFILE_SK})
    store.close()
    with pytest.raises(ConditionFailedError):
        service.restore()
    report = service.restore(force=True)
    assert report.databases == {"store": "restored", "stream": "kept (present, newer than its backup)"}
    assert _rows(settings.sqlite_path) == {"a"}


def test_a_restored_store_replays_what_it_lost_from_the_retained_stream(tmp_path: Path) -> None:
    """The consumer's position lives in the Store: a Store restored to before some batches has the older
    position, and the consumer reads those batches again from the stream, although the stream's own
    committed position is past them."""
    settings = load_settings(data_dir=tmp_path / "data", stream_log_path=tmp_path / "retained" / "log.sqlite")
    log = LocalLog(settings.local_log_path)
    store = SqliteStore(settings.sqlite_path)
    service = BackupService(plan_backup(settings, BackupTarget.parse(str(tmp_path / "b"))), clock=ManualClock(NOW))

    def consume_all() -> None:
        consumer = EventConsumer(stream=log, store=store, landing=None, max_batch=50, poll_timeout=0.05,
                                 clock=SYSTEM_CLOCK)
        consumer.run(stop=threading.Event(), idle_exit=0.5)
        consumer.close()

    capture_events(json.dumps([click(i) for i in range(100)]), stream=log, clock=events_clock())
    consume_all()
    service.once()  # the backup holds events 0-99 and position 100
    capture_events(json.dumps([click(i) for i in range(100, 160)]), stream=log, clock=events_clock())
    consume_all()
    assert log.committed("notify-event-consumer", CLICKSTREAM) == 160
    store.close()
    shutil.rmtree(settings.data_dir)

    assert service.restore().databases["store"] == "restored"
    store = SqliteStore(settings.sqlite_path)
    assert len(list(store.table(tables.USER_EVENTS).scan())) == 100
    consume_all()
    assert len(list(store.table(tables.USER_EVENTS).scan())) == 160
    store.close()
    log.close()


def test_backup_refuses_the_aws_environment(tmp_path: Path) -> None:
    settings = load_settings(env="aws", s3_bucket="b", sns_topic_arn="arn:aws:sns:eu-west-1:1:t", data_dir=tmp_path)
    with pytest.raises(ConfigurationError):
        plan_backup(settings, BackupTarget.parse(str(tmp_path / "b")))


def _wait_running(data: Path, *, logs: int, rotated: int = 0, timeout: float = 90.0) -> None:
    """Until ``notify backup`` processes have started Litestream (``logs`` logs open, ``rotated`` earlier ones
    kept): each installed its SIGTERM handler before that. A fixed sleep was not enough on a loaded CI box: a
    process still importing when the test's SIGTERM came died of it (-15)."""
    folder = data / "litestream"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        names = [p.name for p in folder.iterdir()] if folder.is_dir() else []
        if (sum(n.endswith(".log") for n in names) >= logs
                and sum(n.endswith(".log.1") for n in names) >= rotated):
            return
        time.sleep(0.1)
    raise AssertionError(f"notify backup did not start Litestream within {timeout:.0f} s")


def test_notify_backup_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    data = tmp_path / "data"
    SqliteStore(data / "store.sqlite").close()
    proc = subprocess.Popen([sys.executable, "-m", "notify_cli.backup_commands", "backup", "--data-dir", str(data),
                             "--to", str(tmp_path / "b"), "--interval", "0.5"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env={**os.environ, "NOTIFY_ENV": "local"})
    _wait_running(data, logs=1)
    time.sleep(1)  # a replication cycle or two
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err.decode()[-2000:]
    assert json.loads(out.decode().splitlines()[-1])["target"] == str(tmp_path / "b")


def test_notify_backup_killed_9_and_restarted_leaves_nothing_behind_and_keeps_its_log(tmp_path: Path) -> None:
    """A supervised `notify backup` killed -9 and started again: no temporary folder is left per kill (one
    was, holding the Litestream config), the Litestream config and log are the data directory's, private, one
    pair per target, and the log of the killed run is kept beside the new one."""
    data, scratch = tmp_path / "data", tmp_path / "tmp"
    scratch.mkdir()
    SqliteStore(data / "store.sqlite").close()
    env = {**os.environ, "NOTIFY_ENV": "local", "TMPDIR": str(scratch)}

    def start(target: Path) -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-m", "notify_cli.backup_commands", "backup", "--data-dir",
                                 str(data), "--to", str(target), "--interval", "0.5"], cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)

    first = start(tmp_path / "b")
    try:
        _replicated_ltx(tmp_path / "b", after=set())
    finally:
        kill_with_children(first)  # SIGKILL, its Litestream with it
    again, other = start(tmp_path / "b"), start(tmp_path / "c")  # the restart, and a second target beside it
    _wait_running(data, logs=2, rotated=1)
    time.sleep(1)
    for proc in (again, other):
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err.decode()[-2000:]

    assert list(scratch.iterdir()) == []
    folder = data / "litestream"
    names = sorted(p.name for p in folder.iterdir())
    stems = {name.split(".")[0] for name in names}
    assert len(stems) == 2 and len(names) == 5, names  # per target a config and a log; the killed run's log.1
    assert sum(name.endswith(".log.1") for name in names) == 1
    assert oct(folder.stat().st_mode & 0o777) == "0o700"
    assert {oct(p.stat().st_mode & 0o777) for p in folder.iterdir()} == {"0o600"}
    configs = {p.read_text().count(str(tmp_path / t)) for p in folder.glob("*.yml") for t in ("b", "c")}
    assert configs == {0, 2}  # each config names its own target for both databases, never the other's
    assert (folder / next(n for n in names if n.endswith(".log.1"))).stat().st_size > 0

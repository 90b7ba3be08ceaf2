"""Backups that must not lie: a backup restarted on a wiped data directory, a stream log that is present but
behind, a damaged blob, files newer than the snapshot after ``restore --force``, credentials in the URL.

One test per audit finding (docs/consumer-groups-backup-faults.md, "Found on the way"); each fails on the
code before the fix. New error classes are matched by their base class and message, so the module still
imports on the old code.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

from notify_core.backup import BackupService, BackupTarget, plan_backup
from notify_core.backup.files import FileBackup
from notify_core.backup.target import FolderBlobs
from notify_core.clock import SYSTEM_CLOCK, ManualClock
from notify_core.errors import ConditionFailedError, ConfigurationError, NotifyError
from notify_core.events import CLICKSTREAM, capture_events
from notify_core.events.consumer import EventConsumer
from notify_core.settings import NotifySettings, load_settings
from notify_core.store import tables
from notify_core.store.sqlite import SqliteStore
from notify_core.stream.local_log import LocalLog
from tests.events.helpers import click, events_clock

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2031, 5, 4, 12, 0, tzinfo=UTC)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "notify_cli.backup_commands", *args], cwd=ROOT, text=True,
                          capture_output=True, timeout=120, env={**os.environ, "NOTIFY_ENV": "local"})


def _users(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        try:
            return int(conn.execute("SELECT COUNT(*) FROM users").fetchone()[0])
        except sqlite3.OperationalError:  # an empty database: no users table at all
            return 0


def _service(settings: NotifySettings, target: Path) -> BackupService:
    return BackupService(plan_backup(settings, BackupTarget.parse(str(target))), clock=ManualClock(NOW))


def test_a_backup_restarted_on_a_wiped_data_directory_refuses_to_replace_the_good_replica(tmp_path: Path) -> None:
    """`notify backup` (supervised) comes back on the replacement machine before `notify restore`: it must not
    replicate new, empty databases over the backed-up ones (the newest restore would be an empty Store)."""
    settings = load_settings(data_dir=tmp_path / "data")
    target = tmp_path / "b"
    store = SqliteStore(settings.sqlite_path)
    store.table(tables.USERS).batch_put([{"pk": f"u{i}", "sk": tables.PROFILE_SK} for i in range(50)])
    store.close()
    _service(settings, target).once()
    shutil.rmtree(settings.data_dir)  # the machine is lost

    out = _cli("backup", "--once", "--data-dir", str(settings.data_dir), "--to", str(target))
    assert out.returncode != 0, out.stdout
    assert "notify restore" in out.stderr and "--new-replica" in out.stderr, out.stderr
    assert not settings.sqlite_path.exists()  # refused before anything (the audit entry) created a Store

    SqliteStore(settings.sqlite_path).close()  # e.g. `notify serve` started first: a new, empty Store
    with pytest.raises(ConditionFailedError, match="--new-replica"):
        _service(settings, target).once()
    fresh = load_settings(data_dir=tmp_path / "fresh")
    report = _service(fresh, target).restore()
    assert report.databases["store"] == "restored" and _users(fresh.sqlite_path) == 50

    # after a restore the databases are the replica's own: the backup starts again without the flag
    shutil.rmtree(settings.data_dir)
    _service(settings, target).restore()
    _service(settings, target).once()
    # and --new-replica starts one on purpose
    other = load_settings(data_dir=tmp_path / "other")
    SqliteStore(other.sqlite_path).close()
    _service(other, target).once(new_replica=True)


def _backed_up_log(tmp_path: Path) -> tuple[NotifySettings, Path]:
    """100 events produced (acknowledged), consumed into the Store (position 100), backed up; then the data
    directory is lost."""
    settings = load_settings(data_dir=tmp_path / "data")
    log = LocalLog(settings.local_log_path)
    store = SqliteStore(settings.sqlite_path)
    assert capture_events(json.dumps([click(i) for i in range(100)]), stream=log, clock=events_clock()).accepted == 100
    consumer = EventConsumer(stream=log, store=store, landing=None, max_batch=50, poll_timeout=0.05,
                             clock=SYSTEM_CLOCK)
    consumer.run(stop=threading.Event(), idle_exit=0.5)
    consumer.close()
    target = tmp_path / "b"
    _service(settings, target).once()
    log.close()
    store.close()
    shutil.rmtree(settings.data_dir)
    return settings, target


def test_a_present_stream_log_behind_its_backup_is_not_kept(tmp_path: Path) -> None:
    settings, target = _backed_up_log(tmp_path)
    LocalLog(settings.local_log_path).close()  # a process opened the log before the restore: empty, "present"
    report = _service(settings, target).restore()
    assert report.databases["stream"].startswith("restored"), report.databases
    log = LocalLog(settings.local_log_path)
    assert log.end_offsets(CLICKSTREAM)[0] == 100  # the acknowledged events are back
    log.close()

    # a present log that is behind but holds records: refused (nothing replaced), or kept beside with --force
    shutil.rmtree(settings.data_dir)
    log = LocalLog(settings.local_log_path)
    capture_events(json.dumps([click(i) for i in range(200, 203)]), stream=log, clock=events_clock())
    log.close()
    with pytest.raises(ConditionFailedError, match="behind"):
        _service(settings, target).restore()
    assert not settings.sqlite_path.exists()  # decided before the Store was put in place
    report = _service(settings, target).restore(force=True)
    assert "kept as" in report.databases["stream"], report.databases
    log = LocalLog(settings.local_log_path)
    assert log.end_offsets(CLICKSTREAM)[0] == 100
    log.close()
    [aside] = settings.local_log_path.parent.glob("log.sqlite.behind-*")
    aside_log = LocalLog(aside)
    assert aside_log.end_offsets(CLICKSTREAM)[0] == 3  # its records are not destroyed
    aside_log.close()


def test_a_damaged_blob_fails_the_restore_with_nothing_replaced(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path / "data")
    SqliteStore(settings.sqlite_path).close()
    lake = settings.data_dir / "lake" / "users.parquet"
    lake.parent.mkdir(parents=True)
    lake.write_bytes(b"good lake bytes")
    target = tmp_path / "b"
    _service(settings, target).once()
    [blob] = (target / "files" / "blobs").iterdir()
    blob.write_bytes(b"rotten lake bytes")  # bit rot, a truncated upload, tampering

    restored = tmp_path / "restored"
    (restored / "lake").mkdir(parents=True)
    (restored / "lake" / "users.parquet").write_bytes(b"older")
    with pytest.raises(NotifyError, match="damaged"):
        FileBackup(FolderBlobs(target), root=restored, folders=["lake"], clock=ManualClock(NOW)).restore(restored)
    assert (restored / "lake" / "users.parquet").read_bytes() == b"older"
    assert [p.name for p in (restored / "lake").iterdir()] == ["users.parquet"]  # no temporary left

    shutil.rmtree(settings.data_dir)
    with pytest.raises(NotifyError, match="damaged"):
        _service(settings, target).restore()
    assert not settings.sqlite_path.exists() and not lake.exists()  # the Store was not put in place either


def test_restore_force_removes_files_newer_than_the_snapshot_and_follows_no_link(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path / "data")
    store = SqliteStore(settings.sqlite_path)
    store.table(tables.USERS).put({"pk": "a", "sk": tables.PROFILE_SK})
    lake = settings.data_dir / "lake" / "purchases"
    (lake / "month=2011-01").mkdir(parents=True)
    (lake / "month=2011-01" / "data.parquet").write_bytes(b"jan")
    (settings.data_dir / "landing").mkdir()
    target = tmp_path / "b"
    _service(settings, target).once()

    (lake / "month=2011-02").mkdir()
    (lake / "month=2011-02" / "data.parquet").write_bytes(b"feb")  # written after the backup
    (lake / "month=2011-01" / ".data.parquet.x.tmp").write_bytes(b"half")  # in progress: not ours to judge
    outside = tmp_path / "outside"
    (outside / "dir").mkdir(parents=True)
    (outside / "dir" / "keep.parquet").write_bytes(b"outside")
    (outside / "file.parquet").write_bytes(b"outside file")
    (lake / "linked-dir").symlink_to(outside / "dir")
    (settings.data_dir / "landing" / "linked.parquet").symlink_to(outside / "file.parquet")
    unbacked = settings.data_dir / "notes.txt"  # not under a backed-up folder
    unbacked.write_text("mine")
    store.close()

    report = _service(settings, target).restore(force=True)
    assert report.databases["store"] == "restored"
    assert not (lake / "month=2011-02").exists()  # the partition and the folder it emptied
    assert (lake / "month=2011-01" / "data.parquet").read_bytes() == b"jan"
    assert (lake / "month=2011-01" / ".data.parquet.x.tmp").exists()
    assert not (settings.data_dir / "landing" / "linked.parquet").is_symlink()  # the link, not its target
    assert (outside / "file.parquet").read_bytes() == b"outside file"
    assert (outside / "dir" / "keep.parquet").read_bytes() == b"outside"  # a linked folder is not entered
    assert unbacked.read_text() == "mine"


def test_credentials_in_the_backup_url_are_refused_and_never_written(tmp_path: Path) -> None:
    secret = "SuperSecretValue123"
    for url in (f"s3://AKIAFAKEKEY:{secret}@bucket/prefix?endpoint=http://127.0.0.1:9",
                f"s3://bucket/prefix?endpoint=http://AKIAFAKEKEY:{secret}@127.0.0.1:9"):
        with pytest.raises(ConfigurationError) as refused:
            BackupTarget.parse(url)
        assert secret not in str(refused.value) and "AWS_" in str(refused.value)

    data = tmp_path / "data"
    SqliteStore(data / "store.sqlite").close()
    out = _cli("backup", "--once", "--data-dir", str(data), "--to",
               f"s3://AKIAFAKEKEY:{secret}@bucket/prefix?endpoint=http://127.0.0.1:9")
    assert out.returncode != 0
    assert secret not in out.stdout + out.stderr
    with sqlite3.connect(data / "store.sqlite") as conn:
        names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        bodies = [row[0] for row in conn.execute('SELECT body FROM "audit_log"')] if "audit_log" in names else []
    assert not [body for body in bodies if secret in body]

    # describe() (what the audit log and the logs get) redacts user info even in a target built directly
    built = BackupTarget(kind="s3", bucket=f"KEY:{secret}@bucket", endpoint=f"http://KEY:{secret}@127.0.0.1:9")
    assert secret not in built.describe()

"""Backup and restore of the embedded default: what is backed up, and in which order it comes back.

What: the Store (``store.sqlite``) and the embedded stream log, each replicated continuously by
Litestream; the lake, landing, artefact and quarantine folders, snapshotted by content every
``interval`` seconds (:mod:`notify_core.backup.files`). The event consumer keeps its stream position in
the Store (``stream_positions``), so the Store's backup carries it: after a restore the consumer
replays from where the *restored* Store was, and nothing acknowledged is lost while the stream still
holds it (a retained log, or Kafka).

Restore rules: the Store is restored only into a data directory without one (or with ``force``);
the stream log only when it is missing, because a log that survived is newer than any backup of it.
``at`` restores the Store (and the files' snapshot) as of that time; without it, the newest.
The aws environment is not handled here: DynamoDB point-in-time recovery, S3 versioning and
replication are in the rendered templates.
"""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from notify_core.backup.files import FileBackup, FilesReport
from notify_core.backup.litestream import Litestream
from notify_core.backup.target import BackupTarget
from notify_core.clock import Clock
from notify_core.errors import ConditionFailedError, ConfigurationError, NotFoundError
from notify_core.settings import NotifySettings

log = logging.getLogger(__name__)

FOLDERS = ("lake", "landing", "artefacts", "quarantine")


@dataclass(frozen=True)
class BackupPlan:
    """The databases (name -> path) and data-directory folders one target receives."""

    data_dir: Path
    databases: dict[str, Path]
    folders: tuple[str, ...]
    target: BackupTarget


def plan_backup(settings: NotifySettings, target: BackupTarget) -> BackupPlan:
    if settings.env != "local":
        raise ConfigurationError(
            "notify backup covers the embedded default; on aws use DynamoDB PITR and S3 versioning"
        )
    databases = {"store": settings.sqlite_path.resolve()}
    if settings.stream == "local":
        databases["stream"] = settings.local_log_path.resolve()
    return BackupPlan(data_dir=settings.data_dir.resolve(), databases=databases, folders=FOLDERS, target=target)


@dataclass
class RestoreReport:
    databases: dict[str, str] = field(default_factory=dict)  # name -> restored | kept | not in backup
    files: int = 0
    files_written: int = 0
    seconds: float = 0.0


class BackupService:
    """Runs the backup of one plan (continuously or once) and restores from it."""

    def __init__(self, plan: BackupPlan, *, clock: Clock, work_dir: Path | None = None) -> None:
        self.plan = plan
        self.clock = clock
        self._own_work_dir = work_dir is None
        self.work_dir = work_dir or Path(tempfile.mkdtemp(prefix="notify-backup-"))
        self.litestream = Litestream(
            config_path=self.work_dir / "litestream.yml",
            databases={path: plan.target.litestream_replica(name) for name, path in plan.databases.items()},
        )
        self.files = FileBackup(plan.target.blobs(), root=plan.data_dir, folders=plan.folders, clock=clock)

    def close(self) -> None:
        """Remove the private folder of the Litestream config and log (when this service made it)."""
        if self._own_work_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)

    def _ensure_databases(self) -> None:
        """Litestream replicates a file that exists: create an empty WAL database where none is yet."""
        for path in self.plan.databases.values():
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                with sqlite3.connect(path) as conn:
                    conn.execute("PRAGMA journal_mode=WAL")
                os.chmod(path, 0o600)

    def once(self) -> FilesReport:
        """One sync of the databases and one file snapshot (``notify backup --once``)."""
        self._ensure_databases()
        self.litestream.replicate_once()
        return self.files.snapshot()

    def run(self, *, stop: threading.Event, interval: float = 10.0) -> FilesReport:
        """Replicate continuously until ``stop``; a file snapshot every ``interval`` s and a last one at stop.

        A Litestream process that dies is restarted (and logged): a backup that silently stopped is
        the failure that only shows on the day of the restore.
        """
        self._ensure_databases()
        log_path = self.work_dir / "litestream.log"
        process = self.litestream.start(log_path=log_path)
        log.info("backup started",
                 extra={"target": self.plan.target.describe(), "databases": list(self.plan.databases)})
        report = FilesReport()
        try:
            while True:
                report = self._snapshot_files()
                if process.poll() is not None:
                    log.error("litestream exited; restarting", extra={"returncode": process.returncode})
                    process = self.litestream.start(log_path=log_path)
                if stop.wait(interval):
                    break
            report = self._snapshot_files()
        finally:
            Litestream.stop(process)
        log.info("backup stopped", extra={"files": report.files})
        return report

    def _snapshot_files(self) -> FilesReport:
        try:
            report = self.files.snapshot()
        except Exception as exc:  # a full target or a flaky bucket: log, keep replicating, retry next tick
            log.error("file snapshot failed", extra={"error": str(exc)})
            return FilesReport()
        if report.manifest is not None:
            log.info("file snapshot", extra={"files": report.files, "uploaded": report.uploaded,
                                             "bytes": report.uploaded_bytes})
        return report

    def restore(self, *, at: datetime | None = None, force: bool = False) -> RestoreReport:
        """Bring the data directory back from the backup (see the module doc for the rules)."""
        started = time.monotonic()
        report = RestoreReport()
        store = self.plan.databases["store"]
        if store.exists() and store.stat().st_size > 0 and not force:
            raise ConditionFailedError(
                f"{store} exists: restore into an empty data directory, or pass --force to replace it"
            )
        for name, path in self.plan.databases.items():
            if name != "store" and path.exists():
                report.databases[name] = "kept (present, newer than its backup)"
                continue
            report.databases[name] = "restored" if self._restore_database(path, at=at) else "not in backup"
        if report.databases["store"] != "restored":
            raise NotFoundError(f"the backup at {self.plan.target.describe()} holds no Store")
        try:
            files = self.files.restore(self.plan.data_dir, at=at)
            report.files, report.files_written = files.files, files.uploaded
        except NotFoundError as exc:
            log.warning("no file snapshot to restore", extra={"error": str(exc)})
        report.seconds = round(time.monotonic() - started, 3)
        return report

    def _restore_database(self, path: Path, *, at: datetime | None) -> bool:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        staging = path.with_name(f"{path.name}.restoring")
        for leftover in (staging, Path(f"{staging}-wal"), Path(f"{staging}-shm")):
            leftover.unlink(missing_ok=True)
        if not self.litestream.restore(path, output=staging, at=at):
            return False
        for stale in (Path(f"{path}-wal"), Path(f"{path}-shm")):
            stale.unlink(missing_ok=True)
        os.chmod(staging, 0o600)
        os.replace(staging, path)
        return True


def describe(report: RestoreReport) -> dict[str, Any]:
    return {"databases": report.databases, "files": report.files, "files_written": report.files_written,
            "seconds": report.seconds}


"""Backup and restore of the embedded default: what is backed up, and in which order it comes back.

What: the Store (``store.sqlite``) and the embedded stream log, each replicated continuously by
Litestream; the lake, landing, artefact and quarantine folders, snapshotted by content every
``interval`` seconds (:mod:`notify_core.backup.files`). The event consumer keeps its stream position in
the Store (``stream_positions``), so the Store's backup carries it: after a restore the consumer
replays from where the *restored* Store was, and nothing acknowledged is lost while the stream still
holds it (a retained log, or Kafka).

Restore rules: the Store is restored only into a data directory without one (or with ``force``).
A stream log that is present is kept only when it is at least as far as its backup and as every
position in the restored Store's ``stream_positions`` (then it survived, and is newer than any backup of
it); a present log that is behind (one a process created empty before the restore) is replaced by its
backup when it holds no record, or with ``force`` (it is kept beside as ``<log>.behind-<time>``), and
is otherwise refused, so no acknowledged event is dropped silently. Everything is fetched and checked
before anything in the data directory is replaced (databases into ``*.restoring`` files, file blobs
re-hashed); the backed-up folders end up exactly as the snapshot (files it does not name are removed).
``at`` restores the Store (and the files' snapshot) as of that time; without it, the newest.
Erasures outlive the restore: the erasure register (:mod:`notify_core.erasure_register`) of the present Store, of the
newest backup (for ``at``) and of the restored Store is written into the restored Store, and every registered
user the restored Store or Parquet files still hold is erased again at their own erasure time.

Running processes: a restore replaces the Store and the log by a rename, so it holds both files to itself
while it runs (:meth:`notify_core.sqlite_tx.WriteGate.exclusive`) and is refused, naming them, while any other
process has one open (``notify serve``, the worker, the consumer, a Dagster run, ``notify backup``): they
would go on writing to the replaced file. ``notify backup`` holds the open lease like any of them (its
Litestream would go on copying the old file). A process that starts during a restore waits for it.

Start rule: a backup refuses to start when the target already holds a replica of a database that is
missing here or was never under Litestream (neither replicated nor restored from a replica: it has no
``_litestream_seq`` table), because replicating a new, empty database would make it the newest backup
(a data directory wiped, and ``notify backup`` restarted by its supervisor before ``notify restore``).
``new_replica`` (``--new-replica``) says that this is meant.
The aws environment is not handled here: DynamoDB point-in-time recovery, S3 versioning and
replication are in the rendered templates.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack, closing
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from notify_core.backup.files import FileBackup, FilesReport
from notify_core.backup.keys import KeyBackup
from notify_core.backup.litestream import Litestream
from notify_core.backup.replica_lag import FILES_BEHIND, ReplicaLag
from notify_core.backup.target import BackupTarget
from notify_core.clock import Clock, since, utcnow
from notify_core.erasure import reapply_register
from notify_core.erasure_register import ErasureRegister, register_of
from notify_core.errors import ConditionFailedError, ConfigurationError, NotFoundError
from notify_core.line_file import rotate_held_file
from notify_core.observability import LOG_RETENTION_DAYS
from notify_core.security.crypto import MasterKey
from notify_core.settings import NotifySettings
from notify_core.sqlite_tx import WriteGate, write_gate
from notify_core.store.codec import decode_item
from notify_core.store.sqlite import SqliteStore
from notify_core.store.tables import ERASURES, STREAM_POSITIONS
from notify_core.stream.local_log import LocalLog

log = logging.getLogger(__name__)

# In this order: a snapshot reads the landing folder before the lake. Ingestion retires the consumer's order files
# only after the lake holds their rows (notify_assets.ingestion), so a snapshot taken while it does so has the rows
# in the landing file, in the lake, or in both; read the other way round, it could hold neither.
FOLDERS = ("landing", "lake", "artefacts", "quarantine")
LITESTREAM_FOLDER = "litestream"  # under the data directory: each target's Litestream config and log
PRUNE_EVERY_S = 3600.0  # how often `notify backup` removes file snapshots past their retention


@dataclass(frozen=True)
class BackupPlan:
    """The databases (name -> path), data-directory folders and keys one target receives. ``master``: the
    master key that seals the keys' bundle, when there is one (:func:`notify_core.security.vault.existing_master_key`;
    None: no keys are backed up or restored)."""

    data_dir: Path
    databases: dict[str, Path]
    folders: tuple[str, ...]
    target: BackupTarget
    secrets_dir: Path | None = None
    master: Callable[[], MasterKey | None] | None = None
    master_in_data_dir: Path | None = None  # the master key file, when it is inside the data directory


def plan_backup(settings: NotifySettings, target: BackupTarget) -> BackupPlan:
    if settings.env != "local":
        raise ConfigurationError(
            "notify backup covers the embedded default; on aws use DynamoDB PITR and S3 versioning"
        )
    databases = settings.local_databases
    from notify_core.security.vault import existing_master_key, master_key_file

    master_file = master_key_file(settings)
    inside = (master_file if master_file is not None
              and master_file.resolve().is_relative_to(settings.data_dir.resolve()) else None)
    return BackupPlan(data_dir=settings.data_dir.resolve(), databases=databases, folders=FOLDERS, target=target,
                      secrets_dir=settings.secrets_dir, master=functools.partial(existing_master_key, settings),
                      master_in_data_dir=inside)


class ReplicaExistsError(ConditionFailedError):
    """The target holds a replica of a database that is missing here or new: backing it up would make an
    empty database the newest backup (restore first, or start a new replica on purpose)."""


class StreamLogBehindError(ConditionFailedError):
    """A present stream log is behind its backup or the restored Store's positions and holds records:
    replacing it could drop events, keeping it loses the backup's (stop its writers and decide)."""


@dataclass
class RestoreReport:
    databases: dict[str, str] = field(default_factory=dict)  # name -> restored | kept | not in backup
    files: int = 0
    files_written: int = 0
    files_removed: int = 0  # under the backed-up folders, not in the restored snapshot
    register_entries: int = 0  # erasures known before the restore (present Store, newest backup)
    erasures_reapplied: int = 0  # users the restored data still held, erased again
    keys: int = 0  # key files restored from the backup's sealed bundle (notify_core.backup.keys)
    seconds: float = 0.0


class BackupService:
    """Runs the backup of one plan (continuously or once) and restores from it."""

    def __init__(self, plan: BackupPlan, *, clock: Clock) -> None:
        self.plan = plan
        self.clock = clock
        # The Litestream config and log of this target sit in the data directory, named by the target: a
        # `notify backup` killed -9 and restarted by its supervisor reuses them (a temporary folder was left
        # behind at each kill), the log outlives the process for the operator, and two backups of one data
        # directory to two targets never read each other's config.
        stem = hashlib.sha256(plan.target.describe().encode()).hexdigest()[:16]
        folder = plan.data_dir / LITESTREAM_FOLDER
        self.log_path = folder / f"{stem}.log"
        self.litestream = Litestream(
            config_path=folder / f"{stem}.yml",
            databases={path: plan.target.litestream_replica(name) for name, path in plan.databases.items()},
        )
        self._blobs = plan.target.blobs()  # one client for the files, the keys and the replica checks
        self.files = FileBackup(self._blobs, root=plan.data_dir, folders=plan.folders, clock=clock)
        self.keys = (KeyBackup(self._blobs, secrets_dir=plan.secrets_dir, master=plan.master, clock=clock)
                     if plan.secrets_dir is not None and plan.master is not None else None)
        self._pruned_at = -math.inf  # file snapshots past their retention are removed hourly (FileBackup.prune)
        self._files_failing_since: float | None = None  # the clock's time of the first failed snapshot of a spell
        self._keys_failing = False
        self._leases: list[WriteGate] = []

    def _lease_databases(self) -> None:
        """Hold the databases' open leases while this backup runs, as every process with them open does: a
        restore is refused meanwhile (this backup's Litestream would go on copying the replaced files)."""
        if self._leases:
            return
        for path in self.plan.databases.values():
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            gate = write_gate(path)
            gate.lease()
            self._leases.append(gate)

    def check_target(self, *, new_replica: bool = False) -> None:
        """Refuse (:class:`ReplicaExistsError`) when the target holds a replica of a database that is missing
        here or was never under Litestream: see the module doc. ``new_replica``: start one anyway."""
        if new_replica:
            return
        new = [name for name, path in self.plan.databases.items() if not _under_litestream(path)]
        held = [name for name in new if self._target_holds(name)]
        if held:
            paths = ", ".join(str(self.plan.databases[name]) for name in held)
            raise ReplicaExistsError(
                f"{self.plan.target.describe()} already holds a backup of {' and '.join(held)}, but {paths} here "
                "is missing or new (never replicated, nor restored from a backup): backing it up would make it "
                "the newest backup. Run `notify restore` from that target first, or pass --new-replica if a "
                "new database is meant to replace the backed-up one"
            )

    def _target_holds(self, name: str) -> bool:
        return any(True for _ in self._blobs.list(f"{name}/"))

    def _ensure_databases(self, *, new_replica: bool) -> None:
        """Litestream replicates a file that exists: create an empty WAL database where none is yet (after
        :meth:`check_target`: never one that would replace a backed-up database)."""
        self.check_target(new_replica=new_replica)
        for path in self.plan.databases.values():
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                with closing(sqlite3.connect(path)) as conn:
                    conn.execute("PRAGMA journal_mode=WAL")
                os.chmod(path, 0o600)

    def once(self, *, new_replica: bool = False) -> FilesReport:
        """One sync of the databases and one file snapshot (``notify backup --once``)."""
        self._lease_databases()
        self._ensure_databases(new_replica=new_replica)
        self._warn_master_inside()
        self.litestream.replicate_once()
        if self.keys is not None:
            self.keys.snapshot()
        return self.files.snapshot()

    def run(self, *, stop: threading.Event, interval: float = 10.0, new_replica: bool = False) -> FilesReport:
        """Replicate continuously until ``stop``; a file snapshot every ``interval`` s and a last one at stop.

        A Litestream process that dies is restarted (and logged), and one that runs while its replicas stop
        receiving changes is an error line and ``notify_backup_replica_behind_seconds`` (:class:`ReplicaLag`,
        looked at each ``interval``): a backup that silently stopped is the failure that only shows on the day
        of the restore.
        """
        self._lease_databases()
        self._ensure_databases(new_replica=new_replica)
        log_path = self.log_path
        if log_path.exists():  # one run's log, and the one before it
            os.replace(log_path, log_path.with_suffix(".log.1"))
        process = self.litestream.start(log_path=log_path)
        log_day = utcnow(self.clock).date().isoformat()
        log.info("backup started",
                 extra={"target": self.plan.target.describe(), "databases": list(self.plan.databases)})
        self._warn_master_inside()
        report = FilesReport()
        lag = ReplicaLag(databases=self.plan.databases, blobs=self._blobs, clock=self.clock,
                         litestream_log=log_path)
        try:
            while True:
                report = self._snapshot_files()
                if process.poll() is not None:
                    log.error("litestream exited; restarting", extra={"returncode": process.returncode})
                    process = self.litestream.start(log_path=log_path)
                lag.check()
                log_day = self._rotate_log(log_path, log_day)
                if stop.wait(interval):
                    break
            report = self._snapshot_files()
        finally:
            Litestream.stop(process)
        log.info("backup stopped", extra={"files": report.files})
        return report

    def _rotate_log(self, log_path: Path, log_day: str) -> str:
        """Litestream's log kept as the logs are (:data:`LOG_RETENTION_DAYS`): the first tick of a new UTC day
        moves the earlier day's lines aside (:func:`rotate_held_file`: Litestream holds the file open). Before,
        it grew for as long as `notify backup` ran: a "compaction complete" line every 30 s per database
        written, ~1 MB a day. The day it returns is the one the file's lines are now of."""
        day = utcnow(self.clock).date().isoformat()
        if day == log_day:
            return log_day
        try:
            rotate_held_file(log_path, day=day, last_day=log_day, keep_days=LOG_RETENTION_DAYS)
        except OSError as exc:  # a full disk: keep replicating, the log grows a day more
            log.error("litestream log not rotated", extra={"error": str(exc)})
        return day

    def _snapshot_files(self) -> FilesReport:
        """One snapshot of the folders. A failing one (a full target, a flaky bucket) is retried at the next tick
        while Litestream goes on replicating: one error line for the spell and one when it works again, where
        each tick (10 s) logged the same error, and ``notify_backup_files_behind_seconds`` for the alert."""
        now = self.clock.now()
        self._snapshot_keys()
        try:
            report = self.files.snapshot()
        except Exception as exc:
            if self._files_failing_since is None:
                self._files_failing_since = now
                log.error("file snapshot failed; tried again at every tick", extra={"error": str(exc)})
            self._files_failing_since = min(self._files_failing_since, now)  # a clock stepped back: never negative
            FILES_BEHIND.set(now - self._files_failing_since)
            return FilesReport()
        if self._files_failing_since is not None:
            log.warning("file snapshot works again",
                        extra={"failed_for_s": round(now - self._files_failing_since, 1)})
            self._files_failing_since = None
        FILES_BEHIND.set(0)
        if report.manifest is not None:
            log.info("file snapshot", extra={"files": report.files, "uploaded": report.uploaded,
                                             "bytes": report.uploaded_bytes})
        if since(now, self._pruned_at) >= PRUNE_EVERY_S:  # a clock stepped back: at once, not the step later
            self._pruned_at = now
            try:
                manifests, blobs = self.files.prune()
            except Exception as exc:  # as a snapshot: log, keep replicating, try again next hour
                log.error("old file snapshots not removed", extra={"error": str(exc)})
            else:
                if manifests or blobs:
                    log.info("old file snapshots removed", extra={"manifests": manifests, "blobs": blobs})
        return report

    def _snapshot_keys(self) -> None:
        """The keys' bundle when they changed (:mod:`notify_core.backup.keys`); a failure (KMS away, a full
        target) is one error line for the spell and one when it works again, apart from the file snapshot's."""
        if self.keys is None:
            return
        try:
            self.keys.snapshot()
        except Exception as exc:
            if not self._keys_failing:
                self._keys_failing = True
                log.error("key backup failed; tried again at every tick", extra={"error": str(exc)})
            return
        if self._keys_failing:
            self._keys_failing = False
            log.warning("key backup works again")

    def _warn_master_inside(self) -> None:
        if self.plan.master_in_data_dir is not None and self.keys is not None:
            log.warning("the master key is in the data directory: keep a copy of it off this machine, or a restore "
                        "after losing the disk cannot open the backup's keys (sealed personal fields, API keys)",
                        extra={"master_key": str(self.plan.master_in_data_dir)})

    def restore(self, *, at: datetime | None = None, force: bool = False,
                without_keys: bool = False) -> RestoreReport:
        """Bring the data directory back from the backup (see the module doc for the rules), holding its
        databases to this process (``DatabaseInUseError`` naming the processes that have one open)."""
        with ExitStack() as held:
            for path in self.plan.databases.values():
                path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                held.enter_context(write_gate(path).exclusive(what="a restore replaces it"))
            return self._restore(at=at, force=force, without_keys=without_keys)

    def _restore(self, *, at: datetime | None, force: bool, without_keys: bool) -> RestoreReport:
        started = time.monotonic()
        report = RestoreReport()
        store = self.plan.databases["store"]
        if store.exists() and store.stat().st_size > 0 and not force:
            raise ConditionFailedError(
                f"{store} exists: restore into an empty data directory, or pass --force to replace it"
            )
        register = self._newest_register(at=at)  # read before anything is replaced
        # the keys the restored data needs, opened before anything is replaced (refused: nothing is)
        keys = self.keys.fetch(without_keys=without_keys) if self.keys is not None else None
        staged: dict[str, Path] = {}
        try:
            for name, path in self.plan.databases.items():
                staging = self._stage_database(path, at=at)
                if staging is not None:
                    staged[name] = staging
            if "store" not in staged:
                raise NotFoundError(f"the backup at {self.plan.target.describe()} holds no Store")
            report.databases["store"] = "restored"
            install = {"store": staged["store"]}
            positions = _stream_positions(staged["store"])
            for name, path in self.plan.databases.items():
                if name != "store":
                    report.databases[name] = self._judge_log(path, staged.get(name), positions=positions,
                                                             force=force, install=install, name=name)
            try:  # before any database is replaced: a damaged blob fails the restore with nothing replaced
                files = self.files.restore(self.plan.data_dir, at=at)
                report.files, report.files_written, report.files_removed = files.files, files.uploaded, files.removed
            except NotFoundError as exc:
                log.warning("no file snapshot to restore", extra={"error": str(exc)})
            if keys is not None and self.keys is not None:
                report.keys = len(self.keys.install(keys))
            for name, staging in install.items():
                _install(staging, self.plan.databases[name])
                del staged[name]
        finally:
            for staging in staged.values():
                _remove_database_files(staging)
        report.register_entries = len(register)
        report.erasures_reapplied = len(self._reapply(register))
        report.seconds = round(time.monotonic() - started, 3)
        return report

    def _newest_register(self, *, at: datetime | None) -> ErasureRegister:
        """Every erasure known before the restore: the present Store's register (a ``force`` restore replaces
        it) and, for a restore ``at`` a past time, the newest backup's (an erasure made after ``at``)."""
        store = self.plan.databases["store"]
        newest = store.with_name(f"{store.name}.register")
        try:
            register = register_of(_register_items(store))
            if at is not None and self.litestream.restore(store, output=newest, at=None):
                register = register.union(register_of(_register_items(newest)))
            return register
        finally:
            _remove_database_files(newest)

    def _reapply(self, register: ErasureRegister) -> list[str]:
        """The restored Store, files and stream log honour ``register`` and their own register again: users
        erased after the backup's time are erased again, and so is a user whose erasure reached the Store's
        replica but not the last file snapshot (see :func:`notify_core.erasure.reapply_register`). Nothing is
        opened for writing when no register holds an entry (the restored files stay as restored)."""
        store_path = self.plan.databases["store"]
        every = register.union(register_of(_register_items(store_path)))
        if not every.entries:
            return []
        stream_path = self.plan.databases.get("stream")
        stream = LocalLog(stream_path) if stream_path is not None and stream_path.exists() else None
        try:
            with closing(SqliteStore(store_path)) as store:
                erased = reapply_register(store, every, file_roots=[self.plan.data_dir], stream_log=stream)
        finally:
            if stream is not None:
                stream.close()
        if erased:
            log.info("erasures re-applied after the restore", extra={"users": len(erased)})  # never the ids
        return erased

    def _judge_log(self, path: Path, staging: Path | None, *, positions: dict[str, int], force: bool,
                   install: dict[str, Path], name: str) -> str:
        """Keep a present stream log that covers its backup and the restored Store's positions; otherwise
        put its backup in ``install`` (or refuse): see the module doc."""
        if not path.exists():
            if staging is None:
                return "not in backup"
            install[name] = staging
            return "restored"
        needed = dict(positions)
        for topic, mark in (_log_marks(staging) if staging is not None else {}).items():
            needed[topic] = max(needed.get(topic, 0), mark)
        present = _log_marks(path)
        behind = {topic: (present.get(topic, 0), need) for topic, need in needed.items()
                  if present.get(topic, 0) < need}
        if not behind:
            return "kept (present, newer than its backup)"
        gap = ", ".join(f"{topic} ends at offset {have}, needs {need}"
                        for topic, (have, need) in sorted(behind.items()))
        empty = not any(present.values())
        if staging is None:
            if force:
                log.warning("stream log behind the restored Store kept: no backup of it", extra={"behind": gap})
                return f"kept (present, behind the restored Store, no backup of it: {gap})"
            raise StreamLogBehindError(
                f"the stream log {path} is behind the restored Store's positions ({gap}) and the backup holds no "
                "stream log: pass --force to keep it as it is"
            )
        if empty:
            install[name] = staging
            return f"restored (the present log held no record: {gap})"
        if force:
            aside = path.with_name(f"{path.name}.behind-{utcnow(self.clock).strftime('%Y%m%dT%H%M%SZ')}")
            _copy_database(path, aside)
            install[name] = staging
            return f"restored (the present log was behind: {gap}; kept as {aside})"
        raise StreamLogBehindError(
            f"the stream log {path} is present but behind its backup and the restored Store ({gap}): it is not "
            "the log that was backed up. Stop every process that uses it, then remove it (or pass --force: it "
            "is then kept beside as a copy) and restore again"
        )

    def _stage_database(self, path: Path, *, at: datetime | None) -> Path | None:
        """The database's backup restored to ``<path>.restoring`` (None: not in the backup)."""
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        staging = path.with_name(f"{path.name}.restoring")
        _remove_database_files(staging)
        if not self.litestream.restore(path, output=staging, at=at):
            return None
        os.chmod(staging, 0o600)
        return staging


def _remove_database_files(path: Path) -> None:
    for leftover in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        leftover.unlink(missing_ok=True)


def _install(staging: Path, path: Path) -> None:
    """Replace ``path`` (and its WAL, which belongs to the old file) by the restored ``staging``."""
    for stale in (Path(f"{path}-wal"), Path(f"{path}-shm"), Path(f"{staging}-wal"), Path(f"{staging}-shm")):
        stale.unlink(missing_ok=True)
    os.replace(staging, path)


def _copy_database(source: Path, dest: Path) -> None:
    """A consistent copy of a live SQLite file (its WAL included), 0600."""
    os.close(os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
    with closing(sqlite3.connect(source)) as src, closing(sqlite3.connect(dest)) as dst:
        src.backup(dst)


def _under_litestream(path: Path) -> bool:
    """Whether the SQLite file has been replicated by Litestream or restored from a replica: Litestream adds
    ``_litestream_seq`` to the database it replicates, and a restore copies it. A missing, empty or
    unreadable file has not."""
    if not path.is_file() or path.stat().st_size == 0:
        return False
    try:
        with closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=rw", uri=True)) as conn:
            return conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type='table' AND name='_litestream_seq'").fetchone() is not None
    except sqlite3.Error:
        return False


def _log_marks(path: Path) -> dict[str, int]:
    """Each topic's high-water mark (the offset its next record gets) in an embedded stream log file."""
    with closing(sqlite3.connect(path)) as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "topics" not in tables:
            return {}
        has_mark = any(col[1] == "next_offset" for col in conn.execute("PRAGMA table_info(topics)"))
        rows = conn.execute(f"SELECT name, id, {'next_offset' if has_mark else '0'} FROM topics").fetchall()
        marks: dict[str, int] = {}
        for topic, topic_id, mark in rows:
            table = f"log_{int(topic_id)}"
            last = conn.execute(f"SELECT MAX(offset) FROM {table}").fetchone()[0] if table in tables else None
            marks[str(topic)] = max(int(mark), 0 if last is None else int(last) + 1)
        return marks


def _register_items(store: Path) -> list[dict[str, Any]]:
    """The erasure register's items in a Store file, read without writing to it (none: no file, no table)."""
    if not store.exists() or store.stat().st_size == 0:
        return []
    with closing(sqlite3.connect(f"{store.resolve().as_uri()}?mode=ro", uri=True)) as conn:
        if conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (ERASURES,)).fetchone() is None:
            return []
        return [decode_item(body) for (body,) in conn.execute(f'SELECT body FROM "{ERASURES}"')]


def _stream_positions(store: Path) -> dict[str, int]:
    """The furthest position per topic in a Store file's ``stream_positions`` (every group, every partition:
    the embedded log has one per topic)."""
    with closing(sqlite3.connect(store)) as conn:
        if conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?",
                        (STREAM_POSITIONS,)).fetchone() is None:
            return {}
        positions: dict[str, int] = {}
        for (body,) in conn.execute(f'SELECT body FROM "{STREAM_POSITIONS}"'):
            item = decode_item(body)
            topic = str(item["sk"]).rpartition("#")[0]
            positions[topic] = max(positions.get(topic, 0), int(item["position"]))
        return positions


def describe(report: RestoreReport) -> dict[str, Any]:
    return {"databases": report.databases, "files": report.files, "files_written": report.files_written,
            "files_removed": report.files_removed, "register_entries": report.register_entries,
            "erasures_reapplied": report.erasures_reapplied, "keys": report.keys, "seconds": report.seconds}


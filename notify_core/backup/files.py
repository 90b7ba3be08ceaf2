"""Backups of the data directory's files: the lake, landing files and artefacts (index versions).

Content-addressed: each file is stored once as ``files/blobs/<sha256>``, and each snapshot is a small
manifest ``files/manifests/<UTC time>.json`` mapping relative paths to digests. Lake partitions are
rewritten in place and index versions are immutable folders, so most snapshots upload nothing but a
manifest; a snapshot whose files did not change writes nothing at all. Restoring ``--at T`` takes the
newest manifest taken at or before T. Files being written (``*.tmp*``, dot-files) are skipped: every
writer in Notify renames a finished file into place, so what is skipped is never a finished file.

Retention (:meth:`FileBackup.prune`, run hourly by ``notify backup``): manifests older than
:data:`SNAPSHOTS_KEPT_FOR` go, except the newest of them (so ``--at`` the cutoff still restores), and then every
blob no kept manifest names. The Store's own replica keeps far less (Litestream's default retention, 24 h),
so a restore never reaches further back; without it every version of every lake partition, landing file and
index ever backed up stayed in the target for good.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePosixPath

from notify_core.backup.target import BlobStore
from notify_core.clock import Clock, utcnow
from notify_core.errors import NotFoundError, NotifyError

SNAPSHOTS_KEPT_FOR = timedelta(days=7)
"""How far back file snapshots are kept (see the module docstring)."""

MANIFESTS = "files/manifests/"
BLOBS = "files/blobs/"
_STAMP = "%Y%m%dT%H%M%S%fZ"


@dataclass
class FilesReport:
    files: int = 0
    uploaded: int = 0
    uploaded_bytes: int = 0
    manifest: str | None = None  # None: nothing changed since the last snapshot
    removed: int = 0  # restore: files under the backed-up folders that the restored snapshot does not name


def _skipped(path: Path) -> bool:
    return path.name.startswith(".") or ".tmp" in path.name


class FileBackup:
    """Snapshots ``folders`` (relative to ``root``) into a BlobStore, and restores them."""

    def __init__(self, blobs: BlobStore, *, root: Path, folders: Sequence[str], clock: Clock) -> None:
        self.blobs = blobs
        self.root = root
        self.folders = list(folders)
        self.clock = clock
        self._known: set[str] | None = None  # digests already in the target
        self._digests: dict[str, tuple[int, int, str]] = {}  # path -> (mtime_ns, size, sha256)
        self._last: dict[str, str] | None = None

    def _digest(self, path: Path, rel: str) -> str:
        stat = path.stat()
        cached = self._digests.get(rel)
        if cached is not None and cached[:2] == (stat.st_mtime_ns, stat.st_size):
            return cached[2]
        sha = hashlib.sha256()
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                sha.update(chunk)
        digest = sha.hexdigest()
        self._digests[rel] = (stat.st_mtime_ns, stat.st_size, digest)
        return digest

    def snapshot(self) -> FilesReport:
        """Upload new file contents, then a manifest (last: a manifest never names a missing blob)."""
        if self._known is None:
            self._known = {name[len(BLOBS):] for name in self.blobs.list(BLOBS)}
        report = FilesReport()
        manifest: dict[str, str] = {}
        for folder in self.folders:
            base = self.root / folder
            if not base.is_dir():
                continue
            for path in sorted(base.rglob("*")):
                if not path.is_file() or _skipped(path):
                    continue
                rel = path.relative_to(self.root).as_posix()
                try:
                    digest = self._digest(path, rel)
                    if digest not in self._known:
                        self.blobs.put_file(BLOBS + digest, path)
                        self._known.add(digest)
                        report.uploaded += 1
                        report.uploaded_bytes += path.stat().st_size
                except FileNotFoundError:  # replaced or removed while we looked: the next snapshot has it
                    continue
                manifest[rel] = digest
        report.files = len(manifest)
        if manifest != self._last:
            name = f"{MANIFESTS}{utcnow(self.clock).strftime(_STAMP)}.json"
            self.blobs.put_bytes(name, json.dumps({"files": manifest}, sort_keys=True).encode())
            self._last = manifest
            report.manifest = name
        return report

    def prune(self, *, kept_for: timedelta = SNAPSHOTS_KEPT_FOR) -> tuple[int, int]:
        """Remove the manifests taken more than ``kept_for`` ago (by this backup's clock) but the newest of
        them, then the blobs no kept manifest names; returns (manifests, blobs) removed. Manifests go first:
        a run stopped half-way leaves blobs nothing names, never a manifest naming a missing blob."""
        cutoff = utcnow(self.clock) - kept_for
        found = self.manifests()
        old = [name for taken, name in found if taken < cutoff]
        doomed = set(old[:-1])
        named: set[str] = set()
        for _taken, name in found:
            if name in doomed:
                continue
            data = self.blobs.get_bytes(name)
            if data is None:
                continue
            named.update(json.loads(data)["files"].values())
        for name in sorted(doomed):
            self.blobs.delete(name)
        gone = [name for name in self.blobs.list(BLOBS) if name[len(BLOBS):] not in named]
        for name in gone:
            self.blobs.delete(name)
            if self._known is not None:
                self._known.discard(name[len(BLOBS):])
        return len(doomed), len(gone)

    def manifests(self) -> list[tuple[datetime, str]]:
        found = []
        for name in self.blobs.list(MANIFESTS):
            stamp = name[len(MANIFESTS):].removesuffix(".json")
            try:
                found.append((datetime.strptime(stamp, _STAMP).replace(tzinfo=UTC), name))
            except ValueError:
                continue
        return sorted(found)

    def restore(self, dest_root: Path, *, at: datetime | None = None) -> FilesReport:
        """Make the backed-up folders under ``dest_root`` what the newest manifest taken at or before ``at``
        (the newest one if None) says.

        Each blob fetched is hashed again and must match its name (the sha256 of the content): a damaged or
        tampered blob fails the restore before any file is replaced (every blob is fetched into a temporary
        file beside its destination, and renamed into place only once all of them have been checked).
        Files under the backed-up folders (``folders``) that the manifest does not name are then removed:
        a lake partition written after the snapshot would otherwise outlive the Store it no longer matches.
        Symbolic links are never followed out of those folders.
        """
        candidates = [(taken, name) for taken, name in self.manifests() if at is None or taken <= at]
        if not candidates:
            raise NotFoundError("no file snapshot in the backup" + (f" at or before {at.isoformat()}" if at else ""))
        _taken, name = candidates[-1]
        raw = self.blobs.get_bytes(name)
        if raw is None:
            raise NotFoundError(f"file manifest {name} vanished")
        files: dict[str, str] = json.loads(raw)["files"]
        for rel, digest in files.items():
            _check_entry(name, rel, digest)
        report = FilesReport(files=len(files), manifest=name)
        staged: list[tuple[Path, Path]] = []  # (temporary file, destination)
        try:
            for rel, digest in sorted(files.items()):
                dest = dest_root / rel
                if dest.is_file() and not dest.is_symlink() and self._digest(dest, rel) == digest:
                    continue
                tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex}.restore.tmp")
                staged.append((tmp, dest))
                self.blobs.get_file(BLOBS + digest, tmp)
                got = _sha256(tmp)
                if got != digest:
                    raise BackupIntegrityError(
                        f"backup blob {BLOBS}{digest} (for {rel}) is damaged: its content hashes to {got}; "
                        "no file was replaced"
                    )
            for tmp, dest in staged:
                os.replace(tmp, dest)
                report.uploaded += 1  # here: files written
            staged.clear()
        finally:
            for tmp, _dest in staged:
                tmp.unlink(missing_ok=True)
        report.removed = self._prune(dest_root, keep=set(files))
        return report

    def _prune(self, dest_root: Path, *, keep: set[str]) -> int:
        """Remove the files under the backed-up folders that ``keep`` (relative paths) does not name, and the
        folders that this empties; in-progress files (what a snapshot skips) are left. Never follows a link:
        a link is removed itself (never its target), and a linked folder is neither entered nor removed."""
        removed = 0
        for folder in self.folders:
            base = dest_root / folder
            if not base.is_dir():
                continue
            emptied: set[Path] = set()
            for dirpath, _dirnames, filenames in os.walk(base, topdown=False, followlinks=False):
                here = Path(dirpath)
                for filename in filenames:
                    path = here / filename
                    rel = path.relative_to(dest_root).as_posix()
                    if rel in keep or _skipped(path):
                        continue
                    path.unlink(missing_ok=True)
                    self._digests.pop(rel, None)
                    emptied.add(here)
                    removed += 1
                if here in emptied and here != base and not any(here.iterdir()):
                    here.rmdir()
                    emptied.add(here.parent)
        return removed


class BackupIntegrityError(NotifyError):
    """The backup holds something that is not what it claims (a blob whose content does not hash to its
    name, a manifest naming a path outside the data directory): restoring it would write damaged data."""

    http_status = 500


def _sha256(path: Path) -> str:
    sha = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            sha.update(chunk)
    return sha.hexdigest()


_DIGEST = re.compile(r"^[0-9a-f]{64}$")


def _check_entry(manifest: str, rel: str, digest: str) -> None:
    """A manifest entry names a relative path that stays under the data directory, and a sha256."""
    parts = PurePosixPath(rel).parts
    if not parts or rel.startswith("/") or any(part in ("", ".", "..") for part in parts) or "\\" in rel:
        raise BackupIntegrityError(f"file manifest {manifest} names a path outside the data directory: {rel!r}")
    if not _DIGEST.match(digest):
        raise BackupIntegrityError(f"file manifest {manifest} names {rel!r} by an invalid digest {digest!r}")

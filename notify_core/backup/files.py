"""Backups of the data directory's files: the lake, landing files and artefacts (index versions).

Content-addressed: each file is stored once as ``files/blobs/<sha256>``, and each snapshot is a small
manifest ``files/manifests/<UTC time>.json`` mapping relative paths to digests. Lake partitions are
rewritten in place and index versions are immutable folders, so most snapshots upload nothing but a
manifest; a snapshot whose files did not change writes nothing at all. Restoring ``--at T`` takes the
newest manifest taken at or before T. Files being written (``*.tmp*``, dot-files) are skipped: every
writer in Notify renames a finished file into place, so what is skipped is never a finished file.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from notify_core.backup.target import BlobStore
from notify_core.clock import Clock, utcnow
from notify_core.errors import NotFoundError

MANIFESTS = "files/manifests/"
BLOBS = "files/blobs/"
_STAMP = "%Y%m%dT%H%M%S%fZ"


@dataclass
class FilesReport:
    files: int = 0
    uploaded: int = 0
    uploaded_bytes: int = 0
    manifest: str | None = None  # None: nothing changed since the last snapshot


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
        """Write the files of the newest manifest taken at or before ``at`` (the newest one if None)."""
        candidates = [(taken, name) for taken, name in self.manifests() if at is None or taken <= at]
        if not candidates:
            raise NotFoundError("no file snapshot in the backup" + (f" at or before {at.isoformat()}" if at else ""))
        _taken, name = candidates[-1]
        raw = self.blobs.get_bytes(name)
        if raw is None:
            raise NotFoundError(f"file manifest {name} vanished")
        files: dict[str, str] = json.loads(raw)["files"]
        report = FilesReport(files=len(files), manifest=name)
        for rel, digest in files.items():
            dest = dest_root / rel
            if dest.is_file() and self._digest(dest, rel) == digest:
                continue
            self.blobs.get_file(BLOBS + digest, dest)
            report.uploaded += 1  # here: files written
        return report

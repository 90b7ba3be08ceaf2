"""The ArtefactStore port: where built artefacts (ANN index versions, overlays) live.

A tiny port on purpose: the index code writes and reads named blobs and asks for a *local file* to
open. ``LocalArtefactStore`` (the embedded default) is a folder under the data directory;
``S3ArtefactStore`` (aws) keeps the blobs in S3 and materialises them into a local cache folder,
because faiss reads and usearch memory-maps a file, never a stream.

Names are ``/``-separated relative paths (``campaign_index/<version>/index.faiss``). Every write is
atomic from a reader's point of view: a local write goes to a temporary file renamed into place, and
an S3 PUT is atomic by nature, so a reader never sees half a pointer or half an index.
"""

from __future__ import annotations

import fcntl
import shutil
import time
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Protocol, runtime_checkable

from notify_core.atomic import atomic_write
from notify_core.errors import BackendError, ConfigurationError
from notify_core.s3_objects import S3Bucket
from notify_core.settings import NotifySettings


@runtime_checkable
class ArtefactStore(Protocol):
    """Named blobs with atomic writes, listing by prefix and a local path for memory-mapping."""

    def write_bytes(self, name: str, data: bytes) -> None: ...

    def read_bytes(self, name: str) -> bytes | None:
        """The blob, or None when it does not exist."""
        ...

    def update_bytes(self, name: str, change: Callable[[bytes | None], bytes]) -> bytes:
        """Replace the blob by ``change(current)`` (None: absent) with no other update of it, from any
        process, in between, and return what was written: a read then a write lost another process's update
        made meanwhile (two campaign upserts at once kept one in the overlay). ``change`` may run more than
        once (S3 retries it when another write came first)."""
        ...

    def upload(self, name: str, local: Path) -> None:
        """Copy a local file in (how big index files get in without holding them in memory twice)."""
        ...

    def local_file(self, name: str) -> Path:
        """A local path holding the blob (S3: downloaded once into the cache); FileNotFoundError if absent."""
        ...

    def stamp(self, name: str) -> str | None:
        """A cheap change marker (mtime+size, or ETag); None when absent. Used for polling."""
        ...

    def list_dirs(self, prefix: str) -> list[str]:
        """Names of the immediate sub-folders of ``prefix``, sorted."""
        ...

    def remove_dir(self, prefix: str) -> None:
        """Delete every blob under the folder ``prefix`` (and any local copy of them); absent: nothing."""
        ...

    def drop_local_copies(self, prefix: str, *, keep: Collection[str]) -> list[str]:
        """Delete the local copies of the sub-folders of ``prefix`` not in ``keep`` and return their names
        (S3: the cache a serving process fills with each version it loads; local files are the store itself:
        nothing). A file a loaded index still maps stays readable until unmapped (POSIX unlink)."""
        ...


class LocalArtefactStore:
    """Artefacts in a local folder (the embedded default: ``<data_dir>/artefacts``)."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def _path(self, name: str) -> Path:
        return self.root / name

    def write_bytes(self, name: str, data: bytes) -> None:
        atomic_write(self._path(name), lambda tmp: tmp.write_bytes(data))

    def read_bytes(self, name: str) -> bytes | None:
        try:
            return self._path(name).read_bytes()
        except FileNotFoundError:
            return None

    def update_bytes(self, name: str, change: Callable[[bytes | None], bytes]) -> bytes:
        """Read, change and write under an exclusive ``flock`` of a lock file beside the blob: every process
        of this host (the gateway's workers) updates it one at a time."""
        path = self._path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.with_name(f".{path.name}.lock"), "ab") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
            data = change(self.read_bytes(name))
            self.write_bytes(name, data)
        return data

    def upload(self, name: str, local: Path) -> None:
        target = self._path(name)
        if local.resolve() == target.resolve():
            return
        atomic_write(target, lambda tmp: tmp.write_bytes(local.read_bytes()))

    def local_file(self, name: str) -> Path:
        path = self._path(name)
        if not path.exists():
            raise FileNotFoundError(str(path))
        return path

    def stamp(self, name: str) -> str | None:
        try:
            stat = self._path(name).stat()
        except FileNotFoundError:
            return None
        return f"{stat.st_mtime_ns}:{stat.st_size}"

    def list_dirs(self, prefix: str) -> list[str]:
        base = self._path(prefix)
        if not base.is_dir():
            return []
        return sorted(p.name for p in base.iterdir() if p.is_dir() and not p.name.startswith("."))

    def remove_dir(self, prefix: str) -> None:
        path = self._path(prefix)
        if path.is_dir():
            shutil.rmtree(path)

    def drop_local_copies(self, prefix: str, *, keep: Collection[str]) -> list[str]:
        return []  # the files are the store: versions go by prune_versions


UPDATE_TRIES = 20  # S3ArtefactStore.update_bytes: conditional writes tried before giving up


class S3ArtefactStore:
    """Artefacts under ``s3://<bucket>/<prefix>artefacts/``; files to map are cached under ``cache_dir``.

    Versions are immutable (a new build is a new folder), so a cached file never goes stale; only the
    small ``CURRENT`` pointer and the overlay are re-read, by ETag. A serving process keeps at most the version
    it serves and the one it loads (:meth:`drop_local_copies`): a function's ``/tmp`` (2 GB) held each version
    it ever loaded, ~300 MB each at 200k campaigns, until a load failed for want of room.
    """

    def __init__(self, *, bucket: S3Bucket, cache_dir: Path) -> None:
        self.bucket = bucket
        self.cache_dir = Path(cache_dir)

    def write_bytes(self, name: str, data: bytes) -> None:
        self.bucket.put_bytes(name, data)

    def read_bytes(self, name: str) -> bytes | None:
        return self.bucket.get_bytes(name)

    def update_bytes(self, name: str, change: Callable[[bytes | None], bytes]) -> bytes:
        """Read with the object's ETag, change, and write only if the ETag is still that (S3's conditional
        write, If-Match / If-None-Match); another write came first: read again, up to UPDATE_TRIES times."""
        for attempt in range(UPDATE_TRIES):
            current, etag = self.bucket.get_bytes_tagged(name)
            data = change(current)
            if self.bucket.put_bytes_if(name, data, etag=etag):
                return data
            time.sleep(0.01 * (attempt + 1))
        raise BackendError(f"{name}: {UPDATE_TRIES} conditional writes lost to other writers; not updated")

    def upload(self, name: str, local: Path) -> None:
        self.bucket.upload(name, local)

    def local_file(self, name: str) -> Path:
        path = self.cache_dir / name
        if not path.exists():
            try:
                self.bucket.download(name, path)
            except BackendError as exc:
                raise FileNotFoundError(str(exc)) from exc
        return path

    def stamp(self, name: str) -> str | None:
        return self.bucket.etag(name)

    def list_dirs(self, prefix: str) -> list[str]:
        return self.bucket.folders(prefix)

    def remove_dir(self, prefix: str) -> None:
        folder = prefix.rstrip("/") + "/"
        for name, _etag in list(self.bucket.objects(folder)):
            self.bucket.delete(name)
        self.bucket.delete(folder)  # S3: nothing there; a filer-backed server (SeaweedFS) drops the empty folder
        shutil.rmtree(self.cache_dir / prefix, ignore_errors=True)

    def drop_local_copies(self, prefix: str, *, keep: Collection[str]) -> list[str]:
        base = self.cache_dir / prefix
        dropped = sorted(p.name for p in base.iterdir() if p.is_dir() and p.name not in keep) if base.is_dir() else []
        for name in dropped:
            shutil.rmtree(base / name, ignore_errors=True)
        return dropped


def build_artefact_store(settings: NotifySettings) -> ArtefactStore:
    """The one place that maps ``env`` to an artefact backend (files locally, S3 in aws)."""
    if settings.env == "aws":
        if not settings.s3_bucket:
            raise ConfigurationError("the aws environment needs NOTIFY_S3_BUCKET for artefacts")
        bucket = S3Bucket(bucket=settings.s3_bucket, prefix=settings.s3_prefix.rstrip("/") + "/artefacts/",
                          region=settings.aws_region, endpoint_url=settings.s3_endpoint_url)
        return S3ArtefactStore(bucket=bucket, cache_dir=settings.data_dir / "artefact-cache")
    return LocalArtefactStore(settings.data_dir / "artefacts")

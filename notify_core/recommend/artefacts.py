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

import os
import uuid
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from notify_core import s3_objects
from notify_core.atomic import atomic_write
from notify_core.errors import ConfigurationError
from notify_core.settings import NotifySettings


@runtime_checkable
class ArtefactStore(Protocol):
    """Named blobs with atomic writes, listing by prefix and a local path for memory-mapping."""

    def write_bytes(self, name: str, data: bytes) -> None: ...

    def read_bytes(self, name: str) -> bytes | None:
        """The blob, or None when it does not exist."""
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


class S3ArtefactStore:
    """Artefacts under ``s3://<bucket>/<prefix>artefacts/``; files to map are cached under ``cache_dir``.

    Versions are immutable (a new build is a new folder), so a cached file never goes stale; only the
    small ``CURRENT`` pointer and the overlay are re-read, by ETag.
    """

    def __init__(self, *, bucket: str, prefix: str, cache_dir: Path, region: str | None = None,
                 client: Any = None, endpoint_url: str | None = None) -> None:
        self.bucket = bucket
        self.prefix = prefix.rstrip("/") + "/artefacts/"
        self.cache_dir = Path(cache_dir)
        if client is None:
            import boto3  # only where S3 is used

            client = boto3.client("s3", region_name=region, endpoint_url=endpoint_url)
        self._s3 = client

    def _key(self, name: str) -> str:
        return self.prefix + name

    def write_bytes(self, name: str, data: bytes) -> None:
        s3_objects.put_bytes(self._s3, self.bucket, self._key(name), data)

    def read_bytes(self, name: str) -> bytes | None:
        return s3_objects.get_bytes(self._s3, self.bucket, self._key(name))

    def upload(self, name: str, local: Path) -> None:
        s3_objects.upload_file(self._s3, self.bucket, self._key(name), local)

    def local_file(self, name: str) -> Path:
        path = self.cache_dir / name
        if path.exists():
            return path
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        try:
            self._s3.download_file(self.bucket, self._key(name), str(tmp))
        except Exception as exc:
            tmp.unlink(missing_ok=True)
            raise FileNotFoundError(f"s3://{self.bucket}/{self._key(name)}: {exc}") from exc
        os.replace(tmp, path)
        return path

    def stamp(self, name: str) -> str | None:
        try:
            head = self._s3.head_object(Bucket=self.bucket, Key=self._key(name))
        except Exception:
            return None
        return str(head.get("ETag"))

    def list_dirs(self, prefix: str) -> list[str]:
        reply = self._s3.list_objects_v2(Bucket=self.bucket, Prefix=self._key(prefix.rstrip("/") + "/"),
                                         Delimiter="/")
        names = [p["Prefix"].rstrip("/").rsplit("/", 1)[-1] for p in reply.get("CommonPrefixes", [])]
        return sorted(names)


def build_artefact_store(settings: NotifySettings) -> ArtefactStore:
    """The one place that maps ``env`` to an artefact backend (files locally, S3 in aws)."""
    if settings.env == "aws":
        if not settings.s3_bucket:
            raise ConfigurationError("the aws environment needs NOTIFY_S3_BUCKET for artefacts")
        return S3ArtefactStore(bucket=settings.s3_bucket, prefix=settings.s3_prefix,
                               cache_dir=settings.data_dir / "artefact-cache", region=settings.aws_region,
                               endpoint_url=settings.s3_endpoint_url)
    return LocalArtefactStore(settings.data_dir / "artefacts")

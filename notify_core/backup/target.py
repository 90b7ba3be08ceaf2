"""Where backups go: a folder or an S3-compatible bucket, named by one URL.

``/backups/notify`` or ``file:///backups/notify`` is a folder; ``s3://bucket/prefix`` a bucket, with
``?endpoint=http://host:port`` for an S3-compatible server (SeaweedFS, MinIO) and ``&region=...``.
Credentials never appear in the URL: Litestream and boto3 both read ``AWS_ACCESS_KEY_ID`` /
``AWS_SECRET_ACCESS_KEY`` from the environment.

The layout under the target: ``store/`` and ``stream/`` are Litestream replicas (one per SQLite file),
``files/`` holds the lake, landing and artefact files (see :mod:`notify_core.backup.files`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol
from urllib.parse import parse_qs, urlparse

from notify_core.errors import BackendError, ConfigurationError
from notify_core.s3_objects import S3Bucket
from notify_core.security.files import write_private


class BlobStore(Protocol):
    """Named immutable blobs (``/``-separated names) with atomic writes."""

    def put_bytes(self, name: str, data: bytes) -> None: ...

    def get_bytes(self, name: str) -> bytes | None:
        """The blob, or None when absent."""
        ...

    def put_file(self, name: str, source: Path) -> None: ...

    def get_file(self, name: str, dest: Path) -> None:
        """Write the blob to ``dest`` (atomically: a temporary file renamed into place)."""
        ...

    def list(self, prefix: str) -> Iterator[str]:
        """Names under ``prefix`` (recursively), in no particular order."""
        ...

    def delete(self, name: str) -> None:
        """Remove the blob (absent: nothing)."""
        ...


@dataclass(frozen=True, slots=True)
class BackupTarget:
    """A parsed backup URL (see the module doc)."""

    kind: Literal["file", "s3"]
    path: Path | None = None
    bucket: str | None = None
    prefix: str = ""
    endpoint: str | None = None
    region: str = "us-east-1"

    @classmethod
    def parse(cls, url: str) -> BackupTarget:
        if not url:
            raise ConfigurationError("a backup target is needed: a folder or s3://bucket/prefix (NOTIFY_BACKUP_URL)")
        parsed = urlparse(url)
        query = parse_qs(parsed.query)
        endpoint = query.get("endpoint", [None])[0]
        if parsed.scheme and (_has_userinfo(parsed.netloc) or (endpoint is not None
                                                                and _has_userinfo(urlparse(endpoint).netloc))):
            # Never echo the URL: what is before the "@" is a secret (and the message reaches logs and stderr).
            raise ConfigurationError(
                f"backup URL {redact_url(url)!r} carries credentials: they are never accepted in the URL (the "
                "audit log and the process list would keep them); set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY "
                "or AWS_PROFILE in the environment instead"
            )
        if parsed.scheme in ("", "file"):
            path = Path(parsed.path if parsed.scheme == "file" else url).expanduser()
            return cls(kind="file", path=path.resolve())
        if parsed.scheme == "s3":
            if not parsed.netloc:
                raise ConfigurationError(f"backup URL {redact_url(url)!r} names no bucket")
            return cls(
                kind="s3",
                bucket=parsed.netloc,
                prefix=parsed.path.strip("/"),
                endpoint=endpoint,
                region=query.get("region", ["us-east-1"])[0],
            )
        raise ConfigurationError(f"unsupported backup URL {redact_url(url)!r}: use a folder or s3://bucket/prefix")

    def describe(self) -> str:
        """The target for logs and the audit trail: any user info is redacted (``parse`` refuses it, but a
        target built otherwise must not leak one either)."""
        if self.kind == "file":
            return str(self.path)
        bucket = _strip_userinfo(self.bucket or "")
        return f"s3://{bucket}/{self.prefix}" + (f" at {redact_url(self.endpoint)}" if self.endpoint else "")

    def litestream_replica(self, name: str) -> dict[str, Any]:
        """The Litestream replica section for the database called ``name`` (``store``, ``stream``)."""
        if self.kind == "file":
            assert self.path is not None
            return {"type": "file", "path": str(self.path / name)}
        replica: dict[str, Any] = {
            "type": "s3",
            "bucket": self.bucket,
            "path": f"{self.prefix}/{name}".strip("/"),
            "region": self.region,
        }
        if self.endpoint:
            replica |= {"endpoint": self.endpoint, "force-path-style": True}
        return replica

    def blobs(self) -> BlobStore:
        if self.kind == "file":
            assert self.path is not None
            return FolderBlobs(self.path)
        from notify_core.backup.s3 import S3Blobs

        assert self.bucket is not None
        prefix = f"{self.prefix.strip('/')}/" if self.prefix.strip("/") else ""
        return S3Blobs(S3Bucket(bucket=self.bucket, prefix=prefix, endpoint_url=self.endpoint, region=self.region))


class FolderBlobs:
    """Blobs as files under a folder (0700 folders, 0600 files: backups hold personal data)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, name: str) -> Path:
        return self.root / name

    def _write(self, name: str, data: bytes) -> None:
        write_private(self._path(name), data)

    def put_bytes(self, name: str, data: bytes) -> None:
        self._write(name, data)

    def get_bytes(self, name: str) -> bytes | None:
        try:
            return self._path(name).read_bytes()
        except FileNotFoundError:
            return None

    def put_file(self, name: str, source: Path) -> None:
        self._write(name, source.read_bytes())

    def get_file(self, name: str, dest: Path) -> None:
        try:
            data = self._path(name).read_bytes()
        except FileNotFoundError:
            raise BackendError(f"backup blob {name} is missing from {self.root}") from None
        write_private(dest, data)

    def list(self, prefix: str) -> Iterator[str]:
        base = self._path(prefix)
        if not base.is_dir():
            return
        for path in base.rglob("*"):
            if path.is_file() and not path.name.startswith("."):
                yield path.relative_to(self.root).as_posix()

    def delete(self, name: str) -> None:
        self._path(name).unlink(missing_ok=True)


def _has_userinfo(netloc: str) -> bool:
    return "@" in netloc


def _strip_userinfo(netloc: str) -> str:
    return f"***@{netloc.rpartition('@')[2]}" if "@" in netloc else netloc


def redact_url(url: str) -> str:
    """``url`` with the user info of its authority (``user:secret@``) replaced by ``***``, and a query that
    holds an ``@`` (an endpoint with user info) left out."""
    parsed = urlparse(url)
    return parsed._replace(netloc=_strip_userinfo(parsed.netloc),
                           query="..." if "@" in parsed.query else parsed.query).geturl()


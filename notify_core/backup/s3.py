"""The S3 adapter of the backup BlobStore, on the shared :class:`notify_core.s3_objects.S3Bucket`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from notify_core.errors import BackendError
from notify_core.s3_objects import S3Bucket
from notify_core.security.files import write_private


class S3Blobs:
    """Blobs under ``s3://<bucket>/<prefix>/``; path-style addressing when an endpoint is given."""

    def __init__(self, bucket: S3Bucket) -> None:
        self.bucket = bucket

    def put_bytes(self, name: str, data: bytes) -> None:
        self.bucket.put_bytes(name, data)

    def get_bytes(self, name: str) -> bytes | None:
        return self.bucket.get_bytes(name)

    def put_file(self, name: str, source: Path) -> None:
        self.bucket.upload(name, source)

    def get_file(self, name: str, dest: Path) -> None:
        data = self.get_bytes(name)
        if data is None:
            raise BackendError(f"backup blob {name} is missing from {self.bucket.url()}")
        write_private(dest, data)  # 0600: a backup holds personal data

    def list(self, prefix: str) -> Iterator[str]:
        for name, _etag in self.bucket.objects(prefix):
            yield name

    def delete(self, name: str) -> None:
        self.bucket.delete(name)

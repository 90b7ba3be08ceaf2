"""The S3 adapter of the backup BlobStore (boto3, imported here only)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from notify_core import s3_objects
from notify_core.backup.target import write_private
from notify_core.errors import BackendError


class S3Blobs:
    """Blobs under ``s3://<bucket>/<prefix>/``; path-style addressing when an endpoint is given."""

    def __init__(self, *, bucket: str, prefix: str, endpoint: str | None, region: str, client: Any = None) -> None:
        self.bucket = bucket
        self.prefix = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
        if client is None:
            import boto3
            from botocore.config import Config

            client = boto3.client(
                "s3", endpoint_url=endpoint, region_name=region,
                config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 5}),
            )
        self._s3 = client

    def _key(self, name: str) -> str:
        return self.prefix + name

    def put_bytes(self, name: str, data: bytes) -> None:
        s3_objects.put_bytes(self._s3, self.bucket, self._key(name), data)

    def get_bytes(self, name: str) -> bytes | None:
        return s3_objects.get_bytes(self._s3, self.bucket, self._key(name))

    def put_file(self, name: str, source: Path) -> None:
        s3_objects.upload_file(self._s3, self.bucket, self._key(name), source)

    def get_file(self, name: str, dest: Path) -> None:
        data = self.get_bytes(name)
        if data is None:
            raise BackendError(f"backup blob {name} is missing from s3://{self.bucket}/{self.prefix}")
        write_private(dest, data)

    def list(self, prefix: str) -> Iterator[str]:
        paginator = self._s3.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self._key(prefix)):
                for item in page.get("Contents", []):
                    yield str(item["Key"])[len(self.prefix):]
        except Exception as exc:
            raise BackendError(f"S3 list {prefix} failed: {exc}") from exc


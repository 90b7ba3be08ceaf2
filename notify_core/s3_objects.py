"""The S3 adapter: one bucket and key prefix, with botocore errors turned into ``BackendError``.

Every S3 user in Notify (the landing area, the index artefacts, the backup blobs) goes through
:class:`S3Bucket`, and :func:`s3_client` is the one place a boto3 S3 client is built, so the domain
modules import no SDK and agree on addressing (path-style for a custom endpoint such as SeaweedFS,
virtual-hosted on AWS) and retries. Writes of files go through a temporary name and ``os.replace``:
a download cut short never leaves a half file under the real name.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from notify_core.errors import BackendError


def s3_client(*, region: str | None, endpoint_url: str | None) -> Any:
    """A boto3 S3 client; path-style addressing when ``endpoint_url`` names an S3-compatible server."""
    import boto3  # only where S3 is used
    from botocore.config import Config

    config = Config(s3={"addressing_style": "path"} if endpoint_url else {}, retries={"max_attempts": 5})
    return boto3.client("s3", region_name=region, endpoint_url=endpoint_url, config=config)


NULL_VERSION = "null"  # S3's id of a version written while versioning was off (never enabled, or suspended)


@dataclass(frozen=True, slots=True)
class ObjectVersion:
    """One stored version of an object."""

    name: str  # relative to the bucket prefix
    version_id: str  # NULL_VERSION: written while versioning was off
    latest: bool


class S3Bucket:
    """Objects under ``s3://<bucket>/<prefix>``; names passed to the methods are relative to the prefix."""

    def __init__(self, *, bucket: str, prefix: str = "", client: Any = None, region: str | None = None,
                 endpoint_url: str | None = None) -> None:
        self.bucket = bucket
        self.prefix = prefix
        self.client: Any = client if client is not None else s3_client(region=region, endpoint_url=endpoint_url)

    def key(self, name: str) -> str:
        return self.prefix + name

    def url(self, name: str = "") -> str:
        return f"s3://{self.bucket}/{self.key(name)}"

    def put_bytes(self, name: str, data: bytes) -> str:
        """Write the object; returns the version it became (``"null"`` on a bucket without versioning, or
        with versioning suspended: the put then replaced the null version in place)."""
        try:
            reply = self.client.put_object(Bucket=self.bucket, Key=self.key(name), Body=data)
        except Exception as exc:  # botocore errors: retryable from the caller's point of view
            raise BackendError(f"S3 put {self.url(name)} failed: {exc}") from exc
        return str(reply.get("VersionId") or NULL_VERSION)

    def get_bytes(self, name: str, *, version_id: str | None = None) -> bytes | None:
        """The object's bytes (its latest version, or ``version_id``), or None when there is no such key."""
        extra = {"VersionId": version_id} if version_id is not None else {}
        try:
            reply = self.client.get_object(Bucket=self.bucket, Key=self.key(name), **extra)
        except Exception as exc:
            if getattr(exc, "response", {}).get("Error", {}).get("Code") in ("NoSuchKey", "NoSuchVersion"):
                return None
            raise BackendError(f"S3 get {self.url(name)} failed: {exc}") from exc
        body: bytes = reply["Body"].read()
        return body

    def get_bytes_tagged(self, name: str) -> tuple[bytes | None, str | None]:
        """The object's bytes and the ETag they have, or ``(None, None)`` when there is no such key: what
        :meth:`put_bytes_if` compares against."""
        try:
            reply = self.client.get_object(Bucket=self.bucket, Key=self.key(name))
        except Exception as exc:
            if getattr(exc, "response", {}).get("Error", {}).get("Code") == "NoSuchKey":
                return None, None
            raise BackendError(f"S3 get {self.url(name)} failed: {exc}") from exc
        body: bytes = reply["Body"].read()
        return body, str(reply.get("ETag"))

    def put_bytes_if(self, name: str, data: bytes, *, etag: str | None) -> bool:
        """Write the object only if its ETag is still ``etag`` (None: only if there is none), S3's conditional
        write; False when another write came first (the caller reads again and retries)."""
        condition = {"IfMatch": etag} if etag is not None else {"IfNoneMatch": "*"}
        try:
            self.client.put_object(Bucket=self.bucket, Key=self.key(name), Body=data, **condition)
        except Exception as exc:
            if getattr(exc, "response", {}).get("Error", {}).get("Code") in (
                    "PreconditionFailed", "ConditionalRequestConflict"):
                return False
            raise BackendError(f"S3 put {self.url(name)} failed: {exc}") from exc
        return True

    def upload(self, name: str, source: Path) -> None:
        try:
            self.client.upload_file(str(source), self.bucket, self.key(name))
        except Exception as exc:
            raise BackendError(f"S3 upload {self.url(name)} failed: {exc}") from exc

    def download(self, name: str, dest: Path) -> None:
        """The object into ``dest`` (atomically); ``BackendError`` when missing or unreachable."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex}.tmp")
        try:
            self.client.download_file(self.bucket, self.key(name), str(tmp))
        except Exception as exc:
            tmp.unlink(missing_ok=True)
            raise BackendError(f"S3 download {self.url(name)} failed: {exc}") from exc
        os.replace(tmp, dest)

    def etag(self, name: str) -> str | None:
        """The object's ETag, or None when it is missing (or S3 cannot say)."""
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self.key(name))
        except Exception:
            return None
        return str(head.get("ETag"))

    def objects(self, prefix: str) -> Iterator[tuple[str, str]]:
        """``(name relative to the bucket prefix, ETag)`` of every object under ``prefix`` (paginated)."""
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket,
                                                                              Prefix=self.key(prefix)):
                for item in page.get("Contents", []):
                    yield str(item["Key"])[len(self.prefix):], str(item.get("ETag", ""))
        except Exception as exc:
            raise BackendError(f"S3 list {self.url(prefix)} failed: {exc}") from exc

    def versions(self, prefix: str) -> Iterator[ObjectVersion]:
        """Every stored version of every object under ``prefix``, the noncurrent ones of a versioned bucket
        included (delete markers are not versions: they hold no data)."""
        try:
            for page in self.client.get_paginator("list_object_versions").paginate(Bucket=self.bucket,
                                                                                   Prefix=self.key(prefix)):
                for item in page.get("Versions", []):
                    yield ObjectVersion(name=str(item["Key"])[len(self.prefix):], latest=bool(item.get("IsLatest")),
                                        version_id=str(item.get("VersionId") or NULL_VERSION))
        except Exception as exc:
            raise BackendError(f"S3 list versions {self.url(prefix)} failed: {exc}") from exc

    def delete_version(self, name: str, version_id: str) -> None:
        """Delete one version for good (not a delete marker): what a versioned bucket keeps after a rewrite."""
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self.key(name), VersionId=version_id)
        except Exception as exc:
            raise BackendError(f"S3 delete {self.url(name)} version {version_id} failed: {exc}") from exc

    def delete(self, name: str) -> None:
        """Delete an object (a versioned bucket keeps its older versions, as its lifecycle rules say)."""
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self.key(name))
        except Exception as exc:
            raise BackendError(f"S3 delete {self.url(name)} failed: {exc}") from exc

    def folders(self, prefix: str) -> list[str]:
        """The names of the "folders" directly under ``prefix`` (common prefixes), sorted."""
        base = self.key(prefix.rstrip("/") + "/")
        try:
            reply = self.client.list_objects_v2(Bucket=self.bucket, Prefix=base, Delimiter="/")
        except Exception as exc:
            raise BackendError(f"S3 list {self.url(prefix)} failed: {exc}") from exc
        return sorted(p["Prefix"].rstrip("/").rsplit("/", 1)[-1] for p in reply.get("CommonPrefixes", []))

"""Bytes and files in one S3 bucket, with botocore errors turned into ``BackendError``.

The one copy of the get/put/upload calls that the S3 adapters (index artefacts, backup blobs) share. The
boto3 client is built by the adapter and passed in, so this module imports no SDK.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from notify_core.errors import BackendError


def put_bytes(client: Any, bucket: str, key: str, data: bytes) -> None:
    try:
        client.put_object(Bucket=bucket, Key=key, Body=data)
    except Exception as exc:  # botocore errors: retryable from the caller's point of view
        raise BackendError(f"S3 put {key} failed: {exc}") from exc


def get_bytes(client: Any, bucket: str, key: str) -> bytes | None:
    """The object's bytes, or None when there is no such key."""
    try:
        reply = client.get_object(Bucket=bucket, Key=key)
    except client.exceptions.NoSuchKey:
        return None
    except Exception as exc:
        raise BackendError(f"S3 get {key} failed: {exc}") from exc
    body: bytes = reply["Body"].read()
    return body


def upload_file(client: Any, bucket: str, key: str, source: Path) -> None:
    try:
        client.upload_file(str(source), bucket, key)
    except Exception as exc:
        raise BackendError(f"S3 upload {key} failed: {exc}") from exc

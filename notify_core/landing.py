"""The landing area: where batch files land and bad rows are quarantined, for each environment.

Ingestion reads landing files and writes quarantine files in local folders (polars and great
expectations work on files). Locally those folders *are* the landing area. In aws the area is the S3
prefix (``s3://<bucket>/<prefix>/landing/<dataset>/`` and ``.../quarantine/<dataset>/``), so a file
dropped there by a consumer pod, another job or a person reaches ingestion wherever it runs: ingestion
first :meth:`~LandingArea.pull`\\ s the prefix into its local folder (only objects whose ETag changed),
and writers :meth:`~LandingArea.push` what they wrote. The S3 prefix is the truth; the local folders
are a cache any run can rebuild.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import uuid
from pathlib import Path
from typing import Any, Protocol

from notify_core.errors import BackendError
from notify_core.settings import NotifySettings

log = logging.getLogger(__name__)
ETAGS_FILE = ".s3-etags.json"
SUFFIXES = (".csv", ".parquet")
NO_FILES = "none"  # the fingerprint of a dataset with no landing files (and of one never ingested)


class LandingArea(Protocol):
    """Local folders for landing and quarantine files, kept in step with where they really live."""

    landing: Path
    quarantine: Path

    def pull(self) -> list[str]:
        """Bring landing files written elsewhere into :attr:`landing`; returns the names fetched."""
        ...

    def push(self, *, quarantine: bool = False) -> list[str]:
        """Publish the files written locally (landing, or quarantine) where they really live."""
        ...

    def fingerprint(self, *, dataset: str | None = None) -> str:
        """Changes whenever a landing file is added or changed (what the landing sensor watches).

        With ``dataset``, only that dataset's files count (``NO_FILES`` when it has none), so the
        sensor ingests only the datasets that changed."""
        ...


def _local_files(root: Path) -> list[Path]:
    if not root.exists():
        return []
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in SUFFIXES and not p.name.startswith("."))


class LocalLandingArea:
    """The embedded default: the folders are the area; pull and push have nothing to do."""

    def __init__(self, *, landing: Path, quarantine: Path) -> None:
        self.landing, self.quarantine = landing, quarantine

    def pull(self) -> list[str]:
        return []

    def push(self, *, quarantine: bool = False) -> list[str]:
        return []

    def fingerprint(self, *, dataset: str | None = None) -> str:
        files = _local_files(self.landing / dataset if dataset else self.landing)
        if dataset and not files:
            return NO_FILES
        digest = hashlib.sha256()
        for path in files:
            stat = path.stat()
            digest.update(f"{path.relative_to(self.landing)}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
        return digest.hexdigest()[:16]


class S3LandingArea:
    """aws: the area is ``landing/`` and ``quarantine/`` under the S3 prefix, mirrored into local folders."""

    def __init__(self, *, bucket: str, prefix: str, landing: Path, quarantine: Path, client: Any) -> None:
        self.bucket = bucket
        self.prefix = prefix.rstrip("/") + "/"
        self.landing, self.quarantine = landing, quarantine
        self._s3 = client

    def _objects(self, folder: str) -> dict[str, str]:
        """``{relative name: ETag}`` of every landing/quarantine object (paginated)."""
        found: dict[str, str] = {}
        base = f"{self.prefix}{folder}/"
        try:
            for page in self._s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=base):
                for obj in page.get("Contents", []):
                    name = obj["Key"][len(base):]
                    if name.endswith(SUFFIXES) and not name.rsplit("/", 1)[-1].startswith("."):
                        found[name] = str(obj["ETag"])
        except Exception as exc:  # botocore errors: the caller's run fails and retries
            raise BackendError(f"S3 list s3://{self.bucket}/{base} failed: {exc}") from exc
        return found

    def _etags(self, root: Path) -> dict[str, str]:
        try:
            data: dict[str, str] = json.loads((root / ETAGS_FILE).read_text())
            return data
        except (FileNotFoundError, ValueError):
            return {}

    def _save_etags(self, root: Path, etags: dict[str, str]) -> None:
        root.mkdir(parents=True, exist_ok=True)
        tmp = root / f".{ETAGS_FILE}.{uuid.uuid4().hex}.tmp"
        tmp.write_text(json.dumps(etags, sort_keys=True))
        os.replace(tmp, root / ETAGS_FILE)

    def pull(self) -> list[str]:
        remote = self._objects("landing")
        known = self._etags(self.landing)
        fetched = []
        for name, etag in sorted(remote.items()):
            target = self.landing / name
            if known.get(name) == etag and target.exists():
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
            try:
                self._s3.download_file(self.bucket, f"{self.prefix}landing/{name}", str(tmp))
            except Exception as exc:
                tmp.unlink(missing_ok=True)
                raise BackendError(f"S3 download landing/{name} failed: {exc}") from exc
            os.replace(tmp, target)
            known[name] = etag
            fetched.append(name)
        self._save_etags(self.landing, known)
        if fetched:
            log.info("landing files pulled", extra={"files": len(fetched), "bucket": self.bucket})
        return fetched

    def push(self, *, quarantine: bool = False) -> list[str]:
        folder, root = ("quarantine", self.quarantine) if quarantine else ("landing", self.landing)
        remote = self._objects(folder)
        known = self._etags(root)
        pushed = []
        for path in _local_files(root):
            name = path.relative_to(root).as_posix()
            stamp = f"local:{path.stat().st_size}:{path.stat().st_mtime_ns}"
            if name in remote and known.get(name) in (remote[name], stamp):
                continue  # already there: fetched from S3, or pushed since it last changed
            try:
                self._s3.upload_file(str(path), self.bucket, f"{self.prefix}{folder}/{name}")
            except Exception as exc:
                raise BackendError(f"S3 upload {folder}/{name} failed: {exc}") from exc
            known[name] = stamp
            pushed.append(name)
        self._save_etags(root, known)
        return pushed

    def fingerprint(self, *, dataset: str | None = None) -> str:
        objects = {name: etag for name, etag in self._objects("landing").items()
                   if dataset is None or name.startswith(f"{dataset}/")}
        if dataset and not objects:
            return NO_FILES
        digest = hashlib.sha256()
        for name, etag in sorted(objects.items()):
            digest.update(f"{name}:{etag}\n".encode())
        return digest.hexdigest()[:16]


def s3_client(settings: NotifySettings) -> Any:
    """A boto3 S3 client for the settings' region and endpoint (path-style for a custom endpoint)."""
    import boto3  # only where S3 is used
    from botocore.config import Config

    config = Config(s3={"addressing_style": "path"}) if settings.s3_endpoint_url else None
    return boto3.client("s3", region_name=settings.aws_region, endpoint_url=settings.s3_endpoint_url, config=config)


def build_landing_area(settings: NotifySettings) -> LandingArea:
    """The one place that maps ``env`` to a landing area (folders locally, the S3 prefix in aws)."""
    if settings.env == "aws" and settings.s3_bucket:
        return S3LandingArea(bucket=settings.s3_bucket, prefix=settings.s3_prefix, landing=settings.landing,
                             quarantine=settings.quarantine_root, client=s3_client(settings))
    return LocalLandingArea(landing=settings.landing, quarantine=settings.quarantine_root)

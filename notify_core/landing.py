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

from notify_core import s3_objects
from notify_core.s3_objects import S3Bucket
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

    def __init__(self, *, bucket: S3Bucket, landing: Path, quarantine: Path) -> None:
        self.bucket = bucket
        self.landing, self.quarantine = landing, quarantine

    def _objects(self, folder: str) -> dict[str, str]:
        """``{relative name: ETag}`` of every landing/quarantine object."""
        base = f"{folder}/"
        return {name[len(base):]: etag for name, etag in self.bucket.objects(base)
                if name.endswith(SUFFIXES) and not name.rsplit("/", 1)[-1].startswith(".")}

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
            self.bucket.download(f"landing/{name}", target)
            known[name] = etag
            fetched.append(name)
        self._save_etags(self.landing, known)
        if fetched:
            log.info("landing files pulled", extra={"files": len(fetched), "bucket": self.bucket.bucket})
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
            self.bucket.upload(f"{folder}/{name}", path)
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
    return s3_objects.s3_client(region=settings.aws_region, endpoint_url=settings.s3_endpoint_url)


def build_landing_area(settings: NotifySettings) -> LandingArea:
    """The one place that maps ``env`` to a landing area (folders locally, the S3 prefix in aws)."""
    if settings.env == "aws" and settings.s3_bucket:
        bucket = S3Bucket(bucket=settings.s3_bucket, prefix=settings.s3_prefix.rstrip("/") + "/",
                          client=s3_client(settings))
        return S3LandingArea(bucket=bucket, landing=settings.landing, quarantine=settings.quarantine_root)
    return LocalLandingArea(landing=settings.landing, quarantine=settings.quarantine_root)

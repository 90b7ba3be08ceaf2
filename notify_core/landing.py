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
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from notify_core import s3_objects
from notify_core.s3_objects import S3Bucket
from notify_core.settings import NotifySettings

log = logging.getLogger(__name__)
ETAGS_FILE = ".s3-etags.json"
SUFFIXES = (".csv", ".parquet")
NO_FILES = "none"  # the fingerprint of a dataset with no landing files (and of one never ingested)
# The order files ``notify consume`` writes (``stream-<content hash>.parquet``, notify_core.events.consumer): derived
# copies of what the Store already holds, one per batch with orders. Once an ingestion has landed one in the lake it
# is retired (:meth:`LandingArea.retire`): kept, they piled up by the thousand a day, and every purchases ingestion
# read all of them again (and the landing sensor stat-ed all of them every 5 s), so each run took longer than the last.
STREAM_FILE_PREFIX = "stream-"


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

    def listing(self, *, dataset: str | None = None) -> dict[str, str]:
        """``{name relative to the landing folder: a change stamp}``: what :meth:`fingerprint` digests
        (:func:`fingerprint_of`)."""
        ...

    def retire(self, names: Sequence[str]) -> list[str]:
        """Remove landing files (relative names) whose rows an ingestion has landed; returns those removed."""
        ...


def fingerprint_of(listing: Mapping[str, str], *, dataset: str | None = None) -> str:
    """The fingerprint of a :meth:`LandingArea.listing` (``NO_FILES`` for a dataset without files)."""
    if dataset and not listing:
        return NO_FILES
    digest = hashlib.sha256()
    for name, stamp in sorted(listing.items()):
        digest.update(f"{name}:{stamp}\n".encode())
    return digest.hexdigest()[:16]


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
        return fingerprint_of(self.listing(dataset=dataset), dataset=dataset)

    def listing(self, *, dataset: str | None = None) -> dict[str, str]:
        out = {}
        for path in _local_files(self.landing / dataset if dataset else self.landing):
            try:
                stat = path.stat()
            except FileNotFoundError:  # retired or replaced while listed
                continue
            out[path.relative_to(self.landing).as_posix()] = f"{stat.st_size}:{stat.st_mtime_ns}"
        return out

    def retire(self, names: Sequence[str]) -> list[str]:
        removed = []
        for name in names:
            path = self.landing / name
            if path.is_file():
                path.unlink(missing_ok=True)
                removed.append(name)
        return removed


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
            if not (name in remote and known.get(name) in (remote[name], stamp)):  # else already there
                self.bucket.upload(f"{folder}/{name}", path)
                known[name] = stamp
                pushed.append(name)
            if not quarantine and path.name.startswith(STREAM_FILE_PREFIX):
                # a consumer's order file: the prefix holds the one copy, which ingestion reads and retires
                # (:meth:`retire`); kept here, a retired one would be pushed again and ingested again
                path.unlink(missing_ok=True)
                known.pop(name, None)
        self._save_etags(root, known)
        return pushed

    def fingerprint(self, *, dataset: str | None = None) -> str:
        return fingerprint_of(self.listing(dataset=dataset), dataset=dataset)

    def listing(self, *, dataset: str | None = None) -> dict[str, str]:
        return {name: etag for name, etag in self._objects("landing").items()
                if dataset is None or name.startswith(f"{dataset}/")}

    def retire(self, names: Sequence[str]) -> list[str]:
        """Remove the objects under the prefix and this machine's copies (pulled by :meth:`pull`). A consumer
        pod keeps no copy of an order file it pushed (:meth:`push`), so a retired one is not pushed again."""
        known = self._etags(self.landing)
        removed = []
        for name in names:
            self.bucket.delete(f"landing/{name}")
            (self.landing / name).unlink(missing_ok=True)
            known.pop(name, None)
            removed.append(name)
        self._save_etags(self.landing, known)
        return removed


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

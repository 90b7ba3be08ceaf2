"""The columnar lake: one Parquet dataset per entity, merged by key, written only where it changed.

Analytics (features, embeddings, evaluation) read here with polars instead of scanning the Store.
Datasets may be partitioned (purchases by month: ``purchases/month=2011-01/data.parquet``) so a delta
touches and reports only the partitions that changed. Writes go to a temporary file renamed into
place, so a crash never leaves a half-written partition. The root is a local folder by default, an
``s3://`` prefix in the aws environment (polars reads and writes object storage natively).
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from notify_core.schemas import KEYS, SCHEMAS
from notify_core.settings import NotifySettings

PARTITION_COLUMN = "_partition"


@dataclass(frozen=True, slots=True)
class MergeResult:
    """What a merge changed: row counts, the partitions rewritten, and the changed rows themselves."""

    inserted: int
    updated: int
    unchanged: int
    partitions_written: tuple[str, ...] = ()
    changed: pl.DataFrame = field(default_factory=pl.DataFrame)  # inserted + updated rows, new values
    previous: pl.DataFrame = field(default_factory=pl.DataFrame)  # old values of updated rows


def partition_expr(dataset: str) -> pl.Expr | None:
    """How a dataset is partitioned; None for small, unpartitioned datasets."""
    if dataset == "purchases":
        return pl.col("ts").dt.strftime("month=%Y-%m")
    return None


class Lake:
    def __init__(self, root: str | Path, *, storage_options: dict[str, str] | None = None) -> None:
        self.root = str(root)
        self._local = not self.root.startswith("s3://")
        self.storage_options = storage_options  # polars/object_store keys (endpoint, region) for s3:// roots

    def s3_filesystem(self) -> tuple[Any, str]:
        """A pyarrow S3 filesystem honouring the endpoint option, and the root's path inside it."""
        from pyarrow import fs

        bucket_path = self.root.removeprefix("s3://")
        options = self.storage_options or {}
        if "aws_endpoint_url" not in options:
            s3, path = fs.FileSystem.from_uri(self.root)
            return s3, path
        endpoint = options["aws_endpoint_url"]
        scheme, _, host = endpoint.partition("://")
        return fs.S3FileSystem(endpoint_override=host, scheme=scheme, region=options.get("aws_region"),
                               force_virtual_addressing=False), bucket_path

    def _file_exists(self, path: str) -> bool:
        if self._local:
            return Path(path).exists()
        from pyarrow import fs

        s3, root = self.s3_filesystem()
        info = s3.get_file_info(root + path.removeprefix(self.root))
        return bool(info.type == fs.FileType.File)

    def _path(self, dataset: str, partition: str | None = None) -> str:
        parts = [self.root, dataset] + ([partition] if partition else []) + ["data.parquet"]
        return "/".join(parts)

    def partitions(self, dataset: str) -> list[str]:
        if not self._local:
            from pyarrow import fs

            s3, root = self.s3_filesystem()
            infos = s3.get_file_info(fs.FileSelector(f"{root}/{dataset}", allow_not_found=True))
            return sorted(i.base_name for i in infos if i.type == fs.FileType.Directory)
        base = Path(self.root, dataset)
        return sorted(p.name for p in base.iterdir() if p.is_dir() and (p / "data.parquet").exists()) \
            if base.exists() else []

    def exists(self, dataset: str) -> bool:
        if partition_expr(dataset) is not None:
            return bool(self.partitions(dataset))
        return self._file_exists(self._path(dataset))

    def scan(self, dataset: str) -> pl.LazyFrame:
        """A lazy view of the whole dataset (empty, with its schema, if nothing was written yet)."""
        schema = SCHEMAS[dataset]
        if not self.exists(dataset):
            return pl.LazyFrame(schema=schema)
        if partition_expr(dataset) is not None:
            return pl.scan_parquet(f"{self.root}/{dataset}/*/data.parquet", hive_partitioning=False,
                                   storage_options=self.storage_options)
        return pl.scan_parquet(self._path(dataset), storage_options=self.storage_options)

    def read(self, dataset: str, *, partition: str | None = None) -> pl.DataFrame:
        if partition is not None:
            return pl.read_parquet(self._path(dataset, partition), storage_options=self.storage_options)
        return self.scan(dataset).collect()

    def _write(self, frame: pl.DataFrame, path: str) -> None:
        if not self._local:
            frame.write_parquet(path, compression="zstd", statistics=True, storage_options=self.storage_options)
            return
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
        frame.write_parquet(tmp, compression="zstd", statistics=True)
        os.replace(tmp, target)

    def merge(self, dataset: str, incoming: pl.DataFrame) -> MergeResult:
        """Upsert ``incoming`` rows by the dataset's key; rewrite only partitions that changed."""
        keys = list(KEYS[dataset])
        schema = SCHEMAS[dataset]
        columns = list(schema)
        incoming = incoming.select(columns).unique(subset=keys, keep="last", maintain_order=True)
        current = self.read(dataset) if self.exists(dataset) else pl.DataFrame(schema=schema)
        current = current.select(columns)

        hashed_new = incoming.with_columns(incoming.hash_rows(seed=1).alias("_h"))
        hashed_old = current.with_columns(current.hash_rows(seed=1).alias("_h")).select(*keys, "_h")
        joined = hashed_new.join(hashed_old, on=keys, how="left", suffix="_old", nulls_equal=True)
        is_new = pl.col("_h_old").is_null()
        is_changed = ~is_new & (pl.col("_h") != pl.col("_h_old"))
        inserted = joined.filter(is_new)
        updated = joined.filter(is_changed)
        changed = pl.concat([inserted, updated]).select(columns)
        previous = current.join(updated.select(keys), on=keys, how="semi", nulls_equal=True)
        result_counts = (inserted.height, updated.height, incoming.height - inserted.height - updated.height)
        if changed.is_empty():
            return MergeResult(*result_counts, changed=changed, previous=previous)

        merged = pl.concat([current.join(changed.select(keys), on=keys, how="anti", nulls_equal=True), changed])
        part = partition_expr(dataset)
        written: list[str] = []
        if part is None:
            self._write(merged.sort(keys), self._path(dataset))
        else:
            touched = set(pl.concat([changed, previous]).select(part.alias("p"))["p"].to_list())
            merged = merged.with_columns(part.alias(PARTITION_COLUMN))
            for name in sorted(touched):
                rows = merged.filter(pl.col(PARTITION_COLUMN) == name).drop(PARTITION_COLUMN)
                self._write(rows.sort(keys), self._path(dataset, name))
                written.append(name)
        return MergeResult(*result_counts, partitions_written=tuple(written), changed=changed, previous=previous)

    def write_table(self, name: str, frame: pl.DataFrame) -> bool:
        """Write a derived table (features, matrix) whole; returns False when its content is unchanged."""
        path = self._path(name)
        if self._file_exists(path):
            old = pl.read_parquet(path, storage_options=self.storage_options)
            if old.schema == frame.schema and old.equals(frame):
                return False
        self._write(frame, path)
        return True

    def read_table(self, name: str) -> pl.DataFrame:
        return pl.read_parquet(self._path(name), storage_options=self.storage_options)


def lake_for(settings: NotifySettings) -> Lake:
    """The lake of an environment: a folder locally, the S3 prefix (and its endpoint) in aws."""
    return Lake(settings.lake_root, storage_options=settings.s3_storage_options if settings.env == "aws" else None)

"""The columnar lake: one Parquet dataset per entity, merged by key, written only where it changed.

Analytics (features, embeddings, evaluation) read here with polars instead of scanning the Store.
Datasets may be partitioned (purchases by month: ``purchases/month=2011-01/data.parquet``) so a delta
touches and reports only the partitions that changed. Writes go to a temporary file renamed into
place, so a crash never leaves a half-written partition. The root is a local folder by default, an
``s3://`` prefix in the aws environment (polars reads and writes object storage natively).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from notify_core.atomic import atomic_write, sweep_temporaries
from notify_core.schemas import KEYS, SCHEMAS
from notify_core.settings import NotifySettings

PARTITION_COLUMN = "_partition"
WHOLE = "all"  # the one partition name of an unpartitioned dataset


@dataclass(frozen=True, slots=True)
class MergeResult:
    """What a merge changed: row counts, the partitions rewritten, and the changed rows themselves."""

    inserted: int
    updated: int
    unchanged: int
    partitions_written: tuple[str, ...] = ()
    changed: pl.DataFrame = field(default_factory=pl.DataFrame)  # inserted + updated rows, new values
    previous: pl.DataFrame = field(default_factory=pl.DataFrame)  # old values of updated rows


@dataclass(frozen=True, slots=True)
class MergePlan:
    """A merge computed but not yet written (see :meth:`Lake.plan_merge`)."""

    dataset: str
    inserted: int
    updated: int
    unchanged: int
    current: pl.DataFrame  # the dataset before the merge
    merged: pl.DataFrame  # the dataset after it
    changed: pl.DataFrame  # inserted + updated rows, new values
    previous: pl.DataFrame  # old values of updated rows
    touched: tuple[str, ...] = ()  # partitions the merge rewrites (partitioned datasets)

    def partitions(self, frame: pl.DataFrame) -> dict[str, pl.DataFrame]:
        """``frame`` split by this dataset's partitions (``{WHOLE: frame}`` when unpartitioned)."""
        part = partition_expr(self.dataset)
        if part is None:
            return {WHOLE: frame}
        tagged = frame.with_columns(part.alias(PARTITION_COLUMN))
        return {str(name[0]): rows.drop(PARTITION_COLUMN)
                for name, rows in tagged.partition_by(PARTITION_COLUMN, as_dict=True).items()}


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
        atomic_write(Path(path), lambda tmp: frame.write_parquet(tmp, compression="zstd", statistics=True))

    def plan_merge(self, dataset: str, incoming: pl.DataFrame) -> MergePlan:
        """What upserting ``incoming`` by the dataset's key would change, without writing anything.

        Callers that mirror the lake elsewhere (the Store) write there first and :meth:`commit` last,
        so the lake never records rows as landed before the mirror holds them.
        """
        keys = list(KEYS[dataset])
        schema = SCHEMAS[dataset]
        columns = list(schema)
        sweep_temporaries(Path(self.root, dataset)) if self._local else None  # a killed writer's leftovers
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
        merged = pl.concat([current.join(changed.select(keys), on=keys, how="anti", nulls_equal=True), changed]) \
            if not changed.is_empty() else current
        part = partition_expr(dataset)
        touched = set() if part is None or changed.is_empty() else \
            set(pl.concat([changed, previous]).select(part.alias("p"))["p"].to_list())
        return MergePlan(dataset=dataset, inserted=inserted.height, updated=updated.height,
                         unchanged=incoming.height - inserted.height - updated.height, current=current,
                         merged=merged, changed=changed, previous=previous, touched=tuple(sorted(touched)))

    def commit(self, plan: MergePlan) -> tuple[str, ...]:
        """Write the partitions a plan changed (each atomically); returns their names."""
        if plan.changed.is_empty():
            return ()
        keys = list(KEYS[plan.dataset])
        if partition_expr(plan.dataset) is None:
            self._write(plan.merged.sort(keys), self._path(plan.dataset))
            return ()
        parts = plan.partitions(plan.merged)
        for name in plan.touched:
            self._write(parts.get(name, plan.merged.head(0)).sort(keys), self._path(plan.dataset, name))
        return plan.touched

    def merge(self, dataset: str, incoming: pl.DataFrame) -> MergeResult:
        """Upsert ``incoming`` rows by the dataset's key; rewrite only partitions that changed."""
        plan = self.plan_merge(dataset, incoming)
        written = self.commit(plan)
        return MergeResult(plan.inserted, plan.updated, plan.unchanged, partitions_written=written,
                           changed=plan.changed, previous=plan.previous)

    def write_table(self, name: str, frame: pl.DataFrame) -> bool:
        """Write a derived table (features, matrix) whole; returns False when its content is unchanged."""
        path = self._path(name)
        if self._local:
            sweep_temporaries(Path(path).parent)  # one writer per derived table: leftovers are a killed run's
        if self._file_exists(path):
            old = pl.read_parquet(path, storage_options=self.storage_options)
            if old.schema == frame.schema and old.equals(frame):
                return False
        self._write(frame, path)
        return True

    def has_table(self, name: str) -> bool:
        """Whether a derived table was written."""
        return self._file_exists(self._path(name))

    def read_table(self, name: str) -> pl.DataFrame:
        return pl.read_parquet(self._path(name), storage_options=self.storage_options)


def lake_for(settings: NotifySettings) -> Lake:
    """The lake of an environment: a folder locally, the S3 prefix (and its endpoint) in aws."""
    return Lake(settings.lake_root, storage_options=settings.s3_storage_options if settings.env == "aws" else None)

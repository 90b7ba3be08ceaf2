"""Batch ingestion: landing files -> validated rows -> lake (merged by key) -> Store (changed rows only).

Idempotent end to end: the lake merge and the Store write both compare before writing, so ingesting
the same files again reports 0 rows written; a changed row replaces its old version in place (and a
purchase whose time or user changed has its old Store key removed). Bad rows never block good ones:
each file is validated on its own, bad rows go to the quarantine folder with their reasons and into
the report, and a file that cannot be read at all is reported as a whole.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from notify_core.clock import Clock, utcnow
from notify_core.errors import ValidationError
from notify_core.ingest.validation import ROW_COLUMN, prepare, validate
from notify_core.lake import Lake
from notify_core.repositories import ITEM_KEYS, WriteCounts, delete_keys, save_frame
from notify_core.schemas import KEYS, SCHEMAS
from notify_core.store.port import Store

log = logging.getLogger(__name__)

DATASETS = ("users", "products", "campaigns", "purchases")
SUFFIXES = (".csv", ".parquet")


@dataclass(frozen=True, slots=True)
class BadRow:
    file: str
    row: int  # 1-based data row within the file (CSV header not counted)
    key: dict[str, Any]
    reason: str


@dataclass(slots=True)
class IngestReport:
    dataset: str
    files: list[str] = field(default_factory=list)
    rows_read: int = 0
    rows_valid: int = 0
    bad_rows: list[BadRow] = field(default_factory=list)
    file_errors: dict[str, str] = field(default_factory=dict)
    lake_inserted: int = 0
    lake_updated: int = 0
    lake_unchanged: int = 0
    partitions_written: tuple[str, ...] = ()
    store: WriteCounts = field(default_factory=WriteCounts)

    @property
    def rows_changed(self) -> int:
        return self.lake_inserted + self.lake_updated

    def as_metadata(self) -> dict[str, Any]:
        return {
            "files": len(self.files), "rows_read": self.rows_read, "rows_valid": self.rows_valid,
            "rows_bad": len(self.bad_rows), "files_failed": len(self.file_errors),
            "lake_inserted": self.lake_inserted, "lake_updated": self.lake_updated,
            "lake_unchanged": self.lake_unchanged, "partitions_written": len(self.partitions_written),
            "store_inserted": self.store.inserted, "store_updated": self.store.updated,
            "store_unchanged": self.store.unchanged, "store_deleted": self.store.deleted,
        }


def landing_files(landing: Path, dataset: str) -> list[Path]:
    folder = landing / dataset
    if not folder.exists():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in SUFFIXES and not p.name.startswith("."))


def read_landing_file(path: Path) -> pl.DataFrame:
    try:
        if path.suffix == ".parquet":
            return pl.read_parquet(path)
        return pl.read_csv(path, infer_schema=False, truncate_ragged_lines=False)
    except Exception as exc:  # polars raises several types for malformed files
        raise ValidationError(f"cannot read {path.name}: {exc}") from exc


def _quarantine(folder: Path, dataset: str, source: Path, bad: pl.DataFrame, raw: pl.DataFrame) -> None:
    """Keep the bad rows as they arrived (all columns as text) with their reasons, for repair and replay."""
    rows = raw.with_row_index(ROW_COLUMN, offset=1).cast({ROW_COLUMN: pl.Int64}).join(
        bad.select(ROW_COLUMN, "reason"), on=ROW_COLUMN)
    target = folder / dataset
    target.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:12]
    rows.cast({c: pl.String for c in rows.columns if c not in (ROW_COLUMN,)}).write_parquet(
        target / f"{source.stem}.{digest}.parquet")


def ingest_dataset(
    dataset: str,
    *,
    landing: Path,
    lake: Lake,
    store: Store,
    quarantine: Path,
    on_file: Callable[[str], None] | None = None,
    full_store_sync: bool = False,
    clock: Clock | None = None,
) -> IngestReport:
    """Ingest every landing file of one dataset. Returns the report; raises only for unusable set-up.

    Even when no landing row changed, ``full_store_sync`` still brings the Store in step with the lake.
    ``clock`` bounds dates from above (``notify_core.bounds.MAX_FUTURE_SKEW`` ahead of it); entry points
    pass ``SYSTEM_CLOCK``; without one only the static ``MAX_DATE`` applies.
    """
    now = utcnow(clock) if clock is not None else None
    if dataset not in DATASETS:
        raise ValidationError(f"unknown dataset {dataset!r}; expected one of {DATASETS}")
    report = IngestReport(dataset=dataset)
    good_parts: list[pl.DataFrame] = []
    for path in landing_files(landing, dataset):
        report.files.append(path.name)
        if on_file:
            on_file(path.name)
        try:
            raw = read_landing_file(path)
            checked = validate(dataset, prepare(dataset, raw), now=now)
        except ValidationError as exc:
            report.file_errors[path.name] = str(exc)
            log.warning("landing file rejected", extra={"dataset": dataset, "file": path.name, "error": str(exc)})
            continue
        report.rows_read += raw.height
        report.rows_valid += checked.good.height
        good_parts.append(checked.good)
        if not checked.bad.is_empty():
            _quarantine(quarantine, dataset, path, checked.bad, raw)
            keys = list(KEYS[dataset])
            for row in checked.bad.iter_rows(named=True):
                report.bad_rows.append(BadRow(path.name, row[ROW_COLUMN], {k: row[k] for k in keys}, row["reason"]))
    if not good_parts:
        return report

    merged = lake.merge(dataset, pl.concat(good_parts, how="vertical_relaxed"))
    report.lake_inserted, report.lake_updated, report.lake_unchanged = merged.inserted, merged.updated, merged.unchanged
    report.partitions_written = merged.partitions_written

    # Only rows the lake saw change go to the Store (compared again there, so a retried run writes
    # nothing twice). ``full_store_sync`` compares every row instead: it repairs a wiped or partial Store.
    rows = lake.read(dataset).select(list(SCHEMAS[dataset])) if full_store_sync else merged.changed
    report.store = save_frame(store, dataset, rows)
    if dataset == "purchases" and not merged.previous.is_empty():
        key = ITEM_KEYS[dataset]
        new_keys = {key(r) for r in merged.changed.iter_rows(named=True) if r["user_id"] is not None}
        stale = [k for r in merged.previous.iter_rows(named=True)
                 if r["user_id"] is not None and (k := key(r)) not in new_keys]
        report.store = report.store + WriteCounts(deleted=delete_keys(store, dataset, stale))
    log.info("ingested", extra={"dataset": dataset, **report.as_metadata()})
    return report

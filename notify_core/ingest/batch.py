"""Batch ingestion: landing files -> validated rows -> Store (changed rows) -> lake (merged by key).

Idempotent and convergent end to end: the Store is written before the lake records rows as landed, a
per-partition ledger repairs whatever the Store lacks (an interrupted run, a full disk, a restore), and
both compare before writing, so ingesting the same files again reports 0 rows written; a changed row
replaces its old version in place (and a purchase whose time or user changed has its old Store key
removed). Bad rows never block good ones:
each file is validated on its own, bad rows go to the quarantine folder with their reasons and into
the report, and a file that cannot be read at all is reported as a whole.

One row per key lands: repeated lines of one order in a purchases file are merged as the event path
merges them (quantities summed, counted as ``rows_merged``); otherwise the later row of a key wins, as a
later run's would, and the report counts the rows it replaced (``rows_superseded``). Nothing vanishes
uncounted.

Erased users stay erased: rows of a user in the erasure register (:func:`notify_core.erasure_register.erased_before`)
dated at or before their erasure are dropped as each file is read, before validation, so they reach neither
the quarantine, the lake nor the Store; the report counts them as ``rows_erased``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from notify_core import bounds
from notify_core.atomic import atomic_write
from notify_core.clock import Clock, utcnow
from notify_core.convergence import PartitionSource, converge, frame_digest
from notify_core.erasure_queue import requeue_erased_since
from notify_core.erasure_register import EVENT_TIME, ErasureRegister, erased_before
from notify_core.errors import ValidationError
from notify_core.ingest.validation import LIST_SEPARATOR, ROW_COLUMN, Validated, prepare, validate
from notify_core.lake import Lake, MergePlan
from notify_core.landing import STREAM_FILE_PREFIX
from notify_core.repositories import ITEM_KEYS, WriteCounts
from notify_core.schemas import KEYS, SCHEMAS
from notify_core.store.port import Key, Store

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
    rows_erased: int = 0  # rows of erased users (the erasure register), dropped before validation
    rows_merged: int = 0  # valid purchase lines summed into another line of their key in the same file
    rows_superseded: int = 0  # valid rows replaced by a later row of their key (a later file) in this run
    erasures_requeued: int = 0  # users erased while this run was under way, queued for the sweep again
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

    def landed_stream_files(self) -> list[str]:
        """The consumer's order files (:data:`notify_core.landing.STREAM_FILE_PREFIX`) this run read, named
        relative to the landing folder: once :func:`ingest_dataset` has returned, the lake holds their rows,
        and they can be retired. A file it could not read stays, for the operator to see."""
        return [f"{self.dataset}/{name}" for name in self.files
                if name.startswith(STREAM_FILE_PREFIX) and name not in self.file_errors]

    def as_metadata(self) -> dict[str, Any]:
        return {
            "files": len(self.files), "rows_read": self.rows_read, "rows_valid": self.rows_valid,
            "rows_erased": self.rows_erased, "rows_merged": self.rows_merged, "rows_superseded": self.rows_superseded,
            "rows_bad": len(self.bad_rows), "files_failed": len(self.file_errors),
            "lake_inserted": self.lake_inserted, "lake_updated": self.lake_updated,
            "lake_unchanged": self.lake_unchanged, "partitions_written": len(self.partitions_written),
            "store_inserted": self.store.inserted, "store_updated": self.store.updated,
            "store_unchanged": self.store.unchanged, "store_deleted": self.store.deleted,
            "erasures_requeued": self.erasures_requeued,
        }


def landing_files(landing: Path, dataset: str) -> list[Path]:
    folder = landing / dataset
    if not folder.exists():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in SUFFIXES and not p.name.startswith("."))


def read_landing_file(path: Path) -> pl.DataFrame:
    """A landing file as a frame, or a :class:`ValidationError` naming why the whole file is unusable."""
    try:
        if path.suffix == ".parquet":
            return pl.read_parquet(path)
        frame = pl.read_csv(path, infer_schema=False, truncate_ragged_lines=False)
        header = pl.read_csv(path, infer_schema=False, has_header=False, n_rows=1).row(0)
    except Exception as exc:  # polars raises several types for malformed files
        raise ValidationError(f"cannot read {path.name}: {exc}") from exc
    # polars renames a repeated header column ``<name>_duplicated_<n>`` and the first copy would be used
    # without a word: which value the file means is unknowable, so the file is refused like a ragged one.
    repeated = sorted({str(name) for name in header if header.count(name) > 1})
    if repeated:
        raise ValidationError(f"cannot read {path.name}: header repeats column(s) {repeated}")
    return frame


def _quarantine(folder: Path, dataset: str, source: Path, bad: pl.DataFrame, raw: pl.DataFrame) -> None:
    """Keep the bad rows as they arrived (all columns as text) with their reasons, for repair and replay."""
    rows = raw.with_row_index(ROW_COLUMN, offset=1).cast({ROW_COLUMN: pl.Int64}).join(
        bad.select(ROW_COLUMN, "reason"), on=ROW_COLUMN)
    target = folder / dataset
    target.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:12]
    text = rows.select(pl.col(ROW_COLUMN), *(_as_text(c, rows.schema[c]) for c in rows.columns if c != ROW_COLUMN))
    atomic_write(target / f"{source.stem}.{digest}.parquet", text.write_parquet)


def _as_text(column: str, dtype: pl.DataType) -> pl.Expr:
    """A landing column as the text a CSV drop would carry: a list of plain values joined by
    ``LIST_SEPARATOR`` (what :func:`prepare` splits), anything else nested as JSON. A Parquet drop's list
    columns (``channels``, ``product_ids``) cannot be cast to text: a bad row in one failed the whole
    dataset's ingestion, on every retry."""
    if isinstance(dtype, pl.List | pl.Array) and not dtype.inner.is_nested():
        return pl.col(column).cast(pl.List(pl.String)).list.join(LIST_SEPARATOR).alias(column)
    if dtype.is_nested():
        return pl.col(column).map_batches(lambda values: pl.Series(
            [None if v is None else json.dumps(v, default=str) for v in values.to_list()], dtype=pl.String),
            return_dtype=pl.String).alias(column)
    return pl.col(column).cast(pl.String)


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

    Every run converges the Store to the lake (see :mod:`notify_core.convergence`), repairing only the
    partitions whose ledger digest differs; ``full_store_sync`` compares every row of every partition.
    ``clock`` bounds dates from above (``notify_core.bounds.MAX_FUTURE_SKEW`` ahead of it); entry points
    pass ``SYSTEM_CLOCK``; without one only the static ``MAX_DATE`` applies.
    """
    now = utcnow(clock) if clock is not None else None
    if dataset not in DATASETS:
        raise ValidationError(f"unknown dataset {dataset!r}; expected one of {DATASETS}")
    report = IngestReport(dataset=dataset)
    register = erased_before(store) if "user_id" in SCHEMAS[dataset] else ErasureRegister()
    good_parts: list[pl.DataFrame] = []
    for path in landing_files(landing, dataset):
        report.files.append(path.name)
        if on_file:
            on_file(path.name)
        try:
            raw = read_landing_file(path)
            prepared, erased = register.drop_erased(prepare(dataset, raw), time_column=EVENT_TIME.get(dataset))
            checked = validate(dataset, prepared, now=now) if prepared.height or not erased else _nothing(dataset)
        except ValidationError as exc:
            report.file_errors[path.name] = str(exc)
            log.warning("landing file rejected", extra={"dataset": dataset, "file": path.name, "error": str(exc)})
            continue
        report.rows_read += raw.height
        report.rows_erased += erased
        merged = 0
        if dataset == "purchases":  # repeated lines of an order: summed, as the event path does
            checked, merged = _merge_repeated_lines(checked, prepared)
        report.rows_merged += merged
        report.rows_valid += checked.good.height + merged
        good_parts.append(checked.good)
        if not checked.bad.is_empty():
            _quarantine(quarantine, dataset, path, checked.bad, raw)
            keys = list(KEYS[dataset])
            for row in checked.bad.iter_rows(named=True):
                report.bad_rows.append(BadRow(path.name, row[ROW_COLUMN], {k: row[k] for k in keys}, row["reason"]))
    columns = list(SCHEMAS[dataset])
    incoming = pl.concat(good_parts, how="vertical_relaxed") if good_parts else pl.DataFrame(schema=SCHEMAS[dataset])
    # A key in two files of one run: the later file's row wins (as it would in a later run), counted.
    report.rows_superseded = incoming.height - incoming.select(KEYS[dataset]).n_unique()
    plan = lake.plan_merge(dataset, incoming)
    report.lake_inserted, report.lake_updated, report.lake_unchanged = plan.inserted, plan.updated, plan.unchanged

    # The Store first, the lake last: until the lake records the rows as landed, every run sees them as
    # changed again. The ledger (notify_core.convergence) then repairs whatever the Store lacks, per
    # partition, even when nothing landed: an interrupted run, a full disk, a wiped or restored Store.
    report.store = converge(store, dataset, _partition_sources(plan, columns), stale=_stale_keys(dataset, plan),
                            force=full_store_sync)
    report.partitions_written = lake.commit(plan)
    if "user_id" in SCHEMAS[dataset]:
        report.erasures_requeued = _requeue_raced_erasures(store, dataset, plan, register)
    log.info("ingested", extra={"dataset": dataset, **report.as_metadata()})
    return report


def _requeue_raced_erasures(store: Store, dataset: str, plan: MergePlan, register: ErasureRegister) -> int:
    """Put back on the erasure queue the users erased while this run was between its plan and its commit.

    Why: the plan read the lake (and the register) before such an erasure rewrote the lake and cleared the
    Store, and ``converge`` and ``commit`` then wrote the user's rows back into both (reproduced: session
    34). An erasure records the register before it touches anything, so this read, after the commit, sees
    every erasure the commit can have undone, on any backend and without a lock; the sweep (the
    ``erasure_sweep`` job, ``notify users sweep-erasures``) then erases those users again
    (:func:`notify_core.erasure_queue.requeue_erased_since`, which plan runs use too). How many.
    """
    users = requeue_erased_since(store, register, plan.merged["user_id"].drop_nulls().unique().to_list())
    if users:  # by count only: the ids are the erased users'
        log.warning("users erased during this ingestion queued for the erasure sweep again",
                    extra={"dataset": dataset, "users": len(users)})
    return len(users)


def _merge_repeated_lines(checked: Validated, prepared: pl.DataFrame) -> tuple[Validated, int]:
    """A purchases file's valid lines merged per key (``order_id`` + ``product_id``), as the event path
    keeps an order (:func:`notify_core.bounds.merge_lines`, here in polars): the quantities summed, the first
    line's other values. The lake keeps one row per key, so the second line used to vanish (counted valid,
    never landed). Merged lines past the bounds (:func:`notify_core.bounds.merged_lines_reason`: two lines
    of 10^6 units) are quarantined, every line of them, with that reason. Returns the merged validation
    and how many lines were merged into another."""
    good, keys = checked.good, list(KEYS["purchases"])
    repeated = good.select(pl.struct(keys).is_duplicated()).to_series()
    if not repeated.any():
        return checked, 0
    # ``good`` keeps ``prepared``'s order without the bad rows: their row numbers, line by line
    rows = prepared[ROW_COLUMN].filter(~prepared[ROW_COLUMN].is_in(checked.bad[ROW_COLUMN].implode()))
    lines = good.with_columns(rows.alias(ROW_COLUMN))
    groups = lines.filter(repeated).group_by(keys, maintain_order=True).agg(
        pl.col(ROW_COLUMN), pl.col("quantity").alias("_quantities"), pl.col("unit_price").alias("_prices"))
    refused: list[dict[str, Any]] = []
    for group in groups.iter_rows(named=True):
        reason = bounds.merged_lines_reason(
            (group["product_id"], q, p) for q, p in zip(group["_quantities"], group["_prices"], strict=True))
        if reason is not None:
            refused += [{ROW_COLUMN: row, **{k: group[k] for k in keys}, "reason": reason} for row in group[ROW_COLUMN]]
    bad = checked.bad
    if refused:
        bad = pl.concat([bad, pl.DataFrame(refused, schema=bad.schema)]).sort(ROW_COLUMN)
        lines = lines.filter(~pl.col(ROW_COLUMN).is_in([r[ROW_COLUMN] for r in refused]))
    columns = list(SCHEMAS["purchases"])
    merged = lines.group_by(keys, maintain_order=True).agg(
        pl.col("quantity").sum(), pl.exclude(*keys, "quantity", ROW_COLUMN).first()).select(columns)
    return Validated(good=merged, bad=bad), lines.height - merged.height


def _nothing(dataset: str) -> Validated:
    """The validation of a file whose rows were all erased users' (nothing to check)."""
    empty = pl.DataFrame(schema=SCHEMAS[dataset])
    keys = list(KEYS[dataset])
    bad = pl.DataFrame(schema={ROW_COLUMN: pl.Int64, **{k: SCHEMAS[dataset][k] for k in keys}, "reason": pl.String})
    return Validated(good=empty, bad=bad)


def _partition_sources(plan: MergePlan, columns: list[str]) -> list[PartitionSource]:
    """Every partition of the dataset after the merge, with its delta and its digest before the merge."""
    after = plan.partitions(plan.merged.select(columns))
    before = plan.partitions(plan.current.select(columns)) if plan.touched or plan.changed.height else {}
    changed = plan.partitions(plan.changed.select(columns)) if plan.changed.height else {}
    empty = plan.merged.head(0).select(columns)
    moved = set(changed) | set(plan.touched)
    return [PartitionSource(name, rows, delta=changed.get(name, empty),
                            base_digest=frame_digest(before.get(name, empty)) if name in moved else None)
            for name, rows in sorted(after.items())]


def _stale_keys(dataset: str, plan: MergePlan) -> list[Key]:
    """Store keys of updated rows whose key moved (a purchase whose time or user changed)."""
    if dataset != "purchases" or plan.previous.is_empty():
        return []
    key = ITEM_KEYS[dataset]
    new_keys = {key(r) for r in plan.changed.iter_rows(named=True) if r["user_id"] is not None}
    return [k for r in plan.previous.iter_rows(named=True)
            if r["user_id"] is not None and (k := key(r)) not in new_keys]

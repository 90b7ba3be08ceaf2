"""Ingestion assets: the demo source, then one asset per landing dataset (validated, idempotent).

The landing sensor (``notify_sensors.landing``) starts the ingest job when a batch lands. Each dataset
keeps its data version when its content (the digests of its lake partitions) is the one last recorded, so
only what changed flows on downstream, including rows committed by an attempt that failed before Dagster
recorded it. The lake keeps purchases in monthly partitions; Dagster sees them as ``purchase_months``
(monthly): each purchases ingest records the months whose content changed since the last recorded one,
and a month backfilled from the UI re-syncs that month's lake partition to the Store and reports its counts.
"""

# No `from __future__ import annotations` here: Dagster reads the context annotations at decoration time.


import dagster as dg
import polars as pl

from notify_assets.automation import CONTENT_DIGEST, combined_digest, data_version, latest_materialization, pool_for
from notify_core.convergence import Ledger
from notify_core.erasure_register import erased_before
from notify_core.ingest.batch import DATASETS, IngestReport, ingest_dataset
from notify_core.lake import partition_expr
from notify_core.landing import build_landing_area, fingerprint_of
from notify_core.repositories import save_frame
from notify_core.sources.demo import prepare_demo_landing
from notify_resources import NotifyResource
from notify_sensors.landing import FINGERPRINT_KEY

INGESTION_GROUP = "ingestion"
PURCHASE_MONTHS = "purchase_months"
MONTH_PARTITIONS = dg.MonthlyPartitionsDefinition(start_date="2009-12", fmt="%Y-%m", end_offset=1)
LAKE_MONTH_PREFIX = "month="  # notify_core.lake.partition_expr names purchases partitions month=YYYY-MM
PARTITION_DIGESTS = "partition_digests"  # metadata of a partitioned dataset: {lake partition: content digest}


@dg.asset(group_name="sources", description="The UCI Online Retail export mapped to landing files (demo source).")
def online_retail_landing(context: dg.AssetExecutionContext, notify: NotifyResource) -> dg.MaterializeResult:
    settings = notify.settings
    # the export still holds erased users: the register keeps them out of the landing files
    result = prepare_demo_landing(source=settings.source_data, landing=settings.landing, seed=settings.seed,
                                  erased=erased_before(notify.store))
    build_landing_area(settings).push()  # aws: the files land under the S3 prefix, like any other drop
    context.log.info(f"landing files written: {result.files_written or 'none (unchanged)'}")
    return dg.MaterializeResult(metadata={
        "source_rows": result.rows_read,
        **{f"rows_{name}": count for name, count in result.rows.items()},
        **{f"dropped: {reason}": count for reason, count in result.dropped.items()},
        "files_written": len(result.files_written),
    })


def _bad_rows_table(report: IngestReport, limit: int = 20) -> str:
    """The first bad rows by file, row and reason. Not by key: a key can be a user id, and Dagster's run
    storage cannot forget one user; the quarantine files, which the erasure rewrites, hold the rows whole."""
    lines = ["| file | row | reason |", "|---|---|---|"]
    lines += [f"| {b.file} | {b.row} | {b.reason} |" for b in report.bad_rows[:limit]]
    if len(report.bad_rows) > limit:
        lines.append(f"| ... | | {len(report.bad_rows) - limit} more in the quarantine folder |")
    return "\n".join(lines)


def _ingestion_asset(dataset: str) -> dg.AssetsDefinition:
    @dg.asset(
        name=dataset,
        group_name=INGESTION_GROUP,
        deps=[online_retail_landing],
        description=f"{dataset} from the landing folder: validated, merged into the lake, changed rows to the Store.",
        retry_policy=dg.RetryPolicy(max_retries=2, delay=5),
        pool=pool_for(dataset),
    )
    def _asset(context: dg.AssetExecutionContext, notify: NotifyResource) -> dg.MaterializeResult:
        settings = notify.settings
        area = build_landing_area(settings)
        listing = area.listing(dataset=dataset)  # before reading: a later batch re-triggers
        area.pull()  # aws: files dropped under the S3 prefix (consumer pods, other jobs) reach this run
        report = ingest_dataset(dataset, landing=area.landing, lake=notify.lake, store=notify.store,
                                quarantine=area.quarantine,
                                on_file=lambda f: context.log.info(f"progress {dataset}: reading {f}"),
                                clock=notify.clock())
        area.push(quarantine=True)
        # The consumer's order files are in the lake now: retired, and left out of the fingerprint this run
        # records, so the sensor sees the folder as ingested (a file that came after the listing still differs).
        retired = area.retire(report.landed_stream_files())
        fingerprint = fingerprint_of({k: v for k, v in listing.items() if k not in set(retired)}, dataset=dataset)
        for name, error in report.file_errors.items():
            context.log.warning(f"{name} rejected: {error}")
        metadata: dict[str, object] = {**report.as_metadata(), FINGERPRINT_KEY: fingerprint,
                                       "stream_files_retired": len(retired)}
        if report.bad_rows:
            metadata["bad_rows"] = dg.MetadataValue.md(_bad_rows_table(report))
        changed = report.rows_changed > 0 or report.store.inserted + report.store.updated + report.store.deleted > 0
        digests = _content_digests(notify, dataset)
        digest = metadata[CONTENT_DIGEST] = combined_digest(digests)
        previous = latest_materialization(context.instance, context.asset_key)  # before this one is recorded
        if partition_expr(dataset) is not None:
            metadata[PARTITION_DIGESTS] = dg.MetadataValue.json(digests)
        for month in _months(_rewritten(report, digests, previous)):
            context.log_event(dg.AssetMaterialization(PURCHASE_MONTHS, partition=month,
                                                      description=f"rewritten by {dataset} ingestion"))
        return dg.MaterializeResult(metadata=metadata,  # type: ignore[arg-type]
                                    data_version=data_version(context, dataset, changed=changed, digest=digest))

    return _asset


def _content_digests(notify: NotifyResource, dataset: str) -> dict[str, str]:
    """``{lake partition: digest of its rows}`` after the ingest: the sync ledger entries that
    ``ingest_dataset`` (``notify_core.convergence.converge``, source = the dataset) has just brought in
    step with the lake, so one ledger query, no data read. Content, not "what this attempt wrote": rows
    committed by an attempt that failed before Dagster recorded it (a retry finds nothing to write) still
    differ from the digests the last materialisation recorded."""
    return Ledger(notify.store, dataset).recorded()


def _rewritten(report: IngestReport, digests: dict[str, str], previous: dg.AssetMaterialization | None) -> list[str]:
    """The lake partitions whose content changed since the last recorded materialisation: the ones this
    attempt wrote, and the ones whose digest differs from the recorded ``partition_digests`` (written by
    an attempt that failed before it was recorded). Without recorded digests, only the ones written."""
    value = previous.metadata.get(PARTITION_DIGESTS) if previous is not None else None
    recorded = value.value if value is not None and isinstance(value.value, dict) else None
    moved = {p for p, d in digests.items() if recorded.get(p) != d} if recorded is not None else set()
    return sorted(set(report.partitions_written) | moved)


def _months(lake_partitions: list[str] | tuple[str, ...]) -> list[str]:
    """Lake partition names (month=YYYY-MM) as ``MONTH_PARTITIONS`` keys, the ones the definition holds."""
    valid = set(MONTH_PARTITIONS.get_partition_keys())
    return [p.removeprefix(LAKE_MONTH_PREFIX) for p in lake_partitions if p.removeprefix(LAKE_MONTH_PREFIX) in valid]


@dg.asset(
    name=PURCHASE_MONTHS, group_name=INGESTION_GROUP, partitions_def=MONTH_PARTITIONS, deps=["purchases"],
    backfill_policy=dg.BackfillPolicy.single_run(), pool=pool_for(PURCHASE_MONTHS),
    description="The purchases lake partitions (one per month), as Dagster sees them: purchases ingestion "
                "records the months it rewrote; backfilling months here re-syncs them from the lake to the "
                "Store (repairs a wiped or partial Store month by month) and reports their counts.",
)
def purchase_months(context: dg.AssetExecutionContext, notify: NotifyResource) -> dg.MaterializeResult:
    lake = notify.lake
    present = set(lake.partitions("purchases"))
    rows = orders = buyers = written = 0
    for month in context.partition_keys:
        name = f"{LAKE_MONTH_PREFIX}{month}"
        if name not in present:
            context.log.info(f"progress {PURCHASE_MONTHS}: {month} has no purchases")
            continue
        frame = lake.read("purchases", partition=name)
        counts = save_frame(notify.store, "purchases", frame)
        rows += frame.height
        orders += frame["order_id"].n_unique()
        buyers += frame.filter(pl.col("user_id").is_not_null())["user_id"].n_unique()
        written += counts.inserted + counts.updated
        context.log.info(f"progress {PURCHASE_MONTHS}: {month}: {frame.height} lines, "
                         f"{counts.inserted + counts.updated} written to the Store")
    return dg.MaterializeResult(metadata={"rows": rows, "orders": orders, "buyers": buyers, "store_written": written,
                                          "months": len(context.partition_keys)})


INGESTION_ASSETS = [*(_ingestion_asset(name) for name in DATASETS), purchase_months]


def _quarantine_check(dataset: str) -> dg.AssetChecksDefinition:
    @dg.asset_check(asset=dataset, name="no_quarantined_rows", blocking=False,
                    description="Warns when the last ingestion quarantined rows (good rows still landed).")
    def _check(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        event = context.instance.get_latest_materialization_event(dg.AssetKey(dataset))
        metadata = event.asset_materialization.metadata if event and event.asset_materialization else {}
        bad = metadata.get("rows_bad")
        count = int(bad.value) if bad is not None else 0
        return dg.AssetCheckResult(passed=count == 0, severity=dg.AssetCheckSeverity.WARN,
                                   metadata={"rows_bad": count})

    return _check


INGESTION_CHECKS = [_quarantine_check(name) for name in DATASETS]

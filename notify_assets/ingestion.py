"""Ingestion assets: the demo source, then one asset per landing dataset (validated, idempotent)."""

# No `from __future__ import annotations` here: Dagster reads the context annotations at decoration time.


import dagster as dg

from notify_core.ingest.batch import DATASETS, IngestReport, ingest_dataset
from notify_core.landing import build_landing_area
from notify_core.sources.demo import prepare_demo_landing
from notify_resources import NotifyResource

INGESTION_GROUP = "ingestion"


@dg.asset(group_name="sources", description="The UCI Online Retail export mapped to landing files (demo source).")
def online_retail_landing(context: dg.AssetExecutionContext, notify: NotifyResource) -> dg.MaterializeResult:
    settings = notify.settings
    result = prepare_demo_landing(source=settings.source_data, landing=settings.landing, seed=settings.seed)
    build_landing_area(settings).push()  # aws: the files land under the S3 prefix, like any other drop
    context.log.info(f"landing files written: {result.files_written or 'none (unchanged)'}")
    return dg.MaterializeResult(metadata={
        "source_rows": result.rows_read,
        **{f"rows_{name}": count for name, count in result.rows.items()},
        **{f"dropped: {reason}": count for reason, count in result.dropped.items()},
        "files_written": len(result.files_written),
    })


def _bad_rows_table(report: IngestReport, limit: int = 20) -> str:
    lines = ["| file | row | key | reason |", "|---|---|---|---|"]
    lines += [f"| {b.file} | {b.row} | {b.key} | {b.reason} |" for b in report.bad_rows[:limit]]
    if len(report.bad_rows) > limit:
        lines.append(f"| ... | | | {len(report.bad_rows) - limit} more in the quarantine folder |")
    return "\n".join(lines)


def _ingestion_asset(dataset: str) -> dg.AssetsDefinition:
    @dg.asset(
        name=dataset,
        group_name=INGESTION_GROUP,
        deps=[online_retail_landing],
        description=f"{dataset} from the landing folder: validated, merged into the lake, changed rows to the Store.",
        retry_policy=dg.RetryPolicy(max_retries=2, delay=5),
    )
    def _asset(context: dg.AssetExecutionContext, notify: NotifyResource) -> dg.MaterializeResult:
        settings = notify.settings
        area = build_landing_area(settings)
        area.pull()  # aws: files dropped under the S3 prefix (consumer pods, other jobs) reach this run
        report = ingest_dataset(dataset, landing=area.landing, lake=notify.lake, store=notify.store,
                                quarantine=area.quarantine, on_file=lambda f: context.log.info(f"reading {f}"),
                                clock=notify.clock())
        area.push(quarantine=True)
        for name, error in report.file_errors.items():
            context.log.warning(f"{name} rejected: {error}")
        metadata: dict[str, object] = dict(report.as_metadata())
        if report.bad_rows:
            metadata["bad_rows"] = dg.MetadataValue.md(_bad_rows_table(report))
        return dg.MaterializeResult(metadata=metadata)  # type: ignore[arg-type]

    return _asset


INGESTION_ASSETS = [_ingestion_asset(name) for name in DATASETS]


def _quarantine_check(dataset: str) -> dg.AssetChecksDefinition:
    @dg.asset_check(asset=dataset, name="no_quarantined_rows", blocking=False,
                    description="Warns when the last ingestion quarantined rows (good rows still landed).")
    def _check(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        event = context.instance.get_latest_materialization_event(dg.AssetKey(dataset))
        metadata = event.asset_materialization.metadata if event and event.asset_materialization else {}
        bad = metadata.get("rows_bad")
        count = int(bad.value) if bad is not None else 0  # type: ignore[arg-type]
        return dg.AssetCheckResult(passed=count == 0, severity=dg.AssetCheckSeverity.WARN,
                                   metadata={"rows_bad": count})

    return _check


INGESTION_CHECKS = [_quarantine_check(name) for name in DATASETS]

"""The Definitions: assets, checks, jobs, sensors and the environment's resources, merged in one place.

The asset graph is the only description of what depends on what: the daemon follows it through the
automation conditions (``notify_assets.automation``), ``notify run`` launches one run of ``MAIN_JOB``
over it, and a failed step skips only the steps downstream of it (Dagster's own rule).
"""

from __future__ import annotations

import sys

import dagster as dg

from notify_assets.automation import automation_sensor, deployment_date, plan_partitions
from notify_assets.delivery import DELIVERY_ASSETS, DELIVERY_CHECKS
from notify_assets.embeddings import EMBEDDING_ASSETS, EMBEDDING_JOBS
from notify_assets.erasure_sweep import erasure_sweep
from notify_assets.features import FEATURES_GROUP, feature_tables
from notify_assets.ingestion import (
    INGESTION_ASSETS,
    INGESTION_CHECKS,
    INGESTION_GROUP,
    PURCHASE_MONTHS,
    online_retail_landing,
)
from notify_assets.operations import OPERATIONS_ASSETS
from notify_assets.recommendation import RECOMMENDATION_ASSETS, RECOMMENDATION_CHECKS
from notify_assets.scheduling import build_plan_asset, plan_exists_check, replan_job
from notify_core.settings import NotifySettings, load_settings
from notify_resources import resources_for
from notify_sensors import (
    campaign_index_publisher,
    dead_run_sensor,
    erasure_sweep_sensor,
    landing_sensor,
    run_retention_sensor,
)
from notify_sensors.landing import INGEST_JOB

MAIN_JOB = "notify_main"
FEATURES_JOB = "features_job"
# Monthly partitions cannot share a run with the daily plan; months are backfilled on their own.
_NOT_IN_RUNS = dg.AssetSelection.assets(PURCHASE_MONTHS)


def assets_for(settings: NotifySettings) -> tuple[list[dg.AssetsDefinition], dg.AssetsDefinition]:
    """Every asset, and the plan among them (its partitions start at this deployment's first day)."""
    clock = settings.clock()  # NOTIFY_CLOCK_START pins the plan's days; unset, they follow Dagster's time
    plan = build_plan_asset(plan_partitions(deployment_date(settings, clock=clock), clock=clock))
    return [online_retail_landing, *INGESTION_ASSETS, feature_tables, *EMBEDDING_ASSETS, *RECOMMENDATION_ASSETS,
            plan, *DELIVERY_ASSETS, *OPERATIONS_ASSETS], plan


def checks_for(plan: dg.AssetsDefinition) -> list[dg.AssetChecksDefinition]:
    return [*INGESTION_CHECKS, *RECOMMENDATION_CHECKS, plan_exists_check(plan), *DELIVERY_CHECKS]


def build_definitions(settings: NotifySettings) -> dg.Definitions:
    executor = dg.in_process_executor if settings.env == "local" else dg.multiprocess_executor
    assets, plan = assets_for(settings)
    jobs = [
        dg.define_asset_job(MAIN_JOB, selection=dg.AssetSelection.all() - _NOT_IN_RUNS,
                            partitions_def=plan.partitions_def,
                            description="Everything, end to end, planning one day (the partition; notify run: today)."),
        dg.define_asset_job(INGEST_JOB, selection=dg.AssetSelection.groups(INGESTION_GROUP) - _NOT_IN_RUNS,
                            description="Ingest the landing folder (the landing sensor's job)."),
        dg.define_asset_job(FEATURES_JOB, selection=dg.AssetSelection.groups(FEATURES_GROUP),
                            description="Recompute the feature tables from the lake."),
        *EMBEDDING_JOBS, replan_job(plan), erasure_sweep,
    ]
    return dg.Definitions(
        assets=assets, asset_checks=checks_for(plan), jobs=jobs,
        sensors=[landing_sensor, campaign_index_publisher, erasure_sweep_sensor, run_retention_sensor,
                 dead_run_sensor, automation_sensor()],
        resources=resources_for(settings), executor=executor,
    )


@dg.definitions
def defs() -> dg.Definitions:
    """Entry point for `dagster dev` / code servers and the run workers they start: settings are read here,
    once, not at import.

    Notify's JSON log lines need a handler in these processes too: without one, every INFO line of a run the
    daemon launched (ingested counts, quarantined rows, the plan, each delivery attempt) was dropped, and
    warnings reached only the run's captured stderr as bare text. On one machine they go to the CLI's file
    (``<data_dir>/logs/notify.jsonl``); in aws (the code server and run pods) to stdout, which the cluster's
    log collection reads."""
    from notify_core.observability import configure_logging, log_file, logging_configured
    from notify_core.security.files import use_private_umask

    use_private_umask()  # the lake, landing, artefacts and Store files the runs write are 0600 / 0700
    settings = load_settings()
    if not logging_configured():  # `notify run` configured its own before loading the definitions
        if settings.env == "local":
            configure_logging(path=log_file(settings.data_dir))
        else:
            configure_logging(stream=sys.stdout)
    return build_definitions(settings)

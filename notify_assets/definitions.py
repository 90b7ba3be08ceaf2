"""The Definitions: assets, checks, jobs, sensors and the environment's resources, merged in one place."""

from __future__ import annotations

import dagster as dg

from notify_assets.delivery import DELIVERY_ASSETS, DELIVERY_CHECKS, DELIVERY_GROUP
from notify_assets.embeddings import CAMPAIGN_EMBEDDINGS_GROUP, EMBEDDING_ASSETS, EMBEDDING_JOBS, EMBEDDINGS_GROUP
from notify_assets.features import FEATURES_GROUP, feature_tables
from notify_assets.ingestion import INGESTION_ASSETS, INGESTION_CHECKS, INGESTION_GROUP, online_retail_landing
from notify_assets.operations import OPERATIONS_ASSETS
from notify_assets.recommendation import RECOMMENDATION_ASSETS, RECOMMENDATION_GROUP
from notify_assets.scheduling import (
    PLAN_PARTITIONS,
    SCHEDULING_ASSETS,
    SCHEDULING_GROUP,
    SCHEDULING_JOBS,
    today_partition,
)
from notify_core.clock import Clock
from notify_core.settings import NotifySettings, load_settings
from notify_resources import resources_for
from notify_sensors import REPLAN_SENSORS, campaign_index_publisher, landing_sensor
from notify_sensors.landing import INGEST_JOB

ASSETS = [online_retail_landing, *INGESTION_ASSETS, feature_tables, *EMBEDDING_ASSETS, *RECOMMENDATION_ASSETS,
          *SCHEDULING_ASSETS, *DELIVERY_ASSETS, *OPERATIONS_ASSETS]
CHECKS = [*INGESTION_CHECKS, *DELIVERY_CHECKS]

# The end-to-end job, stage by stage (the CLI runs these in order and reports each).
STAGES: tuple[tuple[str, dg.AssetSelection], ...] = (
    ("sources", dg.AssetSelection.groups("sources")),
    ("ingestion", dg.AssetSelection.groups(INGESTION_GROUP)),
    ("features", dg.AssetSelection.groups(FEATURES_GROUP)),
    ("embeddings", dg.AssetSelection.groups(EMBEDDINGS_GROUP)),
    ("campaign_embeddings", dg.AssetSelection.groups(CAMPAIGN_EMBEDDINGS_GROUP)),
    ("recommendation", dg.AssetSelection.groups(RECOMMENDATION_GROUP)),
    ("scheduling", dg.AssetSelection.groups(SCHEDULING_GROUP)),
    ("delivery", dg.AssetSelection.groups(DELIVERY_GROUP)),
)
# Which earlier stages each stage needs. The CLI skips a stage only when one of these failed (or was
# skipped), so a campaign failure does not stop the user chain and the reverse. A stage missing here
# is taken to need every stage before it.
STAGE_UPSTREAM: dict[str, tuple[str, ...]] = {
    "sources": (),
    "ingestion": ("sources",),
    "features": ("ingestion",),
    "embeddings": ("ingestion",),
    "campaign_embeddings": ("ingestion",),
    "recommendation": ("campaign_embeddings",),  # the index needs campaign vectors, not the user chain
    # the plan needs both vector sets; without a published index it uses the documented cosine fallback
    "scheduling": ("embeddings", "campaign_embeddings"),
    "delivery": ("scheduling",),  # delivers what the plan holds (the demo fast-forwards the next hour)
}


def stage_job(name: str, selection: dg.AssetSelection, *, clock: Clock) -> dg.UnresolvedAssetJobDefinition:
    """A stage's job. The scheduling stage plans today's partition (UTC; the day the definitions were
    built), since the CLI runs stage jobs without a partition key."""
    if name == "scheduling":
        return dg.define_asset_job(f"stage_{name}", selection=selection, partitions_def=PLAN_PARTITIONS,
                                   tags={"dagster/partition": today_partition(clock)})
    return dg.define_asset_job(f"stage_{name}", selection=selection)


MAIN_JOB = "notify_main"


def build_definitions(settings: NotifySettings) -> dg.Definitions:
    executor = dg.in_process_executor if settings.env == "local" else dg.multiprocess_executor
    jobs = [
        dg.define_asset_job(MAIN_JOB, selection=dg.AssetSelection.all(), description="Everything, end to end."),
        dg.define_asset_job(INGEST_JOB, selection=dg.AssetSelection.groups(INGESTION_GROUP)),
        *(stage_job(name, selection, clock=settings.clock()) for name, selection in STAGES),
        *EMBEDDING_JOBS, *SCHEDULING_JOBS,
    ]
    return dg.Definitions(
        assets=ASSETS, asset_checks=CHECKS, jobs=jobs, sensors=[landing_sensor, campaign_index_publisher,
                                                                 *REPLAN_SENSORS],
        resources=resources_for(settings), executor=executor,
    )


@dg.definitions
def defs() -> dg.Definitions:
    """Entry point for `dagster dev` / code servers: settings are read here, once, not at import."""
    from notify_core.security.files import use_private_umask

    use_private_umask()  # the lake, landing, artefacts and Store files the runs write are 0600 / 0700
    return build_definitions(load_settings())

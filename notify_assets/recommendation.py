"""The campaign ANN index asset and its recall check (issue 5).

Thin: :func:`notify_core.recommend.build.build_campaign_index` builds a new immutable version from the
campaign embeddings, measures recall@10 against exact search on sampled user vectors and writes the
version folder. The recall check is blocking: a version under 0.99 is never published, so serving
keeps the last good index. Publishing (moving ``CURRENT``) is the sensor's job, or the asset's own in
the one-machine default (``RecommendResource.publish_on_build``).

The data version follows the version the asset stands for (metadata ``content_digest``: the id of the
passing version built or reused), not whether this attempt built one: a version an attempt saved (and
published) before failing is reused by the next run and still reaches the plan; an unchanged re-run keeps
the data version, and so does a build whose recall check failed (it carries the last recorded digest on).
"""

# No `from __future__ import annotations` here: Dagster reads the context annotations at decoration time.

import dagster as dg

from notify_assets.automation import (
    CONTENT_DIGEST,
    DELTA,
    data_version,
    latest_materialization,
    pool_for,
    recorded_digest,
)
from notify_assets.embeddings import campaign_embeddings
from notify_core.errors import NotifyError
from notify_core.recommend.artefacts import build_artefact_store
from notify_core.recommend.build import IndexBuild, build_campaign_index
from notify_core.recommend.index import IndexOptions, index_kind, prune_versions, publish
from notify_resources.resources import NotifyResource, RecommendResource

RECOMMENDATION_GROUP = "recommendation"
RECALL_CHECK = "recall_at_10"
FRESHNESS_CHECK = "not_older_than_its_campaigns"


@dg.asset(
    group_name=RECOMMENDATION_GROUP, deps=[campaign_embeddings], automation_condition=DELTA,
    pool=pool_for("campaign_index"),
    check_specs=[dg.AssetCheckSpec(RECALL_CHECK, asset="campaign_index", blocking=True,
                                   description="ANN top-10 vs exact numpy top-10 on sampled user vectors: "
                                               "recall@10 >= 0.99, or the version is never published.")],
    description="ANN index (cosine; faiss IVF with fp16 vectors by default, usearch HNSW as an option) over the "
                "campaign embeddings, its search effort tuned to recall@10 >= 0.99 on sampled users, saved as "
                "a versioned artefact (<data_dir>/artefacts/campaign_index/<version>/, S3 in aws).",
)
def campaign_index(
    context: dg.AssetExecutionContext, notify: NotifyResource, recommend: RecommendResource
) -> dg.MaterializeResult:
    artefacts = build_artefact_store(notify.settings)
    options = IndexOptions(kind=index_kind(recommend.kind), dtype=recommend.dtype,
                           search_effort=recommend.search_effort, lists=recommend.lists,
                           connectivity=recommend.connectivity, expansion_add=recommend.expansion_add)
    now = notify.now()
    build = build_campaign_index(notify.lake, artefacts, options=options, recall_sample=recommend.recall_sample,
                                 min_recall=recommend.min_recall, seed=notify.seed, now=now)
    published = False
    if build.passed and recommend.publish_on_build:
        publish(artefacts, build.saved.version)
        published = True
    try:  # superseded versions a week old, beyond the last few; housekeeping never fails the build
        pruned = prune_versions(artefacts, now=now)
    except (NotifyError, OSError) as exc:
        context.log.warning(f"old campaign index versions not removed (the next build tries again): {exc}")
        pruned = []
    context.log.info(f"campaign index {build.saved.version}: {build.saved.manifest.size} campaigns, "
                     f"recall@10 {build.recall_at_10:.4f}, published={published}, old versions removed={len(pruned)}")
    digest = _content_digest(context, build)
    return dg.MaterializeResult(
        metadata={**build.metadata(), "published": dg.MetadataValue.bool(published), "versions_removed": len(pruned),
                  **({CONTENT_DIGEST: digest} if digest is not None else {})},
        data_version=data_version(context, "campaign_index", changed=build.passed and not build.reused,
                                  digest=digest),
        check_results=[dg.AssetCheckResult(
            check_name=RECALL_CHECK, passed=build.passed,
            metadata={"recall_at_10": round(build.recall_at_10, 4), "queries": build.recall_queries,
                      "min_recall": recommend.min_recall})],
    )


def _content_digest(context: dg.AssetExecutionContext, build: IndexBuild) -> str | None:
    """The digest of what the index asset stands for: the id of the passing version built or reused (a
    version saved by an attempt that failed before Dagster recorded it is reused by the next run: it differs
    from the recorded id, so it gets a new data version). A failed build changes nothing served: it carries
    the last recorded digest on (none recorded: none, so the data version is kept as before)."""
    if build.passed:
        return build.saved.version
    return recorded_digest(latest_materialization(context.instance, context.asset_key))


def _changed_since(instance: dg.DagsterInstance, key: dg.AssetKey) -> float | None:
    """When ``key``'s current data version first appeared (its latest change), or None if never materialised."""
    records = instance.fetch_materializations(key, limit=100).records
    if not records:
        return None
    def version(record: dg.EventLogRecord) -> str | None:
        mat = record.asset_materialization
        return (mat.tags or {}).get("dagster/data_version") if mat is not None else None
    current = version(records[0])
    since = records[0].timestamp
    for record in records[1:]:
        if version(record) != current:
            break
        since = record.timestamp
    return since


@dg.asset_check(
    asset=campaign_index, name=FRESHNESS_CHECK, additional_deps=[campaign_embeddings], blocking=False,
    automation_condition=dg.AutomationCondition.any_deps_updated().since_last_handled(),
    description="Freshness: the latest campaign index was built after the campaign vectors last changed "
                "(a campaign change that never reached the index fails this).",
)
def index_not_older_than_campaigns(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    index = context.instance.fetch_materializations(dg.AssetKey("campaign_index"), limit=1).records
    campaigns_changed = _changed_since(context.instance, campaign_embeddings.key)
    built = index[0].timestamp if index else None
    passed = built is not None and (campaigns_changed is None or built >= campaigns_changed)
    return dg.AssetCheckResult(passed=passed, severity=dg.AssetCheckSeverity.WARN, metadata={
        "index_built_at": dg.MetadataValue.timestamp(built) if built else "never",
        "campaigns_changed_at": dg.MetadataValue.timestamp(campaigns_changed) if campaigns_changed else "never",
    })


RECOMMENDATION_ASSETS = [campaign_index]
RECOMMENDATION_CHECKS = [index_not_older_than_campaigns]

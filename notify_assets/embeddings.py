"""Embedding assets: product -> purchase (order) -> user, and campaigns on their own.

Thin on purpose: each asset calls one refresh in :mod:`notify_core.embeddings.pipeline`, which diffs
content hashes, embeds only what changed, checks the vectors and persists them (Store + lake) only when
the checks pass. The asset reports the counts as metadata and the checks as blocking asset checks, so
a failed check stops the assets downstream of it while the last good vectors stay served. Its data
version follows the digest of the persisted vector state (metadata ``content_digest``), so vectors an
attempt persisted before failing still reach the assets downstream on the next run.

Campaigns are a separate group and job: a campaign failure never touches the user chain, and back.
"""

# No `from __future__ import annotations` here: Dagster reads the context annotations at decoration time.

from collections.abc import Callable

import dagster as dg

from notify_assets.automation import (
    CHANGED_USERS,
    CHANGED_USERS_SET,
    CONTENT_DIGEST,
    DELTA,
    REPLAN_USERS_MAX,
    data_version,
    latest_materialization,
    pool_for,
    recorded_digest,
)
from notify_core.embeddings import store as emb_store
from notify_core.embeddings.checks import CHECK_NAMES
from notify_core.embeddings.pipeline import (
    EmbeddingRun,
    refresh_campaign_embeddings,
    refresh_order_embeddings,
    refresh_product_embeddings,
    refresh_user_embeddings,
)
from notify_core.scheduling.replan_users import record_changed_users
from notify_resources.resources import EmbedderResource, NotifyResource

EMBEDDINGS_GROUP = "embeddings"
CAMPAIGN_EMBEDDINGS_GROUP = "campaign_embeddings"
EMBEDDINGS_JOB = "embeddings_job"  # job names must differ from op (asset) names
CAMPAIGN_EMBEDDINGS_JOB = "campaign_embeddings_job"

_CHECK_DESCRIPTIONS = {
    "dimension": "Every vector has the model's dimension (384 for MiniLM).",
    "unit_norm": "Every vector is L2-normalised (|norm - 1| <= 1e-3).",
    "no_nan": "No vector holds a NaN.",
    "one_vector_per_entity": "Exactly one vector per upstream entity: none missing, none extra, none duplicated.",
    "store_round_trip": "What the Store returns (strongly consistent read) equals the computed vectors.",
}


def _checks(asset: str) -> list[dg.AssetCheckSpec]:
    return [dg.AssetCheckSpec(name, asset=asset, blocking=True, description=_CHECK_DESCRIPTIONS[name])
            for name in CHECK_NAMES]


def _progress(context: dg.AssetExecutionContext, what: str) -> Callable[[int, int], None]:
    """Log about every 10 % of a long embedding run (and its end); ``notify run`` shows these lines."""
    state = {"next": 0.0}

    def report(done: int, total: int) -> None:
        if done >= total or done / total >= state["next"]:
            context.log.info(f"progress {context.asset_key.to_user_string()}: {done}/{total} {what} embedded")
            state["next"] = done / total + 0.1

    return report


def _per_partition(notify: NotifyResource, entity_type: str) -> dict[str, int]:
    """Vectors per lake partition (orders: per purchase month), from the persisted embedding state."""
    state = emb_store.read_lake_table(notify.lake, emb_store.state_table(entity_type))
    if state is None or "partition" not in state.columns:
        return {}
    counts = state.group_by("partition").len().sort("partition")
    return {str(p): int(n) for p, n in counts.iter_rows()}


def _result(context: dg.AssetExecutionContext, run: EmbeddingRun, per_partition: dict[str, int] | None = None,
            extra: dict[str, object] | None = None) -> dg.MaterializeResult:
    context.log.info(f"{run.entity_type}: {run.embedded} embedded, {run.skipped} skipped, {run.removed} removed"
                     + ("" if run.persisted else " (NOT persisted: checks failed)"))
    metadata = dict(run.metadata())
    if per_partition:
        metadata["vectors_per_partition"] = dg.MetadataValue.json(per_partition)
    metadata.update(extra or {})
    metadata[CONTENT_DIGEST] = run.digest  # the persisted vector state: a change an earlier attempt made counts too
    changed = run.persisted and (run.embedded > 0 or run.removed > 0)
    return dg.MaterializeResult(
        metadata=metadata,
        data_version=data_version(context, context.asset_key.to_user_string(), changed=changed, digest=run.digest),
        check_results=[dg.AssetCheckResult(check_name=c.name, passed=c.passed, metadata=c.metadata)
                       for c in run.checks],
    )


@dg.asset(
    group_name=EMBEDDINGS_GROUP, deps=["products"], check_specs=_checks("product_embeddings"),
    automation_condition=DELTA, pool=pool_for("product_embeddings"),
    description="One vector per product (description, category, price band); only changed texts are embedded.",
)
def product_embeddings(
    context: dg.AssetExecutionContext, notify: NotifyResource, embedder: EmbedderResource
) -> dg.MaterializeResult:
    run = refresh_product_embeddings(notify.lake, notify.store, embedder.embedder, batch_size=embedder.batch_size,
                                     progress=_progress(context, "products"), now=notify.now())
    return _result(context, run)


@dg.asset(
    group_name=EMBEDDINGS_GROUP, deps=[product_embeddings, "purchases"], check_specs=_checks("purchase_embeddings"),
    automation_condition=DELTA, pool=pool_for("purchase_embeddings"),
    description="One vector per order: log1p(quantity)-weighted product vectors, returns excluded; reads only "
                "purchase partitions that changed or hold an order of a changed product.",
)
def purchase_embeddings(context: dg.AssetExecutionContext, notify: NotifyResource) -> dg.MaterializeResult:
    run = refresh_order_embeddings(notify.lake, notify.store, now=notify.now())
    context.log.info(f"progress purchase_embeddings: {run.details.get('partitions_read', 0)} of "
                     f"{run.details.get('partitions_total', 0)} purchase months read, {run.embedded} orders embedded")
    return _result(context, run, _per_partition(notify, emb_store.ORDER))


@dg.asset(
    group_name=EMBEDDINGS_GROUP, deps=[purchase_embeddings], check_specs=_checks("user_embeddings"),
    automation_condition=DELTA, pool=pool_for("user_embeddings"),
    description="One vector per buyer: recency-weighted (90-day half-life) order vectors; only users whose "
                "orders changed are recomputed. Clickstream interactions fold in through the core hook.",
)
def user_embeddings(context: dg.AssetExecutionContext, notify: NotifyResource) -> dg.MaterializeResult:
    recorded = recorded_digest(latest_materialization(context.instance, context.asset_key))
    run = refresh_user_embeddings(notify.lake, notify.store, now=notify.now())
    # a small delta: a re-plan can be limited to these users, when they are every change since the last
    # recorded vectors (this run started from them: an attempt that persisted users and then failed, or a
    # first run, names nobody, so the re-plan covers everyone)
    small = run.base_digest == recorded and len(run.changed_ids) <= REPLAN_USERS_MAX
    if not small:
        return _result(context, run)
    # the ids go to the Store, which the erasure reaches; Dagster's run storage gets the set's id and size
    set_id = record_changed_users(notify.store, run.changed_ids, now=notify.now())
    return _result(context, run, extra={CHANGED_USERS: len(run.changed_ids), CHANGED_USERS_SET: set_id})


@dg.asset(
    group_name=CAMPAIGN_EMBEDDINGS_GROUP, deps=["campaigns"], check_specs=_checks("campaign_embeddings"),
    automation_condition=DELTA, pool=pool_for("campaign_embeddings"),
    description="One vector per campaign (name, message, category, targeting); independent of the user chain.",
)
def campaign_embeddings(
    context: dg.AssetExecutionContext, notify: NotifyResource, embedder: EmbedderResource
) -> dg.MaterializeResult:
    run = refresh_campaign_embeddings(notify.lake, notify.store, embedder.embedder, batch_size=embedder.batch_size,
                                      progress=_progress(context, "campaigns"), now=notify.now())
    return _result(context, run)


EMBEDDING_ASSETS = [product_embeddings, purchase_embeddings, user_embeddings, campaign_embeddings]
EMBEDDING_JOBS = [
    dg.define_asset_job(EMBEDDINGS_JOB, selection=dg.AssetSelection.groups(EMBEDDINGS_GROUP),
                        description="Products -> purchases -> users embeddings (delta)."),
    dg.define_asset_job(CAMPAIGN_EMBEDDINGS_JOB, selection=dg.AssetSelection.groups(CAMPAIGN_EMBEDDINGS_GROUP),
                        description="Campaign embeddings, on their own so a failure stays contained."),
]

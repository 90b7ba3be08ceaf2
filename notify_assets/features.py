"""Feature engineering assets: one multi-asset, since the three tables share one read of the lake.

Each table's data version follows its content (metadata ``content_digest``: the sync ledger's digest of the
rows the Store holds, which ``refresh_features`` has just brought in step with the lake table), not whether
this attempt wrote anything: tables an attempt wrote before failing still reach the assets downstream on the
next run, and an unchanged re-run keeps the version.
"""

# No `from __future__ import annotations` here: Dagster reads the context annotations at decoration time.


import dagster as dg
import polars as pl

from notify_assets.automation import CONTENT_DIGEST, DELTA, combined_digest, data_version, pool_for
from notify_core.convergence import Ledger
from notify_core.features import refresh_features
from notify_core.store import tables
from notify_resources import NotifyResource

FEATURES_GROUP = "features"
FEATURE_TABLES = (tables.USER_FEATURES, tables.PRODUCT_FEATURES, tables.USER_PRODUCT)
_DESCRIPTIONS = {
    tables.USER_FEATURES: "Per user: order count, spend, AOV, top categories, signup age, recency, preferred hours.",
    tables.PRODUCT_FEATURES: "Per product: revenue, units sold, average price, last sold date, buyers.",
    tables.USER_PRODUCT: "The user-product behaviour matrix: distinct orders, units, spend, last purchase.",
}


@dg.multi_asset(
    specs=[
        dg.AssetSpec(name, group_name=FEATURES_GROUP, deps=["users", "products", "purchases"],
                     description=_DESCRIPTIONS[name], automation_condition=DELTA)
        for name in FEATURE_TABLES
    ],
    check_specs=[dg.AssetCheckSpec("one_row_per_buyer", asset=tables.USER_FEATURES, blocking=True)],
    pool=pool_for("features"),
)
def feature_tables(context: dg.AssetExecutionContext, notify: NotifyResource):  # type: ignore[no-untyped-def]
    features, reports = refresh_features(notify.lake, notify.store)
    for name in FEATURE_TABLES:
        report = reports[name]
        changed = report.lake_rewritten or report.store.inserted + report.store.updated > 0
        digest = _content_digest(notify, name)
        yield dg.MaterializeResult(
            asset_key=name, data_version=data_version(context, name, changed=changed, digest=digest), metadata={
                "rows": report.rows, "as_of": features.as_of.isoformat(), "lake_rewritten": report.lake_rewritten,
                "store_inserted": report.store.inserted, "store_updated": report.store.updated,
                "store_unchanged": report.store.unchanged, CONTENT_DIGEST: digest,
            })
    buyers = notify.lake.scan("purchases").filter(pl.col("user_id").is_not_null()).select(
        pl.col("user_id").n_unique()).collect().item()
    yield dg.AssetCheckResult(
        asset_key=tables.USER_FEATURES, check_name="one_row_per_buyer",
        passed=features.users.height == buyers and features.users["user_id"].is_unique().all(),
        metadata={"feature_rows": features.users.height, "buyers": int(buyers)},
    )


def _content_digest(notify: NotifyResource, table: str) -> str:
    """A digest of ``table``'s content after the refresh: its sync ledger entries (``refresh_features``
    converges the Store through the ledger, source = the table, before it replaces the lake copy), so one
    ledger query, no data read. Content, not "what this attempt wrote": a table written by an attempt that
    failed before Dagster recorded it (the re-run finds nothing to write) still differs from the digest the
    last materialisation recorded."""
    return combined_digest(Ledger(notify.store, table).recorded())

"""Feature engineering assets: one multi-asset, since the three tables share one read of the lake."""

# No `from __future__ import annotations` here: Dagster reads the context annotations at decoration time.


import dagster as dg
import polars as pl

from notify_assets.automation import DELTA, data_version, pool_for
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
        yield dg.MaterializeResult(asset_key=name, data_version=data_version(context, name, changed=changed), metadata={
            "rows": report.rows, "as_of": features.as_of.isoformat(), "lake_rewritten": report.lake_rewritten,
            "store_inserted": report.store.inserted, "store_updated": report.store.updated,
            "store_unchanged": report.store.unchanged,
        })
    buyers = notify.lake.scan("purchases").filter(pl.col("user_id").is_not_null()).select(
        pl.col("user_id").n_unique()).collect().item()
    yield dg.AssetCheckResult(
        asset_key=tables.USER_FEATURES, check_name="one_row_per_buyer",
        passed=features.users.height == buyers and features.users["user_id"].is_unique().all(),
        metadata={"feature_rows": features.users.height, "buyers": int(buyers)},
    )

"""Feature engineering on the lake with polars: user features, product features, the user-product matrix.

Every feature is computed "as of" a reference time. By default that is the newest purchase in the
lake, not the wall clock, so the same data gives the same features (re-running writes nothing) and
a historical data set (Online Retail ends in December 2011) yields meaningful recencies.

Definitions (net = sales minus returns):
* user: order_count (distinct non-return orders), total_spend (net), avg_order_value (gross sales /
  order_count), return_rate (returned units / sold units), distinct_products, first/last purchase,
  recency_days, days_since_signup, top_categories (top 3 by net spend), preferred_hours (top 3 local
  hours of day of their orders, in the user's own time zone), active_days.
* product: revenue (net), units_sold (net), avg_price (gross sales / units sold), order_count,
  buyer_count, last_sold_date, return_rate.
* matrix: per (user, product) the distinct orders, net units and spend, and the last purchase time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import polars as pl

from notify_core.bounds import purchases_in_bounds
from notify_core.convergence import PartitionSource, converge
from notify_core.lake import WHOLE, Lake
from notify_core.repositories import ITEM_KEYS, WriteCounts
from notify_core.store import tables
from notify_core.store.port import Key, Store


@dataclass(frozen=True, slots=True)
class Features:
    as_of: datetime
    users: pl.DataFrame
    products: pl.DataFrame
    matrix: pl.DataFrame


def _amount() -> pl.Expr:
    return pl.col("quantity") * pl.col("unit_price")


def _ratio(numerator: pl.Expr, denominator: pl.Expr, *, digits: int = 4) -> pl.Expr:
    """numerator / denominator, 0 where the denominator is 0 or missing (no inf/NaN reaches the Store)."""
    return pl.when(denominator.fill_null(0) != 0).then((numerator / denominator).round(digits)).otherwise(0.0)


def user_product_matrix(purchases: pl.DataFrame) -> pl.DataFrame:
    return (
        purchases.filter(pl.col("user_id").is_not_null())
        .group_by("user_id", "product_id")
        .agg(
            pl.col("order_id").filter(~pl.col("is_return")).n_unique().cast(pl.Int64).alias("order_count"),
            pl.col("quantity").sum().alias("units"),
            _amount().sum().round(2).alias("spend"),
            pl.col("ts").filter(~pl.col("is_return")).max().alias("last_purchase_ts"),
        )
        .filter(pl.col("order_count") > 0)
        .sort("user_id", "product_id")
    )


def product_features(purchases: pl.DataFrame, products: pl.DataFrame) -> pl.DataFrame:
    sales = ~pl.col("is_return")
    stats = purchases.group_by("product_id").agg(
        _amount().sum().round(2).alias("revenue"),
        pl.col("quantity").sum().alias("units_sold"),
        _ratio(_amount().filter(sales).sum(), pl.col("quantity").filter(sales).sum()).alias("avg_price"),
        pl.col("order_id").filter(sales).n_unique().cast(pl.Int64).alias("order_count"),
        pl.col("user_id").filter(sales).drop_nulls().n_unique().cast(pl.Int64).alias("buyer_count"),
        pl.col("ts").filter(sales).max().dt.date().alias("last_sold_date"),
        _ratio(-pl.col("quantity").filter(~sales).sum(), pl.col("quantity").filter(sales).sum()).alias("return_rate"),
    )
    return (
        products.select("product_id", "category")
        .join(stats, on="product_id", how="left")
        .with_columns(
            pl.col("revenue", "units_sold", "order_count", "buyer_count", "avg_price", "return_rate").fill_null(0),
        )
        .sort("product_id")
    )


def user_features(
    purchases: pl.DataFrame, products: pl.DataFrame, users: pl.DataFrame, *, as_of: datetime
) -> pl.DataFrame:
    sales = ~pl.col("is_return")
    lines = (
        purchases.filter(pl.col("user_id").is_not_null())
        .join(products.select("product_id", "category"), on="product_id", how="left")
        .join(users.select("user_id", "timezone"), on="user_id", how="left")
        .with_columns(pl.col("category").fill_null("other"), pl.col("timezone").fill_null("UTC"))
    )
    # Local hour of day: convert each distinct time zone once (polars needs a literal zone per conversion).
    hours = []
    for tz in lines["timezone"].unique().to_list():
        part = lines.filter(pl.col("timezone") == tz)
        hours.append(part.with_columns(pl.col("ts").dt.convert_time_zone(tz).dt.hour().cast(pl.Int32).alias("hour"))
                     .with_columns(pl.col("ts").dt.convert_time_zone("UTC")))
    lines = pl.concat(hours) if hours else lines.with_columns(pl.lit(None, pl.Int32).alias("hour"))

    base = lines.group_by("user_id").agg(
        pl.col("order_id").filter(sales).n_unique().cast(pl.Int64).alias("order_count"),
        _amount().sum().round(2).alias("total_spend"),
        _amount().filter(sales).sum().alias("_gross"),
        pl.col("quantity").filter(sales).sum().alias("_sold"),
        (-pl.col("quantity").filter(~sales).sum()).alias("_returned"),
        pl.col("product_id").filter(sales).n_unique().cast(pl.Int64).alias("distinct_products"),
        pl.col("ts").filter(sales).min().alias("first_purchase_ts"),
        pl.col("ts").filter(sales).max().alias("last_purchase_ts"),
        pl.col("ts").filter(sales).dt.date().n_unique().cast(pl.Int64).alias("active_days"),
    )
    top_categories = (
        lines.group_by("user_id", "category").agg(_amount().sum().alias("s"))
        .sort(["user_id", "s", "category"], descending=[False, True, False])
        .group_by("user_id", maintain_order=True).agg(pl.col("category").head(3).alias("top_categories"))
    )
    orders_by_hour = (
        lines.filter(sales).unique(["user_id", "order_id"])
        .group_by("user_id", "hour").agg(pl.len().alias("n"))
        .sort(["user_id", "n", "hour"], descending=[False, True, False])
        .group_by("user_id", maintain_order=True).agg(pl.col("hour").head(3).alias("preferred_hours"))
    )
    as_of_date = as_of.date()
    return (
        base.join(top_categories, on="user_id", how="left")
        .join(orders_by_hour, on="user_id", how="left")
        .join(users.select("user_id", "signup_date"), on="user_id", how="left")
        .with_columns(
            _ratio(pl.col("_gross"), pl.col("order_count"), digits=2).alias("avg_order_value"),
            _ratio(pl.col("_returned"), pl.col("_sold")).alias("return_rate"),
            (pl.lit(as_of) - pl.col("last_purchase_ts")).dt.total_days().alias("recency_days"),
            (pl.lit(as_of_date) - pl.col("signup_date")).dt.total_days().alias("days_since_signup"),
            pl.col("preferred_hours").fill_null([]),
        )
        .drop("_gross", "_sold", "_returned", "signup_date")
        .sort("user_id")
    )


def compute_features(
    purchases: pl.DataFrame, products: pl.DataFrame, users: pl.DataFrame, *, as_of: datetime | None = None
) -> Features:
    """All three feature tables from lake frames. ``as_of`` defaults to the newest purchase.

    Purchases outside :mod:`notify_core.bounds` (an infinite price, a year-9999 date: rows that reached the
    lake before ingestion checked bounds) are left out first, so no such value reaches a feature or the
    as-of time."""
    purchases = purchases_in_bounds(purchases)
    if as_of is None:
        newest = purchases["ts"].max() if purchases.height else None
        as_of = newest if isinstance(newest, datetime) else datetime(1970, 1, 1)
    return Features(
        as_of=as_of,
        users=user_features(purchases, products, users, as_of=as_of),
        products=product_features(purchases, products),
        matrix=user_product_matrix(purchases),
    )


@dataclass(frozen=True, slots=True)
class FeatureTableReport:
    rows: int
    lake_rewritten: bool
    store: WriteCounts


def refresh_features(
    lake: Lake, store: Store, *, as_of: datetime | None = None
) -> tuple[Features, dict[str, FeatureTableReport]]:
    """Recompute the feature tables from the lake; converge the Store to them first, then save them to the lake.

    The Store is brought in step through the convergence ledger (a table whose digest the ledger already
    holds costs no Store read), rows that left a table are deleted, and only then is the lake copy
    replaced: an interrupted run leaves the old lake table, so the next run sees the same change again.
    """
    features = compute_features(lake.read("purchases"), lake.read("products"), lake.read("users"), as_of=as_of)
    reports: dict[str, FeatureTableReport] = {}
    for name, frame in ((tables.USER_FEATURES, features.users), (tables.PRODUCT_FEATURES, features.products),
                        (tables.USER_PRODUCT, features.matrix)):
        previous = lake.read_table(name) if lake.has_table(name) else frame.head(0)
        same = previous.height == frame.height and previous.schema == frame.schema and previous.equals(frame)
        counts = converge(store, name, [PartitionSource(WHOLE, frame)],
                          stale=[] if same else _stale_keys(name, previous, frame))
        rewritten = False if same else lake.write_table(name, frame)
        reports[name] = FeatureTableReport(rows=frame.height, lake_rewritten=rewritten, store=counts)
    return features, reports


_KEY_COLUMNS = {tables.USER_FEATURES: ["user_id"], tables.PRODUCT_FEATURES: ["product_id"],
                tables.USER_PRODUCT: ["user_id", "product_id"]}


def _stale_keys(name: str, previous: pl.DataFrame, frame: pl.DataFrame) -> list[Key]:
    """Store keys of rows the previous lake table had and the new one lacks (a columnar anti-join)."""
    if previous.is_empty():
        return []
    columns = _KEY_COLUMNS[name]
    gone = previous.join(frame.select(columns), on=columns, how="anti", nulls_equal=True)
    key = ITEM_KEYS[name]
    return [k for r in gone.iter_rows(named=True) if (k := key(r))[0] is not None]

"""Map the UCI Online Retail export to Notify's inputs (users, products, purchases).

The mapping, row by row (documented in the README too):

* ``InvoiceNo`` -> ``order_id``; an invoice starting with "C" is a cancellation: its lines are kept
  as returns (``is_return``, negative quantity) so spend is net of them; "A" invoices are bad-debt
  adjustments, not sales, and are dropped.
* ``StockCode`` -> ``product_id``. Codes without a digit (POST, DOT, M, BANK CHARGES, AMAZONFEE, ...)
  and ADJUST*/TEST*/gift_* are fees or vouchers, not products, and are dropped.
* ``CustomerID`` -> ``user_id`` (as an integer string). Lines without one are guest orders: they stay
  in the lake (they count for product revenue and popularity) with a null user_id.
* ``InvoiceDate`` is UK local time (Europe/London) and is converted to UTC.
* Lines with price <= 0 or (outside returns) quantity <= 0 are stock write-offs, not sales: dropped.
* Repeated lines of one product in one invoice are merged (quantities summed, price weighted).
* A product's description is its most frequent non-empty description; its price the median sale price.
* A user's country is the most frequent country of their orders.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from notify_core.catalog.categories import categorise
from notify_core.errors import ValidationError
from notify_core.schemas import PRODUCTS, PURCHASES

SOURCE_COLUMNS = ("InvoiceNo", "StockCode", "Description", "Quantity", "InvoiceDate", "UnitPrice", "CustomerID",
                  "Country")
SOURCE_TIMEZONE = "Europe/London"
NON_PRODUCT_PREFIXES = ("ADJUST", "TEST", "GIFT_")


@dataclass(frozen=True, slots=True)
class SourceTables:
    """What the loader hands to the landing folder, plus the counts of what it dropped and why."""

    users: pl.DataFrame  # user_id, country, first_purchase_ts
    products: pl.DataFrame
    purchases: pl.DataFrame
    dropped: dict[str, int] = field(default_factory=dict)
    rows_read: int = 0


def read_source(path: Path | str) -> pl.DataFrame:
    """Read the export (Parquet, CSV or Excel-converted CSV) and check it has the expected columns."""
    path = Path(path)
    if not path.exists():
        raise ValidationError(f"Online Retail file not found: {path}")
    frame = pl.read_parquet(path) if path.suffix == ".parquet" else pl.read_csv(path, infer_schema=False)
    missing = [name for name in SOURCE_COLUMNS if name not in frame.columns]
    if missing:
        raise ValidationError(f"{path} lacks the Online Retail columns {missing}")
    return frame


def map_online_retail(raw: pl.DataFrame) -> SourceTables:
    """Apply the mapping above. Pure: same input, same output."""
    frame = raw.select(
        pl.col("InvoiceNo").cast(pl.String).str.strip_chars().alias("order_id"),
        pl.col("StockCode").cast(pl.String).str.strip_chars().str.to_uppercase().alias("product_id"),
        pl.col("Description").cast(pl.String).str.strip_chars().alias("description"),
        pl.col("Quantity").cast(pl.Int64, strict=False).alias("quantity"),
        pl.col("InvoiceDate").cast(pl.String).str.to_datetime("%Y-%m-%d %H:%M:%S", strict=False)
        .dt.replace_time_zone(SOURCE_TIMEZONE, ambiguous="earliest", non_existent="null")
        .dt.convert_time_zone("UTC").alias("ts"),
        pl.col("UnitPrice").cast(pl.Float64, strict=False).alias("unit_price"),
        pl.col("CustomerID").cast(pl.Float64, strict=False).cast(pl.Int64, strict=False).cast(pl.String)
        .alias("user_id"),
        pl.col("Country").cast(pl.String).str.strip_chars().alias("country"),
    ).with_columns(pl.col("order_id").str.starts_with("C").alias("is_return"))

    reasons = {
        "adjustment invoice": pl.col("order_id").str.starts_with("A"),
        "not a product (fee, postage, voucher)": ~pl.col("product_id").str.contains(r"\d")
        | pl.any_horizontal(*(pl.col("product_id").str.starts_with(p) for p in NON_PRODUCT_PREFIXES)),
        "unparseable row": pl.col("ts").is_null() | pl.col("quantity").is_null() | pl.col("unit_price").is_null(),
        "stock write-off (price or quantity <= 0)": (pl.col("unit_price") <= 0)
        | ((pl.col("quantity") <= 0) & ~pl.col("is_return"))
        | ((pl.col("quantity") >= 0) & pl.col("is_return")),
    }
    dropped: dict[str, int] = {}
    keep = frame
    for reason, condition in reasons.items():
        mask = keep.select(condition.fill_null(True)).to_series()
        dropped[reason] = int(mask.sum())
        keep = keep.filter(~mask)

    lines = (
        keep.group_by("order_id", "product_id", maintain_order=True)
        .agg(
            pl.col("quantity").sum(),
            ((pl.col("quantity") * pl.col("unit_price")).sum() / pl.col("quantity").sum()).alias("unit_price"),
            pl.col("ts").min(),
            pl.col("user_id").first(),
            pl.col("country").first(),
            pl.col("is_return").first(),
        )
        .with_columns(pl.col("unit_price").round(4))
        .select(list(PURCHASES))
        .cast(PURCHASES)  # type: ignore[arg-type]
    )
    dropped["merged repeated lines"] = keep.height - lines.height

    products = (
        keep.group_by("product_id")
        .agg(
            pl.col("description").filter(pl.col("description").str.len_chars() > 0).mode().sort().first(),
            pl.col("unit_price").filter(~pl.col("is_return")).median().alias("unit_price"),
        )
        .with_columns(
            pl.col("description").fill_null(pl.col("product_id")),
            pl.col("unit_price").fill_null(0.0).round(2),
        )
        .with_columns(categorise(pl.col("description")).alias("category"))
        .select(list(PRODUCTS))
        .cast(PRODUCTS)  # type: ignore[arg-type]
        .sort("product_id")
    )
    users = (
        keep.filter(pl.col("user_id").is_not_null())
        .group_by("user_id")
        .agg(pl.col("country").mode().sort().first(), pl.col("ts").min().alias("first_purchase_ts"))
        .sort("user_id")
    )
    return SourceTables(users=users, products=products, purchases=lines.sort("ts", "order_id", "product_id"),
                        dropped=dropped, rows_read=raw.height)

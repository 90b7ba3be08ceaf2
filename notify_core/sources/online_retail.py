"""Map the UCI Online Retail export to Notify's inputs (users, products, purchases).

One loader for ingestion (``sources.demo``) and the offline evaluation (``evaluation.split``): both call
:func:`read_source` then :func:`map_online_retail`. It reads both UCI releases (Online Retail: InvoiceNo,
UnitPrice, CustomerID; Online Retail II: Invoice, Price, Customer ID), CSV or Parquet, with ``InvoiceDate``
as text (ISO or the Excel export's ``12/1/2010 8:26``) or as a Parquet timestamp (naive = shop-local;
zoned = converted to shop time), and any other retailer's export through a column mapping
(canonical name -> their column). A missing column is an error naming it, never a silently empty table.

The mapping, row by row (documented in the README too):

* ``InvoiceNo`` -> ``order_id``; an invoice starting with "C" is a cancellation: its lines are kept
  as returns (``is_return``, negative quantity) so spend is net of them; "A" invoices are bad-debt
  adjustments, not sales, and are dropped.
* ``StockCode`` -> ``product_id``. Codes without a digit (POST, DOT, M, BANK CHARGES, AMAZONFEE, ...)
  and ADJUST*/TEST*/gift_* are fees or vouchers, not products, and are dropped.
* ``CustomerID`` -> ``user_id`` (as an integer string: ``17850.0`` -> ``"17850"``). Lines without one are
  guest orders: they stay in the lake (they count for product revenue and popularity) with a null user_id.
  A CustomerID that is present but not a whole number ("abc", "C17850", "17850.7", "1e30") is dropped and
  counted ("unparseable CustomerID"): kept as a guest it would leave its customer's history, truncated it
  would join another customer's.
* ``InvoiceDate`` is UK local time (Europe/London) and is converted to UTC.
* Lines with price <= 0 or (outside returns) quantity <= 0 are stock write-offs, not sales: dropped.
* Repeated lines of one product in one invoice are merged (quantities summed, price weighted).
* A product's description is its most frequent non-empty description; its price the median sale price.
* A user's country is the most frequent country of their orders.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from notify_core import bounds
from notify_core.catalog.categories import categorise
from notify_core.errors import ValidationError
from notify_core.schemas import PRODUCTS, PURCHASES

SOURCE_COLUMNS = ("InvoiceNo", "StockCode", "Description", "Quantity", "InvoiceDate", "UnitPrice", "CustomerID",
                  "Country")
SOURCE_TIMEZONE = "Europe/London"
NON_PRODUCT_PREFIXES = ("ADJUST", "TEST", "GIFT_")
# Other names of the canonical columns: the UCI Online Retail II release (2009-2011).
COLUMN_ALIASES: dict[str, tuple[str, ...]] = {"InvoiceNo": ("Invoice",), "UnitPrice": ("Price",),
                                              "CustomerID": ("Customer ID",)}
# Text forms of InvoiceDate seen in the exports, tried in order (ISO, ISO with fractions, the UCI Excel export).
TIMESTAMP_FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%S%.f",
                     "%Y-%m-%d %H:%M", "%m/%d/%Y %H:%M", "%m/%d/%Y %H:%M:%S", "%d/%m/%Y %H:%M")


@dataclass(frozen=True, slots=True)
class SourceTables:
    """What the loader hands to the landing folder, plus the counts of what it dropped and why."""

    users: pl.DataFrame  # user_id, country, first_purchase_ts
    products: pl.DataFrame
    purchases: pl.DataFrame
    dropped: dict[str, int] = field(default_factory=dict)
    rows_read: int = 0


def read_source(path: Path | str, *, columns: Mapping[str, str] | None = None) -> pl.DataFrame:
    """Read the export (Parquet or CSV), in canonical columns (:func:`normalise_columns`)."""
    path = Path(path)
    if not path.exists():
        raise ValidationError(f"Online Retail file not found: {path}")
    frame = pl.read_parquet(path) if path.suffix == ".parquet" else pl.read_csv(path, infer_schema=False)
    return normalise_columns(frame, columns=columns, origin=str(path))


def normalise_columns(frame: pl.DataFrame, *, columns: Mapping[str, str] | None = None,
                      origin: str = "the export") -> pl.DataFrame:
    """``frame`` with the canonical :data:`SOURCE_COLUMNS` and ``InvoiceDate`` as a naive shop-local Datetime.

    ``columns`` maps a canonical name to the export's column (another retailer's names); otherwise a
    canonical name, then its :data:`COLUMN_ALIASES`, is looked up. Idempotent, so the mapping can take
    frames straight from tests or from :func:`read_source`.
    """
    mapping = dict(columns or {})
    unknown = sorted(set(mapping) - set(SOURCE_COLUMNS))
    if unknown:
        raise ValidationError(f"column mapping names unknown columns {unknown}; the columns are {list(SOURCE_COLUMNS)}")
    chosen: dict[str, str] = {}
    missing: list[str] = []
    for name in SOURCE_COLUMNS:
        options = (mapping[name],) if name in mapping else (name, *COLUMN_ALIASES.get(name, ()))
        found = next((o for o in options if o in frame.columns), None)
        if found is None:
            missing.append(name if name not in mapping else f"{name} (mapped to {mapping[name]!r})")
        else:
            chosen[name] = found
    if missing:
        raise ValidationError(f"{origin} lacks the Online Retail columns {missing} (found {frame.columns}; "
                              "Online Retail II names and a column mapping are accepted)")
    out = frame.select(pl.col(chosen[name]).alias(name) for name in SOURCE_COLUMNS)
    return out.with_columns(local_timestamps(out["InvoiceDate"]).alias("InvoiceDate"))


def local_timestamps(values: pl.Series) -> pl.Series:
    """``InvoiceDate`` as a naive Datetime in shop time, whatever it came as (text in any of
    :data:`TIMESTAMP_FORMATS`, a date, a naive or zoned timestamp); unparseable values become null and the
    mapping counts them as "unparseable row"."""
    dtype = values.dtype
    if isinstance(dtype, pl.Datetime):
        if dtype.time_zone is not None:
            values = values.dt.convert_time_zone(SOURCE_TIMEZONE).dt.replace_time_zone(None)
        return values.cast(pl.Datetime("us"))
    if dtype == pl.Date:
        return values.cast(pl.Datetime("us"))
    text = values.cast(pl.String).str.strip_chars()
    parsed = pl.select(pl.coalesce(*(text.str.to_datetime(f, strict=False, time_unit="us")
                                     for f in TIMESTAMP_FORMATS))).to_series()
    return parsed.alias(values.name)


def _customer_id(dtype: pl.DataType) -> tuple[pl.Expr, pl.Expr]:
    """``CustomerID`` as ``user_id`` (integer text, null where it is not a whole number), and whether one
    was given at all (a null, NaN or blank value is a guest, not an unparseable id)."""
    customer = pl.col("CustomerID")
    if dtype == pl.String:
        customer = customer.str.strip_chars()
        return bounds.integer_id_text(customer), customer.is_not_null() & (customer != "")
    if dtype.is_integer():  # exact as it is (through a float, an id past 2^53 would change)
        return customer.cast(pl.String), customer.is_not_null()
    given = customer.is_not_null() & customer.is_not_nan() if dtype.is_float() else customer.is_not_null()
    return bounds.integer_id_text(customer), given


def map_online_retail(raw: pl.DataFrame) -> SourceTables:
    """Apply the mapping above. Pure: same input, same output."""
    raw = normalise_columns(raw)
    user_id, customer_given = _customer_id(raw.schema["CustomerID"])
    frame = raw.select(
        pl.col("InvoiceNo").cast(pl.String).str.strip_chars().alias("order_id"),
        pl.col("StockCode").cast(pl.String).str.strip_chars().str.to_uppercase().alias("product_id"),
        pl.col("Description").cast(pl.String).str.strip_chars().alias("description"),
        pl.col("Quantity").cast(pl.Int64, strict=False).alias("quantity"),
        pl.col("InvoiceDate").dt.replace_time_zone(SOURCE_TIMEZONE, ambiguous="earliest", non_existent="null")
        .dt.convert_time_zone("UTC").alias("ts"),
        pl.col("UnitPrice").cast(pl.Float64, strict=False).alias("unit_price"),
        user_id.alias("user_id"),
        customer_given.alias("customer_given"),
        pl.col("Country").cast(pl.String).str.strip_chars().alias("country"),
    ).with_columns(pl.col("order_id").str.starts_with("C").alias("is_return"))

    reasons = {
        "adjustment invoice": pl.col("order_id").str.starts_with("A"),
        "not a product (fee, postage, voucher)": ~pl.col("product_id").str.contains(r"\d")
        | pl.any_horizontal(*(pl.col("product_id").str.starts_with(p) for p in NON_PRODUCT_PREFIXES)),
        "unparseable row": pl.col("ts").is_null() | pl.col("quantity").is_null() | pl.col("unit_price").is_null(),
        "unparseable CustomerID": pl.col("customer_given") & pl.col("user_id").is_null(),
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

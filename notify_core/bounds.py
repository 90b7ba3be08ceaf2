"""Sane bounds for what enters Notify in batch: dates, amounts and counts, each a named constant.

A single poisoned row used to move everything downstream: an order dated 9999-12-31 became the lake's
"newest purchase", the as-of time of every feature, and put every user's ``recency_days`` near three
million; a price of 1e308 made spend and revenue infinite. These bounds are enforced twice:

* at batch ingestion (:mod:`notify_core.ingest.validation`): a row outside a bound is quarantined with a
  reason that names the bound (``"ts after MAX_FUTURE_SKEW (now + 1 day)"``), and a non-finite number
  (``inf``, ``nan``) does not parse;
* in feature engineering (:func:`purchases_in_bounds`), as defence in depth for rows that reached the
  lake before these checks existed: features never see an infinite amount or a year-9999 date.

Why these numbers: Online Retail's dearest line is 38,970 and its largest quantity 80,995; a shop whose
real orders pass 1,000,000 per unit or per line changes the constant, visibly. Dates start at
:data:`MIN_DATE` (older is a typo or an epoch default) and may run at most :data:`MAX_FUTURE_SKEW` ahead of
the ingesting clock (clock skew between shops and Notify), and never past :data:`MAX_DATE`.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import polars as pl

MIN_DATE = date(1990, 1, 1)
MAX_DATE = date(2100, 1, 1)  # the static ceiling when no clock is at hand (features)
MIN_TIMESTAMP = datetime(MIN_DATE.year, MIN_DATE.month, MIN_DATE.day, tzinfo=UTC)
MAX_TIMESTAMP = datetime(MAX_DATE.year, MAX_DATE.month, MAX_DATE.day, tzinfo=UTC)
MAX_FUTURE_SKEW = timedelta(days=1)  # purchases and sign-ups at most this far ahead of "now"
MAX_UNIT_PRICE = 1_000_000.0  # per unit, any currency
MAX_QUANTITY = 1_000_000  # units in one order line, either sign
MAX_COOLDOWN_HOURS = 24 * 366
MAX_DAILY_BUDGET = 1_000_000_000  # sends per campaign and day
MAX_PRIORITY = 5
MAX_DAILY_CAP = 5


def latest_allowed(now: datetime | None) -> datetime:
    """The newest timestamp accepted: ``now + MAX_FUTURE_SKEW``, never past :data:`MAX_TIMESTAMP`."""
    if now is None:
        return MAX_TIMESTAMP
    return min(now.astimezone(UTC) + MAX_FUTURE_SKEW, MAX_TIMESTAMP)


def latest_allowed_label(now: datetime | None) -> str:
    return "MAX_FUTURE_SKEW (now + 1 day)" if now is not None else f"MAX_DATE ({MAX_DATE.isoformat()})"


def purchases_in_bounds(purchases: pl.DataFrame) -> pl.DataFrame:
    """Only purchase rows inside every bound (finite, in range, dated between MIN_DATE and MAX_DATE)."""
    if purchases.is_empty():
        return purchases
    price = pl.col("unit_price")
    quantity = pl.col("quantity")
    ts = pl.col("ts")
    keep = (price.is_finite() & (price > 0) & (price <= MAX_UNIT_PRICE)
            & (quantity.abs() <= MAX_QUANTITY)
            & (ts >= pl.lit(MIN_TIMESTAMP)) & (ts < pl.lit(MAX_TIMESTAMP)))
    return purchases.filter(keep.fill_null(False))

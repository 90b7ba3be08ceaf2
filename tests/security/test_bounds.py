"""Bounds at batch ingestion (a quarantined row names the bound it broke) and in feature engineering
(poisoned rows that reached the lake anyway never move recency or make spend infinite)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl

from notify_core import bounds
from notify_core.clock import ManualClock
from notify_core.features import compute_features
from notify_core.ingest.batch import ingest_dataset
from notify_core.lake import Lake
from notify_core.schemas import PRODUCTS, PURCHASES, USERS
from notify_core.store.sqlite import SqliteStore

NOW = datetime(2031, 5, 6, 7, 8, tzinfo=UTC)


def test_poisoned_rows_are_quarantined_with_the_bound_they_broke(tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    (landing / "purchases").mkdir(parents=True)
    tomorrow_plus = (NOW + timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%S")
    (landing / "purchases" / "p.csv").write_text(
        "order_id,user_id,product_id,quantity,unit_price,ts,country,is_return\n"
        "ok,u1,p1,2,2.5,2031-01-10T09:00:00,GB,false\n"
        "huge,u1,p1,1,1e308,2031-01-10T09:00:00,GB,false\n"
        "inf,u1,p1,1,inf,2031-01-10T09:00:00,GB,false\n"
        "y9999,u1,p1,1,2.5,9999-12-31T00:00:00,GB,false\n"
        f"future,u1,p1,1,2.5,{tomorrow_plus},GB,false\n"
        "ancient,u1,p1,1,2.5,1901-01-01T00:00:00,GB,false\n"
        "bulk,u1,p1,5000000,2.5,2031-01-10T09:00:00,GB,false\n"
        "tiny,u1,p1,1,1e-200,2031-01-10T09:00:00,GB,false\n")  # DynamoDB's Number underflows below 1e-130
    store = SqliteStore(tmp_path / "store.sqlite")
    try:
        report = ingest_dataset("purchases", landing=landing, lake=Lake(tmp_path / "lake"), store=store,
                                quarantine=tmp_path / "quarantine", clock=ManualClock(NOW))
    finally:
        store.close()
    reasons = {row.key["order_id"]: row.reason for row in report.bad_rows}
    assert reasons == {
        "huge": f"unit_price above MAX_UNIT_PRICE ({bounds.MAX_UNIT_PRICE:g})",
        "inf": "unparseable unit_price",
        "y9999": "ts above MAX_FUTURE_SKEW (now + 1 day)",
        "future": "ts above MAX_FUTURE_SKEW (now + 1 day)",
        "ancient": "ts before MIN_DATE (1990-01-01)",
        "bulk": "quantity above MAX_QUANTITY (1000000)",
        "tiny": f"unit_price nonzero below MIN_NONZERO_MAGNITUDE ({bounds.MIN_NONZERO_MAGNITUDE:g})",
    }
    assert report.rows_valid == 1
    assert list((tmp_path / "quarantine" / "purchases").glob("*.parquet"))


def test_features_never_see_infinite_or_year_9999_values() -> None:
    users = pl.DataFrame({"user_id": [f"u{i}" for i in range(20)], "timezone": ["UTC"] * 20}).with_columns(
        pl.lit(datetime(2010, 1, 1).date()).alias("signup_date")).cast({k: v for k, v in USERS.items()
                                                                         if k in ("user_id", "timezone",
                                                                                  "signup_date")})
    users = users.with_columns(*[pl.lit(None, dtype=t).alias(c) for c, t in USERS.items() if c not in users.columns])
    products = pl.DataFrame({"product_id": ["p1"], "description": ["MUG"], "category": ["kitchen"],
                             "unit_price": [2.5]}, schema=PRODUCTS)
    base = datetime(2011, 6, 1, tzinfo=UTC)
    rows = [{"order_id": f"o{i}", "user_id": f"u{i}", "product_id": "p1", "quantity": 1, "unit_price": 2.5,
             "ts": base + timedelta(days=i), "country": "GB", "is_return": False} for i in range(20)]
    poison = [
        {**rows[0], "order_id": "p9999", "ts": datetime(9999, 12, 31, tzinfo=UTC)},  # what set recency to 2.9M days
        {**rows[1], "order_id": "p1e308", "unit_price": 1e308, "quantity": 10},
        {**rows[2], "order_id": "pinf", "unit_price": float("inf")},
        # each factor within its bound, the line 10^12: capture refuses it (bounds.line_reason)
        {**rows[3], "order_id": "pamount", "unit_price": bounds.MAX_UNIT_PRICE, "quantity": bounds.MAX_QUANTITY},
    ]
    purchases = pl.DataFrame(rows + poison, schema=PURCHASES)
    clean = compute_features(pl.DataFrame(rows, schema=PURCHASES), products, users)
    poisoned = compute_features(purchases, products, users)
    assert poisoned.as_of == clean.as_of == base + timedelta(days=19)
    median = poisoned.users["recency_days"].median()
    assert median == clean.users["recency_days"].median() and median is not None and 0 <= float(median) <= 19
    for frame, columns in ((poisoned.users, ("total_spend", "avg_order_value")),
                           (poisoned.products, ("revenue", "avg_price"))):
        for column in columns:
            assert frame[column].is_finite().all(), column
    assert poisoned.users.equals(clean.users)


def test_batch_campaigns_get_the_upsert_content_checks(tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    (landing / "campaigns").mkdir(parents=True)
    (landing / "campaigns" / "c.csv").write_text(
        "campaign_id,name,text,start_date,end_date,url,template\n"
        "ok,n,t,2031-01-01,2031-02-01,https://shop.example.com/c/ok,{first_name}: {url}\n"
        "amp,n,t,2031-01-01,2031-02-01,https://shop.example.com/c/a,{first_name:x>50000000}\n"
        "js,n,t,2031-01-01,2031-02-01,javascript:alert(1),{url}\n"
        "none,n,t,2031-01-01,2031-02-01,,\n")
    store = SqliteStore(tmp_path / "store.sqlite")
    try:
        report = ingest_dataset("campaigns", landing=landing, lake=Lake(tmp_path / "lake"), store=store,
                                quarantine=tmp_path / "quarantine", clock=ManualClock(NOW))
    finally:
        store.close()
    reasons = {row.key["campaign_id"]: row.reason for row in report.bad_rows}
    assert set(reasons) == {"amp", "js"} and report.rows_valid == 2
    assert reasons["amp"].startswith("unsafe template") and reasons["js"].startswith("unsafe url")


def test_an_integer_property_must_fit_int64_to_its_last_value() -> None:
    """Every backend stores a 64-bit integer: 2^63-1 and -2^63 are accepted, one past either is refused."""
    assert bounds.scalar_reason(2**63 - 1) is None and bounds.scalar_reason(-(2**63)) is None
    for outside in (2**63, -(2**63) - 1):
        assert bounds.scalar_reason(outside) == f"integer {outside} is outside the 64-bit range [-2^63, 2^63-1]"

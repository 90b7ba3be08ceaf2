from __future__ import annotations

from datetime import UTC, datetime

import polars as pl
import pytest

from notify_core.errors import ValidationError
from notify_core.sources.online_retail import map_online_retail, read_source
from notify_core.sources.synthetic import enrich_users, generate_campaigns
from tests.retail_fixture import BOXES, HEART, STAR, retail_frame


@pytest.fixture(scope="module")
def mapped():
    return map_online_retail(retail_frame())


def test_drops_non_products_and_write_offs_with_counted_reasons(mapped) -> None:
    assert mapped.dropped["not a product (fee, postage, voucher)"] == 1
    assert mapped.dropped["stock write-off (price or quantity <= 0)"] == 1
    assert mapped.dropped["merged repeated lines"] == 1
    assert set(mapped.products["product_id"]) == {HEART, BOXES, STAR}


def test_cancellations_become_returns_and_guests_keep_null_user(mapped) -> None:
    purchases = mapped.purchases
    ret = purchases.filter(pl.col("order_id") == "C1003").row(0, named=True)
    assert ret["is_return"] is True and ret["quantity"] == -2
    guest = purchases.filter(pl.col("order_id") == "1005").row(0, named=True)
    assert guest["user_id"] is None
    merged = purchases.filter(pl.col("order_id") == "1006").row(0, named=True)
    assert merged["quantity"] == 6 and merged["unit_price"] == pytest.approx(4.25)


def test_uk_local_time_is_converted_to_utc() -> None:
    frame = retail_frame().with_columns(pl.lit("2011-07-01 09:00:00").alias("InvoiceDate"))  # BST = UTC+1
    ts = map_online_retail(frame).purchases["ts"][0]
    assert ts == datetime(2011, 7, 1, 8, 0, tzinfo=UTC)


def test_users_are_customers_with_their_most_frequent_country(mapped) -> None:
    users = {r["user_id"]: r["country"] for r in mapped.users.iter_rows(named=True)}
    assert users == {"100": "United Kingdom", "200": "France"}


def test_missing_columns_are_a_clear_error(tmp_path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("InvoiceNo,StockCode\n1,2\n")
    with pytest.raises(ValidationError, match="lacks the Online Retail columns"):
        read_source(path)


def test_generator_is_deterministic_and_valid(mapped) -> None:
    users_a = enrich_users(mapped.users, seed=3)
    users_b = enrich_users(mapped.users, seed=3)
    assert users_a.equals(users_b)
    assert users_a.filter(pl.col("user_id") == "200")["timezone"].item() == "Europe/Paris"
    assert users_a["daily_cap"].is_between(1, 5).all()
    assert (users_a["signup_date"] <= pl.Series([datetime(2011, 3, 10).date()] * 2)).all()
    campaigns = generate_campaigns(mapped.products, mapped.purchases, seed=3)
    assert campaigns.equals(generate_campaigns(mapped.products, mapped.purchases, seed=3))
    assert campaigns["campaign_id"].is_unique().all()
    promoted = {p for ids in campaigns["product_ids"] for p in ids}
    assert promoted <= {HEART, BOXES, STAR}
    assert (campaigns["end_date"] >= campaigns["start_date"]).all()

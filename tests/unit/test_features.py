"""Feature values against hand computation on tests/retail_fixture.py."""

from __future__ import annotations

from datetime import UTC, date, datetime

import polars as pl
import pytest

from notify_core.features import compute_features
from notify_core.sources.online_retail import map_online_retail
from notify_core.sources.synthetic import enrich_users
from tests.retail_fixture import BOXES, HEART, STAR, retail_frame


@pytest.fixture(scope="module")
def features():
    mapped = map_online_retail(retail_frame())
    users = enrich_users(mapped.users, seed=1)
    return compute_features(mapped.purchases, mapped.products, users), users


def _row(frame: pl.DataFrame, column: str, value: str) -> dict:
    return frame.filter(pl.col(column) == value).row(0, named=True)


def test_as_of_is_the_newest_purchase(features) -> None:
    f, _ = features
    assert f.as_of == datetime(2011, 3, 10, 12, 0, tzinfo=UTC)


def test_user_100(features) -> None:
    f, users = features
    u = _row(f.users, "user_id", "100")
    assert u["order_count"] == 2  # 1001, 1002 (C1003 is a return)
    assert u["total_spend"] == pytest.approx(6 * 2.55 + 2 * 7.65 + 12 * 2.50 - 2 * 2.50)  # 55.6
    assert u["avg_order_value"] == pytest.approx((6 * 2.55 + 2 * 7.65 + 12 * 2.50) / 2)  # 30.3
    assert u["return_rate"] == pytest.approx(2 / 20)
    assert u["distinct_products"] == 2
    assert u["recency_days"] == 27  # 2011-02-10 14:30 -> 2011-03-10 12:00 is 27.9 days
    assert u["preferred_hours"] == [9, 14]  # London local hours of 1001 and 1002
    assert u["top_categories"][0] == "candles & lighting"  # the T-light holder: 15.3 + 30 - 5 > boxes 15.3
    signup = _row(users, "user_id", "100")["signup_date"]
    assert u["days_since_signup"] == (date(2011, 3, 10) - signup).days


def test_user_200_hours_are_in_their_own_time_zone(features) -> None:
    f, _ = features
    u = _row(f.users, "user_id", "200")
    assert u["order_count"] == 2
    assert u["avg_order_value"] == pytest.approx((8.00 + 6 * 4.25) / 2)
    assert u["preferred_hours"] == [13, 19]  # 12:00 and 18:00 UTC in Europe/Paris (UTC+1 in March)
    assert u["recency_days"] == 0


def test_product_features(features) -> None:
    f, _ = features
    heart = _row(f.products, "product_id", HEART)
    assert heart["revenue"] == pytest.approx(15.3 + 30.0 - 5.0 + 7.8)  # guest order counts for products
    assert heart["units_sold"] == 6 + 12 - 2 + 3
    assert heart["avg_price"] == pytest.approx(round((15.3 + 30.0 + 7.8) / 21, 4))
    assert heart["order_count"] == 3
    assert heart["buyer_count"] == 1  # the guest is not a known buyer
    assert heart["last_sold_date"] == date(2011, 3, 5)
    assert heart["return_rate"] == pytest.approx(round(2 / 21, 4))
    star = _row(f.products, "product_id", STAR)
    assert star["units_sold"] == 6 and star["revenue"] == pytest.approx(25.5)


def test_user_product_matrix(features) -> None:
    f, _ = features
    m = {(r["user_id"], r["product_id"]): r for r in f.matrix.iter_rows(named=True)}
    assert set(m) == {("100", HEART), ("100", BOXES), ("200", BOXES), ("200", STAR)}
    assert m[("100", HEART)]["order_count"] == 2
    assert m[("100", HEART)]["units"] == 16
    assert m[("100", HEART)]["spend"] == pytest.approx(40.3)

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

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


def _two_orders(customer_id: str | float | None, *, dtype: pl.DataType = pl.String) -> pl.DataFrame:
    """Two orders of one product: customer 17850 (as the export writes it), then ``customer_id``."""
    first: str | float = "17850.0" if dtype == pl.String else 17850.0
    return pl.DataFrame({
        "InvoiceNo": ["536365", "536366"], "StockCode": ["85123A", "85123A"], "Description": ["MUG", "MUG"],
        "Quantity": ["1", "2"], "InvoiceDate": ["12/1/2010 8:26", "12/1/2010 9:26"],
        "UnitPrice": ["2.5", "2.5"], "Country": ["UK", "UK"],
    }).with_columns(pl.Series("CustomerID", [first, customer_id], dtype=dtype))


@pytest.mark.parametrize("customer_id", ["abc", "1e30", "17850.7", "C17850"])
def test_a_customer_id_that_is_not_a_whole_number_is_dropped_and_counted(customer_id: str) -> None:
    """'abc', '1e30' or 'C17850' became null (the customer's purchase kept as a guest order, out of their
    history) and '17850.7' was truncated into customer 17850's history; neither was counted in ``dropped``."""
    tables = map_online_retail(_two_orders(customer_id))
    assert tables.dropped["unparseable CustomerID"] == 1
    assert tables.purchases.select("order_id", "user_id").rows() == [("536365", "17850")]


@pytest.mark.parametrize(("customer_id", "dtype"), [(None, pl.String), (" ", pl.String), (None, pl.Float64),
                                                    (float("nan"), pl.Float64)])
def test_only_a_missing_customer_id_is_a_guest_order(customer_id: str | float | None, dtype: pl.DataType) -> None:
    tables = map_online_retail(_two_orders(customer_id, dtype=dtype))
    assert tables.dropped["unparseable CustomerID"] == 0
    assert tables.purchases.select("order_id", "user_id").rows() == [("536365", "17850"), ("536366", None)]


def test_an_integer_customer_id_column_keeps_its_ids_exact() -> None:
    frame = _two_orders(None).with_columns(pl.Series("CustomerID", [17850, 2**60 + 1], dtype=pl.Int64))
    assert map_online_retail(frame).purchases["user_id"].to_list() == ["17850", str(2**60 + 1)]


FULL_EXPORT = Path(__file__).resolve().parents[2] / "../shared/data/online_retail/online_retail.parquet"


def test_the_readme_figures_of_the_full_export() -> None:
    """README, "The Online Retail data": what the mapping does to the whole UCI export, the catalogue's size
    and the share of products the keyword taxonomy leaves in "other"."""
    if not FULL_EXPORT.exists():
        pytest.skip("the shipped Online Retail file is not here")
    from notify_core.settings import load_settings

    raw = read_source(FULL_EXPORT)
    mapped = map_online_retail(raw)
    assert raw.height == 541_909
    assert mapped.dropped["not a product (fee, postage, voucher)"] == 2_827
    assert mapped.dropped["stock write-off (price or quantity <= 0)"] == 2_498
    assert mapped.dropped["merged repeated lines"] == 10_541
    purchases = mapped.purchases
    assert purchases.height == 526_040
    assert purchases.filter(pl.col("is_return")).height == 8_636
    assert purchases.filter(pl.col("user_id").is_null()).height == 131_105
    assert (mapped.products.height, mapped.users.height) == (3_811, 4_362)
    # "A..." invoices (bad-debt adjustments) dropped; fee codes without a digit and ADJUST*/TEST*/gift_* too
    assert mapped.dropped["adjustment invoice"] == 3
    assert purchases.filter(pl.col("order_id").str.starts_with("A")).is_empty()
    products = mapped.products["product_id"]
    assert products.str.contains(r"\d").all()
    assert not products.str.contains(r"^(?i:ADJUST|TEST|gift_)").any()
    assert (purchases.filter(pl.col("is_return"))["quantity"] < 0).all()  # "C..." kept as returns, negative
    other = mapped.products.filter(pl.col("category") == "other").height
    assert other == 497 and round(100 * (1 - other / mapped.products.height)) == 87
    seed = load_settings(data_dir=Path("unused")).seed
    assert generate_campaigns(mapped.products, purchases, seed=seed).height == 1_662

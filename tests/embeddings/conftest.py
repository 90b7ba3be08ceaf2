"""Fixtures of the embedding tests: a small lake cut from the real Online Retail data, and its Store.

The sample is a fixed set of buyers (the first N customer ids with at least 2 orders), every purchase
line of theirs, the products they bought and the first campaigns, so counts are exact and stable.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import polars as pl
import pytest

from notify_core.lake import Lake
from notify_core.settings import NotifySettings
from notify_core.sources.online_retail import map_online_retail, read_source
from notify_core.sources.synthetic import generate_campaigns

SOURCE = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "online_retail" / "online_retail.parquet"


@dataclass(frozen=True)
class Sample:
    products: pl.DataFrame
    purchases: pl.DataFrame
    campaigns: pl.DataFrame

    def write(self, lake: Lake) -> None:
        for name, frame in (("products", self.products), ("purchases", self.purchases),
                            ("campaigns", self.campaigns)):
            lake.merge(name, frame)

    @property
    def expected_orders(self) -> int:
        """Orders with at least one non-return line (what purchase_embeddings must embed)."""
        sales = self.purchases.filter(~pl.col("is_return") & (pl.col("quantity") > 0))
        return int(sales["order_id"].n_unique())

    @property
    def buyers(self) -> int:
        sales = self.purchases.filter(~pl.col("is_return") & (pl.col("quantity") > 0))
        return int(sales["user_id"].drop_nulls().n_unique())


@pytest.fixture(scope="session")
def retail_tables() -> object:
    if not SOURCE.exists():
        pytest.fail(f"the Online Retail data is required at {SOURCE}", pytrace=False)
    return map_online_retail(read_source(SOURCE))


def _sample(tables: object, users: int, campaigns: int) -> Sample:
    purchases: pl.DataFrame = tables.purchases  # type: ignore[attr-defined]
    products: pl.DataFrame = tables.products  # type: ignore[attr-defined]
    repeat = (purchases.filter(pl.col("user_id").is_not_null() & ~pl.col("is_return"))
              .group_by("user_id").agg(pl.col("order_id").n_unique().alias("n")).filter(pl.col("n") >= 2)
              .sort("user_id").head(users))
    mine = purchases.join(repeat.select("user_id"), on="user_id", how="semi")
    bought = products.join(mine.select("product_id").unique(), on="product_id", how="semi")
    camp = generate_campaigns(products, purchases, seed=7).head(campaigns)
    return Sample(products=bought, purchases=mine, campaigns=camp)


@pytest.fixture(scope="session")
def small_sample(retail_tables: object) -> Sample:
    """25 repeat buyers (~100 orders, a few hundred products) and 20 campaigns."""
    return _sample(retail_tables, users=25, campaigns=20)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def sample_lake(small_sample: Sample, data_dir: Path) -> Lake:
    lake = Lake(NotifySettings(data_dir=data_dir).lake_root)
    small_sample.write(lake)
    return lake


@dataclass(frozen=True)
class Increment:
    products: pl.DataFrame
    purchases: pl.DataFrame
    users: list[str]
    orders: list[str]


@pytest.fixture
def make_increment(small_sample: Sample) -> Callable[..., Increment]:
    """10 new products and 100 purchase lines (25 new orders of 4 lines) for 20 existing buyers.

    Every new order holds 2 new products and 2 products the sample already has; the orders are dated a
    day after the newest purchase, so they land in one (the newest) month partition.
    """

    def build(*, new_products: int = 10, lines: int = 100, users: int = 20) -> Increment:
        existing = small_sample.products["product_id"].sort().to_list()
        products = pl.DataFrame({
            "product_id": [f"9{n:04d}" for n in range(new_products)],
            "description": [f"NEW TEST LANTERN DESIGN {n}" for n in range(new_products)],
            "category": ["home decor"] * new_products,
            "unit_price": [1.5 + n for n in range(new_products)],
        })
        buyers = small_sample.purchases.filter(~pl.col("is_return"))["user_id"].drop_nulls().unique().sort()
        chosen = buyers.head(users).to_list()
        newest = small_sample.purchases["ts"].max()
        rows = []
        orders = lines // 4
        for o in range(orders):
            order_id = f"T{o:05d}"
            for k in range(4):
                new_pid = products["product_id"][(2 * o + k) % new_products]
                pid = new_pid if k < 2 else existing[(o * 7 + k) % len(existing)]
                rows.append({"order_id": order_id, "user_id": chosen[o % users], "product_id": pid,
                             "quantity": 1 + (o + k) % 6, "unit_price": 2.0,
                             "ts": newest + timedelta(days=1, minutes=o), "country": "United Kingdom",
                             "is_return": False})
        purchases = pl.DataFrame(rows, schema=small_sample.purchases.schema)
        return Increment(products=products, purchases=purchases, users=chosen,
                         orders=sorted({r["order_id"] for r in rows}))

    return build

"""Fixtures of the evaluation tests: a hand-made export around a cut-off, and one CI-sized run on real data.

The real-data run uses a seeded sample of 200 users and the HashingEmbedder (no semantics, but the same
code path and fast), so the end-to-end tests cost seconds, not the ~30 s of embedding with MiniLM.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import polars as pl
import pytest

from notify_core.embeddings.embedder import HashingEmbedder
from notify_core.evaluation import Report, evaluate

SOURCE = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "online_retail" / "online_retail.parquet"
CUTOFF = date(2011, 3, 1)
SAMPLE = 200

# (invoice, stock code, qty, local time, customer) - A, B, C bought before the cut-off, D only after it.
ROWS = [
    ("1001", "10001", 6, "2011-01-10 09:00:00", 100.0),
    ("1001", "10002", 2, "2011-01-10 09:00:00", 100.0),
    ("1002", "10001", 3, "2011-02-10 09:00:00", 100.0),
    ("1003", "10002", 1, "2011-02-11 09:00:00", 200.0),
    ("1004", "10003", 4, "2011-02-28 23:30:00", 200.0),  # the last minute before the cut-off (local)
    ("1005", "10001", 5, "2011-02-20 12:00:00", 300.0),  # 300 never buys after: not evaluated
    ("2001", "10001", 2, "2011-03-01 00:30:00", 100.0),  # test window from here
    ("2002", "10004", 9, "2011-03-05 10:00:00", 100.0),  # a product first sold after the cut-off
    ("2003", "10003", 1, "2011-03-20 10:00:00", 200.0),
    ("2004", "10002", 1, "2011-06-01 10:00:00", 200.0),  # after a 60-day horizon
    ("2005", "10002", 1, "2011-03-03 10:00:00", 400.0),  # 400 never bought before: not evaluated
]
DESCRIPTIONS = {"10001": "WHITE HANGING HEART T-LIGHT HOLDER", "10002": "SET 7 BABUSHKA NESTING BOXES",
                "10003": "GLASS STAR FROSTED T-LIGHT HOLDER", "10004": "RED SPOTTY PARTY BAG"}


@pytest.fixture
def tiny_export() -> pl.DataFrame:
    """The hand-made Online Retail export above (all UK, price 2.50)."""
    return pl.DataFrame(
        [{"InvoiceNo": inv, "StockCode": code, "Description": DESCRIPTIONS[code], "Quantity": qty,
          "InvoiceDate": ts, "UnitPrice": 2.5, "CustomerID": cust, "Country": "United Kingdom"}
         for inv, code, qty, ts, cust in ROWS],
        schema={"InvoiceNo": pl.String, "StockCode": pl.String, "Description": pl.String, "Quantity": pl.Int64,
                "InvoiceDate": pl.String, "UnitPrice": pl.Float64, "CustomerID": pl.Float64, "Country": pl.String},
    )


def run_sample(*, seed: int = 0) -> Report:
    return evaluate(SOURCE, embedder=HashingEmbedder(), seed=seed, sample_users=SAMPLE)


@pytest.fixture(scope="session")
def retail_source() -> Path:
    if not SOURCE.exists():
        pytest.fail(f"the Online Retail data is required for the evaluation tests: {SOURCE}", pytrace=False)
    return SOURCE


@pytest.fixture(scope="session")
def sample_report(retail_source: Path) -> Report:
    """One CI-sized run (200 users, HashingEmbedder), shared by the end-to-end tests."""
    return run_sample()

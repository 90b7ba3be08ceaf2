"""A tiny Online Retail export whose features are computed by hand in the tests.

| row | invoice | stock  | qty | time (UK)        | price | customer | note                   |
|-----|---------|--------|-----|------------------|-------|----------|------------------------|
| 1   | 1001    | 85123A | 6   | 2011-01-10 09:00 | 2.55  | 100      |                        |
| 2   | 1001    | 22752  | 2   | 2011-01-10 09:00 | 7.65  | 100      |                        |
| 3   | 1002    | 85123A | 12  | 2011-02-10 14:30 | 2.50  | 100      |                        |
| 4   | C1003   | 85123A | -2  | 2011-02-11 10:00 | 2.50  | 100      | cancellation -> return |
| 5   | 1004    | 22752  | 1   | 2011-03-01 18:00 | 8.00  | 200      |                        |
| 6   | 1004    | POST   | 1   | 2011-03-01 18:00 | 18.00 | 200      | postage: not a product |
| 7   | 1005    | 85123A | 3   | 2011-03-05 11:00 | 2.60  | (none)   | guest order            |
| 8   | 1006    | 21730  | 4   | 2011-03-10 12:00 | 4.25  | 200      |                        |
| 9   | 1006    | 21730  | 2   | 2011-03-10 12:00 | 4.25  | 200      | repeated line: merged  |
| 10  | 1007    | 22752  | 0   | 2011-03-10 12:00 | 0.00  | 200      | write-off: dropped     |
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

HEART, BOXES, STAR = "85123A", "22752", "21730"
DESCRIPTIONS = {HEART: "WHITE HANGING HEART T-LIGHT HOLDER", BOXES: "SET 7 BABUSHKA NESTING BOXES",
                STAR: "GLASS STAR FROSTED T-LIGHT HOLDER", "POST": "POSTAGE"}

ROWS = [
    ("1001", HEART, 6, "2011-01-10 09:00:00", 2.55, 100.0, "United Kingdom"),
    ("1001", BOXES, 2, "2011-01-10 09:00:00", 7.65, 100.0, "United Kingdom"),
    ("1002", HEART, 12, "2011-02-10 14:30:00", 2.50, 100.0, "United Kingdom"),
    ("C1003", HEART, -2, "2011-02-11 10:00:00", 2.50, 100.0, "United Kingdom"),
    ("1004", BOXES, 1, "2011-03-01 18:00:00", 8.00, 200.0, "France"),
    ("1004", "POST", 1, "2011-03-01 18:00:00", 18.00, 200.0, "France"),
    ("1005", HEART, 3, "2011-03-05 11:00:00", 2.60, None, "United Kingdom"),
    ("1006", STAR, 4, "2011-03-10 12:00:00", 4.25, 200.0, "France"),
    ("1006", STAR, 2, "2011-03-10 12:00:00", 4.25, 200.0, "France"),
    ("1007", BOXES, 0, "2011-03-10 12:00:00", 0.00, 200.0, "France"),
]


def retail_frame() -> pl.DataFrame:
    return pl.DataFrame(
        [(inv, code, DESCRIPTIONS[code], qty, ts, price, cust, country)
         for inv, code, qty, ts, price, cust, country in ROWS],
        schema={"InvoiceNo": pl.String, "StockCode": pl.String, "Description": pl.String, "Quantity": pl.Int64,
                "InvoiceDate": pl.String, "UnitPrice": pl.Float64, "CustomerID": pl.Float64, "Country": pl.String},
        orient="row",
    )


def write_retail(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    retail_frame().write_parquet(path)
    return path


def generated_retail(path: Path, *, invoices: int, seed: int = 3) -> Path:
    """A larger export in the same shape: ``invoices`` orders of 1-8 lines over 2010-12..2011-12 (about
    4.5 lines per invoice), for crash tests that need a run long enough to be killed mid-way."""
    import random

    rng = random.Random(seed)
    codes = [f"{20000 + i}" for i in range(400)]
    rows = []
    for n in range(invoices):
        month = rng.randrange(13)
        year, mon = (2010, 12) if month == 0 else (2011, month)
        ts = f"{year}-{mon:02d}-{rng.randint(1, 28):02d} {rng.randint(8, 19):02d}:{rng.randint(0, 59):02d}:00"
        customer = float(12000 + rng.randrange(1500))
        for code in rng.sample(codes, rng.randint(1, 8)):
            rows.append((str(500000 + n), code, f"ITEM {code}", rng.randint(1, 24), ts,
                         round(rng.uniform(0.3, 20.0), 2), customer, "United Kingdom"))
    frame = pl.DataFrame(rows, schema={"InvoiceNo": pl.String, "StockCode": pl.String, "Description": pl.String,
                                       "Quantity": pl.Int64, "InvoiceDate": pl.String, "UnitPrice": pl.Float64,
                                       "CustomerID": pl.Float64, "Country": pl.String}, orient="row")
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.write_parquet(path)
    return path

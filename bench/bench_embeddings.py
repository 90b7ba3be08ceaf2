"""Embedding benchmark: MiniLM texts/s at batch 64 and 256, and full / no-op / delta refresh wall times.

Runs the four refreshes (products -> orders -> users, campaigns) on the full Online Retail data in a
fresh temporary data directory, with the real model, exactly as the assets call them:
``.venv/bin/python -m bench.bench_embeddings`` (add ``--repeats N`` / ``--texts N``).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import polars as pl

from bench.common import median, report, timed
from notify_core.clock import SYSTEM_CLOCK, utcnow
from notify_core.embeddings.embedder import SentenceTransformerEmbedder
from notify_core.embeddings.pipeline import (
    EmbeddingRun,
    refresh_campaign_embeddings,
    refresh_order_embeddings,
    refresh_product_embeddings,
    refresh_user_embeddings,
)
from notify_core.embeddings.texts import product_texts
from notify_core.lake import Lake
from notify_core.settings import load_settings
from notify_core.sources.online_retail import map_online_retail, read_source
from notify_core.sources.synthetic import generate_campaigns
from notify_core.store.sqlite import SqliteStore


def _refresh_all(lake: Lake, store: SqliteStore, embedder: SentenceTransformerEmbedder) -> dict[str, EmbeddingRun]:
    return {
        "product": refresh_product_embeddings(lake, store, embedder, now=utcnow(SYSTEM_CLOCK)),
        "order": refresh_order_embeddings(lake, store, now=utcnow(SYSTEM_CLOCK)),
        "user": refresh_user_embeddings(lake, store, now=utcnow(SYSTEM_CLOCK)),
        "campaign": refresh_campaign_embeddings(lake, store, embedder, now=utcnow(SYSTEM_CLOCK)),
    }


def _increment(products: pl.DataFrame, purchases: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """10 new products; 100 lines in 25 new orders for 20 existing buyers (as the tests do)."""
    new = pl.DataFrame({"product_id": [f"9{n:04d}" for n in range(10)],
                        "description": [f"NEW BENCH LANTERN DESIGN {n}" for n in range(10)],
                        "category": ["home decor"] * 10, "unit_price": [1.5 + n for n in range(10)]})
    users = purchases["user_id"].drop_nulls().unique().sort().head(20).to_list()
    existing = products["product_id"].sort().to_list()
    newest = purchases["ts"].max()
    rows = [{"order_id": f"B{o:05d}", "user_id": users[o % 20],
             "product_id": new["product_id"][(2 * o + k) % 10] if k < 2 else existing[(7 * o + k) % len(existing)],
             "quantity": 1 + (o + k) % 6, "unit_price": 2.0, "ts": newest + timedelta(days=1, minutes=o),
             "country": "United Kingdom", "is_return": False} for o in range(25) for k in range(4)]
    return new, pl.DataFrame(rows, schema=purchases.schema)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--texts", type=int, default=1024)
    args = parser.parse_args()

    settings = load_settings()
    tables = map_online_retail(read_source(settings.source_data))
    campaigns = generate_campaigns(tables.products, tables.purchases, seed=settings.seed)
    texts = product_texts(tables.products)["text"].head(args.texts).to_list()

    embedder = SentenceTransformerEmbedder()
    load_s, _ = timed(lambda: embedder.embed(["warm up"], batch_size=1))
    rows: list[list[Any]] = []
    throughput: dict[str, float] = {}
    for batch in (64, 256):
        times = [timed(lambda b=batch: embedder.embed(texts, batch_size=b))[0] for _ in range(args.repeats)]
        throughput[f"batch_{batch}"] = len(texts) / median(times)
        rows.append([f"embed {len(texts)} product texts, batch {batch}", median(times), throughput[f"batch_{batch}"],
                     ""])

    runs: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="notify-bench-emb-") as tmp:
        lake = Lake(Path(tmp) / "lake")
        for name, frame in (("products", tables.products), ("purchases", tables.purchases),
                            ("campaigns", campaigns)):
            lake.merge(name, frame)
        store = SqliteStore(Path(tmp) / "store.sqlite")
        new_products, new_purchases = _increment(tables.products, tables.purchases)
        phases = (
            ("full run (empty store)", lambda: None),
            ("no-op run (nothing changed)", lambda: None),
            ("delta run (+10 products, +100 lines / 25 orders / 20 users)",
             lambda: (lake.merge("products", new_products), lake.merge("purchases", new_purchases))),
        )
        for label, prepare in phases:
            prepare()
            start = time.perf_counter()
            result = _refresh_all(lake, store, embedder)
            seconds = time.perf_counter() - start
            embedded = {k: r.embedded for k, r in result.items()}
            runs[label] = {"seconds": seconds, "embedded": embedded,
                           "rows": {k: r.rows for k, r in result.items()},
                           "checks_passed": all(r.passed for r in result.values()),
                           "partitions_read": result["order"].details.get("partitions_read")}
            rows.append([label, seconds, "", ", ".join(f"{k} {v}" for k, v in embedded.items())])
        store.close()

    report("embeddings", "Embeddings: MiniLM throughput and refresh wall time (2 cores, CPU)",
           ["what", "seconds", "texts/s", "embedded"], rows,
           {"model": embedder.model_id, "model_load_s": load_s, "texts_per_s": throughput, "runs": runs})


if __name__ == "__main__":
    main()

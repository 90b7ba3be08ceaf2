"""Ingestion rows/s and feature-engineering time on the full Online Retail file.

Each repeat starts from an empty data directory: map the export to landing files, ingest the four
datasets (validation + lake merge + Store write), ingest again (the idempotent no-op), then compute
features (polars only) and refresh them (compute + lake + Store). Medians over repeats are reported.

    .venv/bin/python -m bench.bench_ingest [--repeats 3] [--source PATH]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

from bench.common import median, report, timed
from notify_core.features import compute_features, refresh_features
from notify_core.ingest.batch import DATASETS, ingest_dataset
from notify_core.lake import Lake
from notify_core.sources.demo import prepare_demo_landing
from notify_core.store.sqlite import SqliteStore

DEFAULT_SOURCE = Path(__file__).resolve().parents[1] / "../shared/data/online_retail/online_retail.parquet"


def one_repeat(source: Path, *, sealed: bool = False) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="notify-bench-") as tmp:
        root = Path(tmp)
        landing, lake = root / "landing", Lake(root / "lake")
        store: Any = SqliteStore(root / "store.sqlite")
        if sealed:  # what build_store serves by default: personal fields sealed (issue 14)
            from notify_core.security.crypto import build_sealer
            from notify_core.store.sealed import SealedStore

            store = SealedStore(store, build_sealer(root / "secrets"))
        out: dict[str, float] = {}
        out["map_s"], mapped = timed(lambda: prepare_demo_landing(source=source, landing=landing, seed=7))
        out["source_rows"] = mapped.rows_read
        for phase in ("first", "again"):
            total_rows = 0
            total_s = 0.0
            for dataset in DATASETS:
                seconds, rep = timed(lambda d=dataset: ingest_dataset(d, landing=landing, lake=lake, store=store,
                                                                       quarantine=root / "q"))
                out[f"{phase}_{dataset}_s"] = seconds
                out[f"{phase}_{dataset}_rows"] = rep.rows_read
                total_rows += rep.rows_read
                total_s += seconds
            out[f"{phase}_rows"], out[f"{phase}_s"] = total_rows, total_s
        purchases, products, users = lake.read("purchases"), lake.read("products"), lake.read("users")
        out["features_compute_s"], _ = timed(lambda: compute_features(purchases, products, users))
        out["features_refresh_first_s"], _ = timed(lambda: refresh_features(lake, store))
        out["features_refresh_again_s"], _ = timed(lambda: refresh_features(lake, store))
        store.close()
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    parser.add_argument("--sealed", action="store_true", help="through SealedStore (the default build_store)")
    args = parser.parse_args()
    runs = [one_repeat(args.source.resolve(), sealed=args.sealed) for _ in range(args.repeats)]

    def med(key: str) -> float:
        return median([r[key] for r in runs])

    rows: list[list[object]] = [["map export -> landing files", int(med("source_rows")), med("map_s"),
                                 med("source_rows") / med("map_s")]]
    for phase, label in (("first", "ingest (empty store)"), ("again", "re-ingest (no changes)")):
        for dataset in DATASETS:
            n, s = med(f"{phase}_{dataset}_rows"), med(f"{phase}_{dataset}_s")
            rows.append([f"{label}: {dataset}", int(n), s, n / s])
        n, s = med(f"{phase}_rows"), med(f"{phase}_s")
        rows.append([f"{label}: all", int(n), s, n / s])
    rows += [
        ["features: compute (polars)", int(runs[0]["first_purchases_rows"]), med("features_compute_s"), ""],
        ["features: refresh, first (compute + lake + Store)", "", med("features_refresh_first_s"), ""],
        ["features: refresh, unchanged", "", med("features_refresh_again_s"), ""],
    ]
    report("ingest", f"Batch ingestion and features on Online Retail (median of {args.repeats})",
           ["step", "rows", "seconds", "rows/s"], rows, {"repeats": runs})


if __name__ == "__main__":
    main()

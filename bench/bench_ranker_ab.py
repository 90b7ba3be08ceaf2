"""Serving cost of the learned ranker vs the blend main served before issue 17, same requests interleaved.

    .venv/bin/python -m bench.bench_ranker_ab --requests 2000     # quick data (100k users x 20k campaigns)

In-process ``Recommender.recommend`` on the recommendation benchmark's quick data and index (IVF, the
serving probe), alternating the two recommenders request by request so machine load hits both alike.
Writes bench/results/ranker_ab.json. ``blend`` = ``ranker=None`` (main's scoring before this branch).
``--copurchase 100`` (default) ships a synthetic co-purchase map (100 neighbours a product, each user
bought 2 products), so both paths pay for the co-purchase sums; ``--copurchase 0``: no map.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

from bench.bench_recommend import ensure_index, ensure_store, pct
from bench.common import report
from bench.scale_data import DEFAULT_CACHE, ScaleSpec, generate
from notify_core.clock import SYSTEM_CLOCK
from notify_core.recommend.artefacts import LocalArtefactStore
from notify_core.recommend.index import IndexOptions
from notify_core.recommend.recommender import Recommender
from notify_core.recommend.serving import IndexHolder
from notify_core.store.sqlite import SqliteStore


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--probe", type=int, default=8)
    parser.add_argument("--populate", type=int, default=5000)
    parser.add_argument("--copurchase", type=int, default=100,
                        help="ship a synthetic co-purchase map, this many neighbours a product (0: none)")
    args = parser.parse_args()
    spec = ScaleSpec(users=100_000, campaigns=20_000)
    data = generate(spec, cache=DEFAULT_CACHE)
    data_dir = DEFAULT_CACHE / f"recommend-{spec.name}"
    rng = np.random.default_rng(spec.seed + 1)
    users = sorted(rng.choice(spec.users, size=min(args.populate, spec.users), replace=False).tolist())
    ensure_store(data, data_dir, users)
    artefacts = LocalArtefactStore(data_dir / ("artefacts" if not args.copurchase else
                                               f"artefacts-copurchase{args.copurchase}"))
    ensure_index(data, artefacts, IndexOptions(kind="ivf"), copurchase_neighbours=args.copurchase)
    store = SqliteStore(data_dir / "store.sqlite")
    holder = IndexHolder(artefacts, search_effort=args.probe)
    methods = {"learned ranker (serving)": Recommender(store=store, holder=holder, clock=SYSTEM_CLOCK),
               "blend (main before)": Recommender(store=store, holder=holder, clock=SYSTEM_CLOCK, ranker=None)}
    ids = [data.user_id(int(u)) for u in users]
    for uid in ids[:500]:  # warm-up
        for r in methods.values():
            r.recommend(uid)
    latency: dict[str, list[float]] = {m: [] for m in methods}
    for i in range(args.requests):
        uid = ids[500 + i % (len(ids) - 500)]
        for name, r in (methods.items() if i % 2 else reversed(methods.items())):
            t = time.perf_counter()
            r.recommend(uid)
            latency[name].append((time.perf_counter() - t) * 1000)
    rows: list[list[Any]] = [[m, pct(v, 50), pct(v, 95), pct(v, 99), f"{len(v)} requests", "p99 <= 10 ms"]
                             for m, v in latency.items()]
    report("ranker_ab", "learned ranker vs blend, same requests interleaved",
           ["path (in-process Recommender.recommend)", "p50 ms", "p95 ms", "p99 ms", "n", "target"], rows,
           extra={"spec": spec.name, "probe": args.probe, "copurchase_neighbours": args.copurchase})
    store.close()


if __name__ == "__main__":
    main()

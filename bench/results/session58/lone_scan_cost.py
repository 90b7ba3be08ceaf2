"""A lone query's top 150 on the demo's exact index: faiss' ``IndexFlatIP.search`` against a scan with faiss'
own kernel, a partition and a sort of the kept (session 58, not kept), interleaved in one process on the real
users' vectors; CPU us a query, least of 9 rounds each.

    PYTHONPATH=. .venv/bin/python bench/results/session58/lone_scan_cost.py
"""

from __future__ import annotations

import time
from datetime import datetime

import numpy as np

from bench.bench_recommend_real import DEFAULT_DIR, demo_users
from bench.recommend_cpu import _setup
from notify_core.recommend.ann import Matches, Vectors, set_faiss_threads, unit_rows


def _scan(stored: Vectors, queries: Vectors, k: int) -> Matches:
    """Each query's top ``k``: faiss' kernel for the cosines, then the k best by partition, sorted (ties by row)."""
    import faiss

    size, dim = stored.shape
    rows = np.empty((len(queries), k), dtype=np.int64)
    similarities = np.empty((len(queries), k), dtype=np.float32)
    cosines = np.empty(size, dtype=np.float32)
    every, out = faiss.swig_ptr(stored), faiss.swig_ptr(cosines)
    for i, query in enumerate(queries):
        faiss.fvec_inner_products_ny(out, faiss.swig_ptr(query), every, dim, size)
        cut = cosines[np.argpartition(cosines, size - k)[size - k]]
        above = np.flatnonzero(cosines > cut)
        top = np.concatenate([above, np.flatnonzero(cosines == cut)[: k - len(above)]])
        top = top[np.lexsort((top, -cosines[top]))]
        rows[i], similarities[i] = top, cosines[top]
    return Matches(rows, similarities)


def main() -> None:
    data_dir = DEFAULT_DIR.resolve()
    now = datetime.fromisoformat("2026-11-30T12:00:00+00:00")
    recommender = _setup(data_dir, now).get_recommender()
    snapshot = recommender.holder.snapshot()
    index = snapshot.base.index
    flat = index._flat_vectors()
    contexts = recommender.user_contexts(demo_users(data_dir)[:1000], now=now, snapshot=snapshot)
    queries = unit_rows(np.stack([c.vector for c in contexts.values() if c.vector is not None]))
    set_faiss_threads(1)
    same = sum(np.array_equal(index._index.search(q[None, :], 150)[1][0], _scan(flat, q[None, :], 150).rows[0])
               for q in queries)
    rounds: dict[str, list[float]] = {"faiss IndexFlatIP.search": [], "kernel + partition + sort": []}
    for _ in range(9):
        for name, fn in (("faiss IndexFlatIP.search", lambda q: index._index.search(q[None, :], 150)),
                         ("kernel + partition + sort", lambda q: _scan(flat, q[None, :], 150))):
            started = time.process_time()
            for q in queries:
                fn(q)
            rounds[name].append((time.process_time() - started) / len(queries) * 1e6)
    print(f"{len(queries)} real users' vectors, {index.size} x {index.dim}; same rows in the same order: {same}")
    for name, values in rounds.items():
        print(f"{name:26s} least {min(values):6.1f} us   rounds {[round(v, 1) for v in values]}")


if __name__ == "__main__":
    main()

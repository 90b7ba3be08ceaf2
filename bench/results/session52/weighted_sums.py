"""Session 52: a block's co-purchase sums by the scatter-add (np.bincount) against scipy's sparse product, on the
demo's real blocks (``make demo``'s store copied; the users' products as ``rank_many`` codes them), by the number
of users in the call; and whether the two give the same bits.

    .venv/bin/python bench/results/session52/weighted_sums.py > bench/results/session52/weighted_sums.txt
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import timeit
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, os.getcwd())
from bench.bench_recommend_real import DEFAULT_DIR, demo_users  # noqa: E402

tmp = Path(tempfile.mkdtemp(prefix="s52-"))
shutil.copytree(DEFAULT_DIR, tmp / "d", ignore=shutil.ignore_patterns("*.lock", "*-wal", "*-shm"))
os.environ["NOTIFY_DATA_DIR"] = str(tmp / "d")

from notify_core.clock import ManualClock  # noqa: E402
from notify_core.recommend import scoring  # noqa: E402
from notify_core.recommend.artefacts import build_artefact_store  # noqa: E402
from notify_core.recommend.recommender import Recommender  # noqa: E402
from notify_core.recommend.serving import IndexHolder  # noqa: E402
from notify_core.settings import load_settings  # noqa: E402
from notify_core.store.factory import build_store  # noqa: E402

caught: list[tuple[Any, ...]] = []
real = scoring._weighted_sums


def catching(rows: Any, orders: Any, indptr: Any, indices: Any, data: Any, **kw: Any) -> Any:
    if kw.get("users") is not None and len(caught) < 2:
        caught.append((rows.copy(), orders.copy(), indptr, indices, data, kw["size"], kw["users"].copy()))
    return real(rows, orders, indptr, indices, data, **kw)


settings = load_settings()
store = build_store(settings)
now = datetime(2026, 12, 2, tzinfo=UTC)
rec = Recommender(store=store, holder=IndexHolder(build_artefact_store(settings)), clock=ManualClock(now))
scoring._weighted_sums = catching  # type: ignore[assignment]
rec.rank_many(demo_users(tmp / "d")[:2000], limit=20, now=now)
scoring._weighted_sums = real  # type: ignore[assignment]
rows, orders, indptr, indices, data, size, users = caught[1]  # the second block of 1,000 users
scoring.SPARSE_PRODUCT_CELLS = 10**12  # _weighted_sums: the scatter-add, whatever the block
print(f"the demo's second block: {len(rows)} ordered products of 1,000 users, {size} promoted products, "
      f"{int((indptr[rows + 1] - indptr[rows]).sum())} neighbour entries")
print(f"{'users':>6} {'scatter-add ms':>15} {'scipy product ms':>17} {'ratio':>6}  same bits")
for k in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000):
    part = users < k
    r, o, u = rows[part], orders[part], users[part]

    def scatter(r: Any = r, o: Any = o, u: Any = u, k: int = k) -> Any:
        return scoring._weighted_sums(r, o, indptr, indices, data, size=size, users=u, count=k)

    def product(r: Any = r, o: Any = o, u: Any = u, k: int = k) -> Any:
        return scoring._weighted_sums_sparse(r, o, indptr, indices, data, size=size, users=u, count=k)

    number = max(1, 200 // k)
    a = min(timeit.repeat(scatter, number=number, repeat=5)) / number
    b = min(timeit.repeat(product, number=number, repeat=5)) / number
    same = scatter().tobytes() == product().tobytes()
    print(f"{k:>6} {1e3 * a:>15.3f} {1e3 * b:>17.3f} {b / a:>6.2f}  {same}")
print("load average", os.getloadavg())
store.close()
shutil.rmtree(tmp)

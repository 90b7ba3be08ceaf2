"""What sealing personal fields at rest costs on the Store path (issue 14).

Writes and reads N user profiles carrying three personal fields (email, first name, phone) into a fresh
SQLite Store, once plain and once through :class:`~notify_core.store.sealed.SealedStore` (AES-256-GCM per
field, data key cached), interleaved, and reports rows/s and the ratio. Tables without personal fields
(events, purchases, schedules: the stream and ingest hot paths) are returned unwrapped, so they pay
nothing; this measures the one table that does.

    .venv/bin/python -m bench.bench_security [--users 50000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

from bench.common import median, report, timed
from notify_core.security.crypto import build_sealer
from notify_core.store import tables
from notify_core.store.port import Store
from notify_core.store.sealed import SealedStore
from notify_core.store.sqlite import SqliteStore


def _rows(n: int) -> list[dict[str, Any]]:
    return [{"pk": f"u{i:08d}", "sk": tables.PROFILE_SK, "user_id": f"u{i:08d}", "timezone": "Europe/London",
             "country": "GB", "daily_cap": 3, "email": f"user{i}@example.org", "first_name": f"Name{i}",
             "phone": f"+44 20 7946 {i % 10000:04d}"} for i in range(n)]


def _one(store: Store, rows: list[dict[str, Any]]) -> tuple[float, float]:
    table = store.table(tables.USERS)
    write_s, _ = timed(lambda: table.batch_put(rows))
    keys = [(r["pk"], r["sk"]) for r in rows]
    read_s, got = timed(lambda: [table.batch_get(keys[i:i + 100]) for i in range(0, len(keys), 100)])
    assert sum(len(g) for g in got) == len(rows)
    return write_s, read_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rows = _rows(args.users)
    results: dict[str, list[tuple[float, float]]] = {"plain": [], "sealed": []}
    for _ in range(args.repeats):
        for kind in ("plain", "sealed"):
            with tempfile.TemporaryDirectory() as tmp:
                raw = SqliteStore(Path(tmp) / "store.sqlite")
                store: Store = SealedStore(raw, build_sealer(Path(tmp) / "secrets")) if kind == "sealed" else raw
                try:
                    results[kind].append(_one(store, rows))
                finally:
                    store.close()
    table_rows: list[list[object]] = []
    for kind in ("plain", "sealed"):
        w = median([r[0] for r in results[kind]])
        r = median([r[1] for r in results[kind]])
        table_rows.append([kind, args.users, w, args.users / w, r, args.users / r])
    pw, sw = table_rows[0][2], table_rows[1][2]
    pr, sr = table_rows[0][4], table_rows[1][4]
    assert isinstance(pw, float) and isinstance(sw, float) and isinstance(pr, float) and isinstance(sr, float)
    report("security", f"users table, 3 personal fields per row, plain vs sealed (median of {args.repeats})",
           ["store", "rows", "write s", "write rows/s", "read s", "read rows/s"], table_rows,
           {"write_cost_ratio": sw / pw, "read_cost_ratio": sr / pr, "runs": results})
    print(f"sealed / plain time: write {sw / pw:.2f}x, read {sr / pr:.2f}x")


if __name__ == "__main__":
    main()

"""Session 54: one consumer batch's rows into SQLite three ways, and what the rows cost to load for the third.

- ``esc``: the consumer's ``json_each`` upsert of ``[pk, sk, ttl, body]`` arrays, each body an escaped string;
- ``nested``: the same with each body as a nested object, read back by ``value->3`` (the same bytes, checked);
- ``many``: ``executemany`` of the rows as tuples;
then ``pickle``/``marshal``/``orjson`` loads of the batch (what the consuming process would pay to get tuples).
Run: ``.venv/bin/python bench/results/session54/json_each_vs_executemany.py`` (prints us a row, medians).
"""

import marshal
import os
import pickle
import random
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

import orjson

N = 20_000
UPSERT = " ON CONFLICT(pk, sk) DO UPDATE SET ttl=excluded.ttl, body=excluded.body"


def batch() -> list[tuple[str, str, float, str]]:
    rows = []
    for i in range(N):
        body = {"pk": f"user#{random.randrange(10**6)}", "sk": f"ev#{1700000000000 + i}#{os.urandom(6).hex()}",
                "type": "click", "user_id": f"u{i}", "campaign_id": "c123", "ts": "2026-11-30T12:00:00.123456+00:00",
                "properties": {"url": "https://x.example/p?q=1", "ref": "email"}, "event_id": os.urandom(16).hex(),
                "ttl": 1800000000}
        rows.append((str(body["pk"]), str(body["sk"]), 1800000000.0, orjson.dumps(body).decode()))
    return sorted(rows)


def fresh(path: Path) -> sqlite3.Connection:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("pragma journal_mode=wal")
    conn.execute("pragma synchronous=normal")
    conn.execute("create table t (pk text not null, sk text not null, ttl real, body text not null)")
    conn.execute("create unique index ti on t(pk, sk)")
    return conn


def run(kind: str, rows: list[tuple[str, str, float, str]], path: Path) -> float:
    escaped = orjson.dumps(rows)
    nested = orjson.dumps([(a, b, c, orjson.Fragment(d)) for a, b, c, d in rows])
    conn = fresh(path)
    started = time.perf_counter()
    for _ in range(5):
        conn.execute("begin")
        if kind == "esc":
            conn.execute("INSERT INTO t SELECT value->>0, value->>1, value->>2, value->>3 FROM json_each(?) WHERE true"
                         + UPSERT, (escaped,))
        elif kind == "nested":
            conn.execute("INSERT INTO t SELECT value->>0, value->>1, value->>2, value->3 FROM json_each(?) WHERE true"
                         + UPSERT, (nested,))
        else:
            conn.executemany("INSERT INTO t VALUES (?, ?, ?, ?)" + UPSERT, rows)
        conn.execute("commit")
    seconds = time.perf_counter() - started
    if kind == "nested":
        stored = [body for (body,) in conn.execute("select body from t order by pk, sk")]
        assert stored == [row[3] for row in rows], "the nested form did not give the same bytes back"
    conn.close()
    return seconds / 5 / N * 1e6


def main() -> None:
    rows = batch()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "t.sqlite"
        results: dict[str, list[float]] = {"esc": [], "nested": [], "many": []}
        for _ in range(5):
            for kind, seen in results.items():
                seen.append(run(kind, rows, path))
    for kind, seen in results.items():
        print(f"{kind:7s} us a row, median {statistics.median(seen):.3f}  {[round(x, 2) for x in seen]}")
    for name, load, data in (("pickle", pickle.loads, pickle.dumps(rows, protocol=5)),
                             ("marshal", marshal.loads, marshal.dumps(rows)),
                             ("orjson", orjson.loads, orjson.dumps(rows))):
        took = []
        for _ in range(7):
            started = time.perf_counter()
            load(data)
            took.append((time.perf_counter() - started) / N * 1e6)
        print(f"{name:7s} loads, us a row, median {statistics.median(took):.3f}")


if __name__ == "__main__":
    main()

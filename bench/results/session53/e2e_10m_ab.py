"""Session 53's 10M scheduling A/B: one `bench_end_to_end` run (500k-user chunks, the writer process) of
the tree in the working directory, e.g. `cd <tree> && python e2e_10m_ab.py 10000000 <side>`.

Sides, run one after another (e2e_10m_cache_spill_ab_order.txt): a = 3c87e6c (SQLite's default spill),
b = a with `PRAGMA cache_spill=OFF` in the writer process, c = 979bea8 (spilling from 1 GiB). One JSON line
a run (e2e_10m_cache_spill_ab.jsonl).
"""

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, os.getcwd())

if __name__ == "__main__":
    from bench.bench_schedule import bench_end_to_end

    users, side = int(sys.argv[1]), sys.argv[2]
    workdir = Path(tempfile.mkdtemp(prefix="e2e_ab_"))
    load_before = os.getloadavg()[0]
    try:
        result = bench_end_to_end(users, workdir, chunk_users=500_000, pipeline=True, writer_process=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    out = {"tag": side, "n": users, "load": [load_before, os.getloadavg()[0]],
           **{k: v for k, v in result.items() if not isinstance(v, list) or len(v) < 50}}
    print(json.dumps(out, default=str))

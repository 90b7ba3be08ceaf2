"""CPU ms a request of the recommendations handler by batch size, cold and warm, on the real demo data.

    PYTHONPATH=. .venv/bin/python bench/results/sitting_2026-12-04T0934/batch_cost_by_size.py DIR 1,2,3,4,6,8,16 2
"""

import json
import statistics
import sys
from datetime import datetime
from pathlib import Path

from bench.bench_recommend_real import demo_users
from bench.recommend_cpu import _setup, cpu_passes
from tests.servers import serve_admin_key

data_dir = Path(sys.argv[1]).resolve()
sizes = [int(s) for s in sys.argv[2].split(",")]
passes = int(sys.argv[3]) if len(sys.argv) > 3 else 3
users = demo_users(data_dir)
module = _setup(data_dir, datetime.fromisoformat("2026-11-30T12:00:00+00:00"), cache_users=8192)
key = serve_admin_key(data_dir)
out: dict[int, dict[str, list[float]]] = {}
for _round in range(2):
    for n in sizes:
        cold = cpu_passes(module, key, users, passes=passes, together=n)
        cpu_passes(module, key, users, passes=2, cold=False, together=1)  # every user's work kept
        warm = cpu_passes(module, key, users, passes=passes, cold=False, together=n)
        out.setdefault(n, {"cold": [], "warm": []})
        out[n]["cold"] += cold
        out[n]["warm"] += warm
for n, v in out.items():
    cold_ms, warm_ms = statistics.median(v["cold"]), statistics.median(v["warm"])
    print(f"together={n:2d} cold {cold_ms:.3f} ms  warm {warm_ms:.3f} ms")
print(json.dumps(out))

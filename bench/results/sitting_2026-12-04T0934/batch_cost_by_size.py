"""CPU ms per request of the recommendations handler by batch size (cold and warm), real demo data."""
import json, statistics, sys
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
out = {}
for rnd in range(2):
    for n in sizes:
        cold = cpu_passes(module, key, users, passes=passes, together=n)
        cpu_passes(module, key, users, passes=1, cold=False, together=1)
        cpu_passes(module, key, users, passes=1, cold=False, together=1)
        warm = cpu_passes(module, key, users, passes=passes, cold=False, together=n)
        out.setdefault(n, {"cold": [], "warm": []})
        out[n]["cold"] += cold; out[n]["warm"] += warm
for n, v in out.items():
    print(f"together={n:2d} cold {statistics.median(v['cold']):.3f} ms  warm {statistics.median(v['warm']):.3f} ms")
print(json.dumps(out))

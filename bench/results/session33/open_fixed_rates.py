"""Open loop A/B at fixed rates, cold (serving default cache) and warm (every user's work cached).

    cd <checkout> && PYTHONPATH=. .venv/bin/python bench/results/session33/open_fixed_rates.py

One JSON line: p50/p99/p99.9 ms and server CPU ms a request each phase (15 s).
"""
import asyncio
import json
from pathlib import Path

import numpy as np

from bench import wrk
from bench.bench_recommend import SERVER_PIDS, open_loop, path_of, pct, serving
from bench.bench_recommend_real import demo_users
from tests.servers import serve_admin_key

d = Path(".notify/bench/demo").resolve()
users = demo_users(d)
order = np.random.default_rng(21).permutation(len(users))
paths = [path_of(users[i]) for i in order]
out = {}

def phase(port, rate, seconds=15.0):
    pids = [SERVER_PIDS[port], *wrk.children(SERVER_PIDS[port])]
    c0 = wrk.cpu_seconds(pids)
    r = asyncio.run(open_loop(port, paths, rate=rate, seconds=seconds, max_conns=64))
    c1 = wrk.cpu_seconds(pids)
    ms = [x * 1000 for x in r["latencies"]]
    return {"rate": rate, "p50": pct(ms, 50), "p99": pct(ms, 99), "p999": pct(ms, 99.9),
            "server_cpu_ms_per_req": (c1 - c0) * 1000 / max(len(ms), 1), "errors": r["errors"]}

with serving(d, workers=2) as port:
    key = serve_admin_key(d)
    wrk.closed_loop(port, paths, api_key=key, connections=16, seconds=3)
    out["cold_600"] = phase(port, 600)
with serving(d, workers=2, env={"NOTIFY_RECOMMEND_CACHE_USERS": "8192"}) as port:
    key = serve_admin_key(d)
    wrk.closed_loop(port, paths, api_key=key, connections=16, seconds=16)
    out["warm_600"] = phase(port, 600)
    out["warm_900"] = phase(port, 900)
    out["warm_1200"] = phase(port, 1200)
print(json.dumps(out))

"""Server CPU a request of `notify serve --workers 2` (work cache filled) idle and at open-loop rates.

    PYTHONPATH=. .venv/bin/python bench/results/session33/server_cpu_by_rate.py
"""

import asyncio
import time
from pathlib import Path

from bench import wrk
from bench.bench_recommend import SERVER_PIDS, open_loop, path_of, pct, serving
from bench.bench_recommend_real import demo_users
from tests.servers import serve_admin_key

data_dir = Path(".notify/bench/demo").resolve()
paths = [path_of(u) for u in demo_users(data_dir)]
with serving(data_dir, workers=2, env={"NOTIFY_RECOMMEND_CACHE_USERS": "8192"}) as port:
    key = serve_admin_key(data_dir)
    pids = [SERVER_PIDS[port], *wrk.children(SERVER_PIDS[port])]
    wrk.closed_loop(port, paths, api_key=key, connections=16, seconds=16)  # fill every worker's cache
    for label, rate in (("idle", 0), ("100", 100), ("300", 300), ("600", 600), ("idle2", 0)):
        cpu0, t0 = wrk.cpu_seconds(pids), time.perf_counter()
        answered, p99 = 0, 0.0
        if rate:
            result = asyncio.run(open_loop(port, paths, rate=rate, seconds=8, max_conns=64))
            answered, p99 = len(result["latencies"]), pct([x * 1000 for x in result["latencies"]], 99)
        else:
            time.sleep(5)
        used, elapsed = wrk.cpu_seconds(pids) - cpu0, time.perf_counter() - t0
        per_request = used * 1000 / answered if answered else 0.0
        print(label, f"cores {used / elapsed:.2f} ms/req {per_request:.3f} p99 {p99:.1f}")

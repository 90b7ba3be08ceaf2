"""The same warm requests through the API edge, back to back and with the core idle between them.

    PYTHONPATH=. .venv/bin/python bench/results/session33/idle_gap_cpu.py

Prints process CPU ms a request for each idle gap, then the function-call counts of 200 requests without and
with a 20 ms gap under cProfile (the same calls: the cost is the machine's, not a code path's).
"""

import cProfile
import io
import pstats
import time
from datetime import datetime
from pathlib import Path

from bench.bench_recommend_real import demo_users
from bench.recommend_cpu import _event, _setup, cpu_passes
from lambdas.gateway import _Context
from tests.servers import serve_admin_key

data_dir = Path(".notify/bench/demo").resolve()
users = demo_users(data_dir)[:600]
module = _setup(data_dir, datetime.fromisoformat("2026-11-30T12:00:00+00:00"), cache_users=8192)
key = serve_admin_key(data_dir)
cpu_passes(module, key, users, passes=2, cold=False)  # every user's work kept
events = [(_event(key, u), _Context("b", f"b-{u}")) for u in users]
for gap in (0, 0.002, 0.01, 0.02, 0):
    started = time.process_time()
    for ev, ctx in events[:300]:
        module.handler(ev, ctx)
        if gap:
            time.sleep(gap)
    print("gap", gap, f"cpu ms/req {(time.process_time() - started) * 1000 / 300:.3f}")
for gap in (0, 0.02):
    profile = cProfile.Profile()
    profile.enable()
    for ev, ctx in events[300:500]:
        module.handler(ev, ctx)
        if gap:
            time.sleep(gap)
    profile.disable()
    out = io.StringIO()
    stats = pstats.Stats(profile, stream=out)
    stats.sort_stats("tottime").print_stats(12)
    print("GAP", gap, "calls", stats.total_calls)  # type: ignore[attr-defined]
    print(out.getvalue()[-3500:])

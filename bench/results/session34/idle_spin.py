"""Session 34: is the idle-gap cost (session 33) the core halting, or something else evicting the worker's
caches? The same requests through the edge with a gap before each: slept (the core may halt) or spun
(the thread stays on its core, busy). CPU and wall are taken around each handler call only, so the spin's
own CPU is not counted. Rounds interleave the modes.

    PYTHONPATH=. .venv/bin/python bench/results/session34/idle_spin.py
"""

from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path

import numpy as np

from bench.bench_recommend_real import DEFAULT_DIR, demo_users, ensure_demo
from bench.common import load_average
from tests.servers import serve_admin_key

REQUESTS = 300
GAPS_MS = (0, 2, 10, 20)
# our own hand evicting the caches before each request, no gap: an L2's worth and more than the L3
EVICT_BYTES = {"evict 4 MiB": 4 << 20, "evict 64 MiB": 64 << 20}
ROUNDS = 3


def main() -> None:
    data_dir = DEFAULT_DIR.resolve()
    ensure_demo(data_dir)
    os.environ["NOTIFY_DATA_DIR"] = str(data_dir)
    from bench.recommend_cpu import _event
    from lambdas import get_recommended_campaigns as module
    from lambdas.gateway import _Context

    key = serve_admin_key(data_dir)
    users = demo_users(data_dir)[:REQUESTS]
    for uid in users:  # warm: every user's work cached, as the WARM row
        module.handler(_event(key, uid), _Context("bench", f"bench-{uid}"))
        module.handler(_event(key, uid), _Context("bench", f"bench-{uid}"))

    buffers = {name: np.ones(size // 8) for name, size in EVICT_BYTES.items()}

    def one_pass(gap_ms: int, mode: str) -> tuple[float, float]:
        cpu = wall = 0.0
        for uid in users:
            if mode in buffers:
                buffers[mode] += 1.0  # read and write every line of it
            elif gap_ms:
                if mode == "sleep":
                    time.sleep(gap_ms / 1000)
                else:
                    until = time.perf_counter() + gap_ms / 1000
                    while time.perf_counter() < until:
                        pass
            c, w = time.thread_time(), time.perf_counter()
            module.handler(_event(key, uid), _Context("bench", f"bench-{uid}"))
            cpu += time.thread_time() - c
            wall += time.perf_counter() - w
        return cpu * 1000 / len(users), wall * 1000 / len(users)

    results: dict[str, list[list[float]]] = {}
    for _ in range(ROUNDS):
        for gap in GAPS_MS:
            for mode in ("sleep", "spin") if gap else ("back to back", *EVICT_BYTES):
                results.setdefault(f"{gap} ms {mode}", []).append(list(one_pass(gap, mode)))
    print(f"load {load_average()}")
    print(f"{'gap before each request':28s} {'CPU ms a request (rounds)':36s} {'median':>7s} {'wall median':>12s}")
    for name, runs in results.items():
        cpus = [r[0] for r in runs]
        print(f"{name:28s} {' '.join(f'{c:.3f}' for c in cpus):36s} {statistics.median(cpus):7.3f} "
              f"{statistics.median(r[1] for r in runs):12.3f}")
    out = Path(__file__).with_suffix(".json")
    out.write_text(json.dumps({"requests": len(users), "rounds": ROUNDS, "results": results,
                               "loadavg": load_average()}, indent=2))


if __name__ == "__main__":
    main()

"""One burst of ``argv[1]`` deliveries with ``argv[2]`` worker processes (session 37's interleaved A/B)."""

import sys

from bench.bench_delivery import run_once

if __name__ == "__main__":
    r = run_once(int(sys.argv[1]), 0.0, concurrency=16, processes=int(sys.argv[2]))
    keys = ("per_s", "worker_cpu_ms_per_delivery", "delivered", "duplicates")
    print({k: round(r[k], 3) if isinstance(r[k], float) else r[k] for k in keys})

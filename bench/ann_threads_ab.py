"""How many OpenMP threads a batch ANN search should use while the plan writer process runs beside it.

The 10M scheduling pipeline searches each chunk's candidates in the planning process while the writer
process writes the previous chunk on the other core. On 2 cores, a 2-thread search then fights the writer
for a core: libgomp's threads wait at each parallel region's barrier (spinning by default) while one of
them is descheduled. This measures, interleaved, each variant's search rate and CPU per query and how much
work a CPU-bound competitor process (the writer's stand-in: a pure Python loop) gets done in the same
seconds, with the competitor and without it:

    .venv/bin/python -m bench.ann_threads_ab              # 2 rounds x 3 variants x 2 modes, 10 s each
    .venv/bin/python -m bench.ann_threads_ab --seconds 5 --rounds 1

Variants: 2 threads (libgomp's default wait policy), 2 threads with ``OMP_WAIT_POLICY=PASSIVE``, 1
thread. Each runs in a fresh process (libgomp reads the policy when it is loaded). The index is the
bench_schedule one's shape: ``IndexFlatIP`` over 1,000 x 384 campaigns, 100k queries a call, top 20.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from typing import Any

from bench.common import median, report

VARIANTS = (("2 threads", "default", 2), ("2 threads, OMP_WAIT_POLICY=PASSIVE", "passive", 2),
            ("1 thread", "default", 1))

_CHILD = r'''
import json, os, subprocess, sys, time
policy, threads, seconds, competitor = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4] == "1"
if policy == "passive":
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
import numpy as np
import faiss
faiss.omp_set_num_threads(threads)
rng = np.random.default_rng(5)
campaigns = rng.normal(size=(1000, 384)).astype(np.float32)
campaigns /= np.linalg.norm(campaigns, axis=1, keepdims=True)
index = faiss.IndexFlatIP(384)
index.add(campaigns)
queries = rng.normal(size=(100_000, 384)).astype(np.float32)
queries /= np.linalg.norm(queries, axis=1, keepdims=True)
index.search(queries[:1000], 20)
child = None
if competitor:
    child = subprocess.Popen([sys.executable, "-c", (
        "import time\nend = time.perf_counter() + %r\nn = 0\n"
        "while time.perf_counter() < end:\n    for _ in range(10000): n += 1\nprint(n)") % seconds],
        stdout=subprocess.PIPE, text=True)
started, cpu = time.perf_counter(), time.process_time()
done = 0
while time.perf_counter() - started < seconds:
    index.search(queries, 20)
    done += len(queries)
wall, cpu = time.perf_counter() - started, time.process_time() - cpu
iterations = int(child.communicate()[0]) if child is not None else 0
print(json.dumps({"queries_per_s": done / wall, "cpu_us_per_query": cpu / done * 1e6,
                  "competitor_miter_per_s": iterations / seconds / 1e6}))
'''


def _one(policy: str, threads: int, seconds: float, competitor: bool) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", _CHILD, policy, str(threads), str(seconds), "1" if competitor else "0"],
                         capture_output=True, text=True, check=True)
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    runs: dict[tuple[str, bool], list[dict[str, float]]] = {}
    for _ in range(args.rounds):  # interleaved: every variant sees the same drift of a shared machine
        for competitor in (True, False):
            for name, policy, threads in VARIANTS:
                runs.setdefault((name, competitor), []).append(_one(policy, threads, args.seconds, competitor))
    rows: list[list[Any]] = []
    for (name, competitor), results in runs.items():
        rows.append([name, "yes" if competitor else "no",
                     round(median([r["queries_per_s"] for r in results])),
                     median([r["cpu_us_per_query"] for r in results]),
                     median([r["competitor_miter_per_s"] for r in results]) if competitor else "-"])
    report("ann_threads_ab", "batch ANN search threads beside a busy core (medians)",
           ["variant", "competitor", "queries/s", "CPU us/query", "competitor M iter/s"], rows,
           {"runs": {f"{name} | competitor={competitor}": results for (name, competitor), results in runs.items()},
            "seconds": args.seconds, "rounds": args.rounds, "cores": os.cpu_count()})


if __name__ == "__main__":
    main()

"""Same-sitting interleaved A/B of the delivery worker: this checkout against another (main's code), burst only.

Each round runs ``bench.bench_delivery.run_once`` (N due at :00, the real ``notify worker`` loop, a loopback
webhook sink) once per side, alternating, in a fresh process with ``PYTHONPATH`` at that side's checkout and
this interpreter. Per run: deliveries/s, the worker process's CPU per delivery split into user and system
time, voluntary/involuntary context switches per delivery, and the load average. On a shared box the CPU per
delivery is the figure to compare (the neighbours move the throughput, much less the CPU a delivery costs);
the sender floor's CPU per send (the same channel, 16 threads, no Store), measured once in the same sitting,
is printed beside it as the limit.

    python -m bench.delivery_ab --base /work/r21deliv_base            # 3 rounds x 10k each side (~3-4 min)
    python -m bench.delivery_ab --base DIR --rounds 5 --n 20000 --tag ab3
    python -m bench.delivery_ab --base DIR --processes 2 --n 30000 --tag gate_wait   # two worker processes

With ``--processes N`` the CPU per delivery is every worker process's; the user/sys and switch columns stay
the first process's.

Results: ``bench/results/delivery_<tag>_quick.json`` (default tag ``ab3``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.common import against_limit, load_average, median, report

ROOT = Path(__file__).resolve().parent.parent

_CHILD = """
import json, resource, sys, time
snaps = []
def process_time():
    r = resource.getrusage(resource.RUSAGE_SELF)
    snaps.append((r.ru_utime, r.ru_stime, r.ru_nvcsw, r.ru_nivcsw))
    return r.ru_utime + r.ru_stime
time.process_time = process_time  # run_once reads the worker's CPU with it: keep user/sys apart too
from bench.bench_delivery import run_once
n, concurrency, processes = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
r = run_once(n, 0.0, concurrency=concurrency, processes=processes)
a, b = snaps[0], snaps[1]
print(json.dumps({"delivered": r["delivered"], "duplicates": r["duplicates"], "per_s": r["per_s"],
                  "worker_cpu_ms_per_delivery": r["worker_cpu_ms_per_delivery"],
                  "user_ms_per_delivery": 1000 * (b[0] - a[0]) / n, "sys_ms_per_delivery": 1000 * (b[1] - a[1]) / n,
                  "voluntary_switches_per_delivery": (b[2] - a[2]) / n,
                  "involuntary_switches_per_delivery": (b[3] - a[3]) / n}))
"""


def _commit(path: Path) -> str:
    out = subprocess.run(["git", "-C", str(path), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return out.stdout.strip() or "?"


def _one(checkout: Path, n: int, concurrency: int, processes: int) -> dict[str, Any]:
    load = load_average()
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(n), str(concurrency), str(processes)], cwd=checkout,
                          env={**os.environ, "PYTHONPATH": str(checkout)}, capture_output=True, text=True,
                          timeout=600, check=True)
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    result["loadavg"] = list(load)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description="interleaved same-sitting A/B of the delivery worker")
    parser.add_argument("--base", type=Path, required=True, help="the other checkout (e.g. a worktree of main)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--tag", default="ab3")
    parser.add_argument("--processes", type=int, default=1, help="worker processes on the one Store")
    args = parser.parse_args()
    sides = {"base": args.base.resolve(), "branch": ROOT}
    runs: dict[str, list[dict[str, Any]]] = {"base": [], "branch": []}
    for round_ in range(args.rounds):
        for side, checkout in sides.items():
            run = _one(checkout, args.n, args.concurrency, args.processes)
            runs[side].append(run)
            print(f"round {round_ + 1} {side}: {run['per_s']:,.0f}/s, {run['worker_cpu_ms_per_delivery']:.3f} ms CPU "
                  f"a delivery, {run['duplicates']} duplicates (load {run['loadavg'][0]:.1f})", flush=True)
    from bench.bench_delivery import sender_floor

    floor = sender_floor(10_000, concurrency=args.concurrency)
    rows: list[list[Any]] = []
    limits: list[dict[str, Any]] = []
    for side, checkout in sides.items():
        side_runs = runs[side]

        def med(key: str, side_runs: list[dict[str, Any]] = side_runs) -> float:
            return median([float(r[key]) for r in side_runs])

        cpu = med("worker_cpu_ms_per_delivery")
        rows.append([f"{side} ({_commit(checkout)})", len(side_runs), round(med("per_s")), round(cpu, 3),
                     round(med("user_ms_per_delivery"), 3), round(med("sys_ms_per_delivery"), 3),
                     round(med("voluntary_switches_per_delivery"), 1), int(sum(r["duplicates"] for r in side_runs)),
                     " / ".join(f"{r['worker_cpu_ms_per_delivery']:.3f}" for r in side_runs),
                     " / ".join(f"{r['loadavg'][0]:.1f}" for r in side_runs)])
        limits.append(against_limit(path=f"burst {args.n:,}: worker CPU ms per delivery ({side}) vs the sender "
                                         "floor's CPU ms per send", figure=cpu, limit=floor["cpu_ms_per_send"],
                                    unit="ms", target=0.2, higher_is_better=False))
    who = f", {args.processes} worker processes" if args.processes > 1 else ""
    report(f"delivery_{args.tag}_quick", f"Delivery A/B, burst {args.n:,} due at :00{who}, {args.rounds} interleaved "
           "rounds (medians)", ["side", "runs", "deliveries/s", "CPU ms/delivery", "user ms", "sys ms", "vol. switches",
                                "duplicates",
                         "CPU ms per run", "load per run"], rows,
           {"runs": runs, "limits": limits, "concurrency": args.concurrency, "processes": args.processes,
            "sides": {side: {"path": str(path), "commit": _commit(path)} for side, path in sides.items()},
            "floors": {"sender_per_s": floor["per_s"], "sender_cpu_ms_per_send": floor["cpu_ms_per_send"]}})


if __name__ == "__main__":
    main()

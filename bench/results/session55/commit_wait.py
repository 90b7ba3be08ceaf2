"""Where a sender's outcome waits (session 55): the async senders' commit wait and the commit itself, per
worker process, in a delivery burst. Run from the repository root:
``python bench/results/session55/commit_wait.py 40000 2 16`` (due, processes, senders a process)."""

import atexit
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.getcwd())

import bench.bench_delivery as bd  # noqa: E402
from notify_core.delivery import async_senders, outcomes  # noqa: E402

waits: list[float] = []
holds: list[float] = []
groups: list[int] = []
_commit = async_senders.AsyncSenders._commit
_commit_finishes = outcomes.Outcomes._commit_finishes


async def timed_commit(self, item, entry, retry_entry):  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    stands = await _commit(self, item, entry, retry_entry)
    waits.append(time.perf_counter() - started)
    return stands


def timed_commit_finishes(self, batch):  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    _commit_finishes(self, batch)
    holds.append(time.perf_counter() - started)
    groups.append(len(batch))


async_senders.AsyncSenders._commit = timed_commit  # type: ignore[method-assign]
outcomes.Outcomes._commit_finishes = timed_commit_finishes  # type: ignore[method-assign]


def ms(values: list[float], q: float) -> float | None:
    ordered = sorted(values)
    return round(ordered[int(q * (len(ordered) - 1))] * 1000, 2) if ordered else None


def report() -> None:
    print(os.getpid(), "commit wait ms p50/p90/p99", ms(waits, 0.5), ms(waits, 0.9), ms(waits, 0.99),
          "| commit ms p50/p90", ms(holds, 0.5), ms(holds, 0.9),
          "| group median", statistics.median(groups) if groups else None, "n", len(groups), flush=True)


atexit.register(report)

if __name__ == "__main__":
    due, processes, senders = (int(a) for a in sys.argv[1:4])
    run = bd.run_once(due, 0.0, concurrency=senders, processes=processes)
    keep = ("per_s", "worker_cpu_ms_per_delivery", "duplicates", "lost_claims")
    print(json.dumps({k: run[k] for k in keep}))

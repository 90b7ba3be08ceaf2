"""Session 34: why does the consumer cost ~16 us an event at 49k/s offered and ~8 us draining alone?

The drain alone polls batches of 10,000; at 49k/s offered the batches average ~1,200 (local) and ~3,100
(Kafka). If a batch has a large fixed cost (the commit, the landing file, the position write), small
batches would explain the gap. This drains the same events alone with several ``max_batch`` values,
interleaved, and prints the CPU an event in each process.

    PYTHONPATH=. .venv/bin/python bench/results/session34/drain_batch_size.py
"""

from __future__ import annotations

import json
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path

from bench.bench_stream import _process_cpu_s, event_messages
from bench.common import load_average
from notify_core.clock import SYSTEM_CLOCK
from notify_core.events.consumer import EventConsumer
from notify_core.gc_tuning import tune_gc_for_throughput
from notify_core.store.sqlite import SqliteStore
from notify_core.stream.local_log import LocalLog

EVENTS = 200_000
BATCHES = (1_000, 3_000, 10_000)
ROUNDS = 3


def drain(max_batch: int) -> tuple[float, float, float]:
    workdir = Path(tempfile.mkdtemp(prefix="bench-drain-batch-"))
    try:
        log = LocalLog(workdir / "log.sqlite")
        for start in range(0, EVENTS, 10_000):
            log.produce_batch(event_messages(start, min(10_000, EVENTS - start), run="drain"))
        store = SqliteStore(workdir / "store.sqlite")
        store.tune_for_bulk_writes()
        tune_gc_for_throughput()
        consumer = EventConsumer(stream=log, store=store, landing=workdir / "landing", clock=SYSTEM_CLOCK,
                                 max_batch=max_batch, poll_timeout=0.05, decode_process=True)
        assert consumer.decoder is not None
        up_by = time.monotonic() + 60
        while (worker := consumer.decoder.pid) is None and time.monotonic() < up_by:
            time.sleep(0.02)
        worker_cpu, cpu, started = _process_cpu_s(worker), time.process_time(), time.perf_counter()
        consumer.run(stop=threading.Event(), max_records=EVENTS)
        wall = time.perf_counter() - started
        cpu, worker_cpu = time.process_time() - cpu, _process_cpu_s(worker) - worker_cpu
        consumer.close()
        log.close()
        store.close()
        return cpu / EVENTS * 1e6, worker_cpu / EVENTS * 1e6, EVENTS / wall
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    runs: dict[int, list[tuple[float, float, float]]] = {b: [] for b in BATCHES}
    for _ in range(ROUNDS):
        for batch in BATCHES:
            runs[batch].append(drain(batch))
    print(f"load {load_average()}; {EVENTS:,} events, {ROUNDS} interleaved rounds")
    print(f"{'max_batch':>9s} {'consumer us/ev (rounds)':>30s} {'median':>7s} "
          f"{'decoder us/ev':>14s} {'ev/s median':>12s}")
    for batch, rs in runs.items():
        print(f"{batch:9,d} {' '.join(f'{r[0]:.2f}' for r in rs):>30s} {statistics.median(r[0] for r in rs):7.2f} "
              f"{statistics.median(r[1] for r in rs):14.2f} {statistics.median(r[2] for r in rs):12,.0f}")
    Path(__file__).with_suffix(".json").write_text(json.dumps(
        {"events": EVENTS, "rounds": ROUNDS, "runs": {str(b): rs for b, rs in runs.items()},
         "loadavg": load_average()}, indent=2))


if __name__ == "__main__":
    main()

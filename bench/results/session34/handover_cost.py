"""Session 34: what one decoding-process call costs in CPU, with a batch-sized payload each way.

``DecodeProcess.submit`` of an identity function on 300 KB (a batch of ~1,000 events is about that much
each way), N calls one after another: CPU of this process, of the decoding process, and of
multiprocessing's resource tracker where there is one (the SharedMemory blocks of the old mechanism
register with it), per call. Run it from each checkout, interleaved:

    PYTHONPATH=<checkout> .venv/bin/python bench/results/session34/handover_cost.py
"""

from __future__ import annotations

import os
import time

from notify_core.events.decoder import DecodeProcess

CALLS = 1_000
PAYLOAD = os.urandom(300_000)


def _cpu_s(pid: int | None) -> float:
    if pid is None:
        return 0.0
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()  # noqa: SIM115, PTH123
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    from multiprocessing import resource_tracker

    process = DecodeProcess()
    try:
        for _ in range(20):  # started, warm
            assert process.submit(bytes, PAYLOAD).result(timeout=60) == PAYLOAD
        worker = process.pid
        tracker = getattr(resource_tracker._resource_tracker, "_pid", None)
        own, theirs, tracked = time.process_time(), _cpu_s(worker), _cpu_s(tracker)
        wall = time.perf_counter()
        for _ in range(CALLS):
            process.submit(bytes, PAYLOAD).result(timeout=60)
        wall = time.perf_counter() - wall
        own, theirs, tracked = (time.process_time() - own, _cpu_s(worker) - theirs, _cpu_s(tracker) - tracked)
    finally:
        process.close()
    per = 1e6 / CALLS
    print(f"a call: this process {own * per:.0f} us + decoding process {theirs * per:.0f} us + resource tracker "
          f"{tracked * per:.0f} us = {(own + theirs + tracked) * per:.0f} us CPU; wall {wall * per:.0f} us"
          f"{'' if tracker else ' (no resource tracker started)'}")


if __name__ == "__main__":
    main()

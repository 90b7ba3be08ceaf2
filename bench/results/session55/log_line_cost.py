"""What one "delivery attempt" log line costs through ``configure_logging``'s file handler, and its parts.
Run from the repository root: ``python bench/results/session55/log_line_cost.py``."""

import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, os.getcwd())

from notify_core.observability import JsonFormatter, configure_logging  # noqa: E402

configure_logging(path=Path(tempfile.mkdtemp()) / "delivery.jsonl")
log = logging.getLogger("notify_core.delivery.worker")
handler = logging.getLogger("notify_core").handlers[0]
extra = {"notification_id": "n" * 32, "user_id": "u12345", "campaign_id": "c123", "attempt": 1,
         "outcome": "delivered", "scheduled_at": "2026-12-07T05:00:00.000000Z",
         "delivered_at": "2026-12-07T05:00:01.234567Z", "lateness_s": 1.2346, "status_code": 200, "detail": "",
         "channel": "webhook", "worker": "w-abc"}
record = log.makeRecord(log.name, logging.INFO, "f", 1, "delivery attempt", (), None, extra=extra)
formatter = JsonFormatter()
N = 30000


def us(fn: Callable[[], object]) -> float:
    runs = []
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(N):
            fn()
        runs.append((time.perf_counter() - started) / N * 1e6)
    return round(sorted(runs)[2], 2)


print("log.info      ", us(lambda: log.info("delivery attempt", extra=extra)))
print("makeRecord    ", us(lambda: log.makeRecord(log.name, logging.INFO, "f", 1, "delivery attempt", (), None,
                                                  extra=extra)))
print("format        ", us(lambda: formatter.format(record)))
print("handler.handle", us(lambda: handler.handle(record)))
print("append only   ", us(lambda: handler._file.append(b"x" * 400 + b"\n")))

"""One "delivery attempt" line, CPU us a line: ``logger.info(..., extra=...)`` against ``log_fields`` (session 57),
both through the file handler ``notify worker`` configures. Run from the repository root:
``python bench/results/session57/log_line_cost.py``."""

import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, os.getcwd())

from notify_core.observability import configure_logging, log_fields  # noqa: E402

N = 30000


def fields() -> dict[str, Any]:
    return {"notification_id": "n-0001234", "user_id": "u-12345", "campaign_id": "c-99", "attempt": 1,
            "outcome": "delivered", "delivered_at": "2026-12-07T10:00:00.123456+00:00", "lateness_s": 0.1234,
            "status_code": 200, "detail": "", "channel": "webhook", "worker": "w-1"}


def main() -> None:
    configure_logging(path=Path(tempfile.mkdtemp()) / "delivery.jsonl")
    log = logging.getLogger("notify_core.delivery.worker")
    ways = {"logging": lambda: log.info("delivery attempt", extra=fields()),
            "log_fields": lambda: log_fields(log, logging.INFO, "delivery attempt", fields()),
            "the fields alone": fields}
    runs: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(5):
        for name, way in ways.items():
            started = time.process_time()
            for _ in range(N):
                way()
            runs[name].append((time.process_time() - started) / N * 1e6)
    alone = statistics.median(runs["the fields alone"])
    for name, us in runs.items():
        print(f"{name}: {statistics.median(us) - (0 if name == 'the fields alone' else alone):.2f} us a line "
              f"(median of {[round(x, 2) for x in us]})")


if __name__ == "__main__":
    main()

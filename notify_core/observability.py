"""Structured JSON logs with one schema for handlers, workers, assets and the CLI (CloudWatch-ready),
and a Prometheus histogram for hot loops.

Each line is one JSON object: ``ts``, ``level``, ``logger``, ``message`` plus whatever the call passed
in ``extra=`` (event ids, counts, latencies). Configure once per entry point with :func:`configure_logging`.
"""

from __future__ import annotations

import json
import logging
import sys
from bisect import bisect_left
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from prometheus_client import Histogram

_STANDARD = set(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                payload[key] = value
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


def configure_logging(*, level: str = "INFO", stream: Any = None) -> None:
    """Send ``notify_core`` and ``lambdas`` logs as JSON lines to ``stream`` (stderr by default)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    for name in ("notify_core", "lambdas", "notify_cli"):
        logger = logging.getLogger(name)
        logger.handlers = [handler]
        logger.setLevel(level)
        logger.propagate = False


class BatchHistogram(Histogram):
    """A Prometheus histogram that takes a batch of observations in one update per bucket.

    ``Histogram.observe`` takes a lock for the sum and for a bucket on every call, ~2 us: for a consumer
    that persists 50,000 events/s, one observation per event costs a tenth of a core. Observations of a
    batch often repeat a value (records produced together share a timestamp), so they come in as
    ``(value, count)`` pairs.
    """

    def observe_counts(self, pairs: Iterable[tuple[float, int]]) -> None:
        """Record each ``value`` ``count`` times (the same result as ``count`` calls of ``observe``)."""
        self._raise_if_not_observable()  # type: ignore[no-untyped-call]  # (unannotated upstream)
        bounds = self._upper_bounds  # ascending, the last one +Inf
        per_bucket = [0] * len(bounds)
        total = 0.0
        for value, count in pairs:
            per_bucket[bisect_left(bounds, value)] += count  # observe's rule: the first bound >= value
            total += value * count
        self._sum.inc(total)
        for index, count in enumerate(per_bucket):
            if count:
                self._buckets[index].inc(count)

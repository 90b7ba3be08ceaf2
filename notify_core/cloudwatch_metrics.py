"""The SLO counters of a process that is no Lambda, sent to CloudWatch (an adapter: boto3 stays here).

A Lambda's counters reach CloudWatch as EMF lines in its log
(:meth:`notify_core.observability.Invocations.flush_counters`); the consumer pod and the Dagster run pods have
no such log, so in aws they send the same counters' gains with ``PutMetricData``: the same namespace, names and
dimensions, which the alarms of :mod:`notify_core.slo` read (pipeline success: the consumer's records; schedule
generation: the daily plan's runs; missed deliveries: a ``notify worker`` or a Dagster delivery run's).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from notify_core.observability import SloKey, slo_counter_deltas

if TYPE_CHECKING:
    from notify_core.settings import NotifySettings


class CloudWatchCounters:
    """:meth:`flush` sends what the SLO counters gained since the last flush. ``client``: boto3 CloudWatch."""

    def __init__(self, client: Any, *, namespace: str = "Notify") -> None:
        self._client = client
        self._namespace = namespace
        self._flushed: dict[SloKey, float] = {}
        self._lock = threading.Lock()

    def flush(self) -> int:
        """Send the deltas; the number of data points sent."""
        with self._lock:
            flushed = dict(self._flushed)  # kept only once sent: a failed call sends the same gain next time
            data = [{"MetricName": name, "Dimensions": [{"Name": k, "Value": v} for k, v in dims], "Value": delta,
                     "Unit": "Count"} for (name, dims), delta in slo_counter_deltas(flushed)]
            for start in range(0, len(data), 1000):  # PutMetricData takes 1,000 data points a call
                self._client.put_metric_data(Namespace=self._namespace, MetricData=data[start:start + 1000])
            self._flushed = flushed
        return len(data)


_CLOUDWATCH: dict[tuple[str, str | None], CloudWatchCounters] = {}
_CLOUDWATCH_LOCK = threading.Lock()


def cloudwatch_counters(settings: NotifySettings) -> CloudWatchCounters | None:
    """In aws, this process's :class:`CloudWatchCounters` (one per process: each sends only what the process
    counted since its last flush), else None (:func:`publishing` is how a process sends them)."""
    if settings.env != "aws":
        return None
    key = (settings.aws_region, settings.cloudwatch_endpoint_url)
    with _CLOUDWATCH_LOCK:
        counters = _CLOUDWATCH.get(key)
        if counters is None:
            import boto3
            from botocore.config import Config

            counters = _CLOUDWATCH[key] = CloudWatchCounters(boto3.client(  # bounded: a pod's grace period
                "cloudwatch", region_name=settings.aws_region, endpoint_url=settings.cloudwatch_endpoint_url,
                config=Config(connect_timeout=5, read_timeout=10, retries={"max_attempts": 2})))
        return counters


@contextlib.contextmanager
def publishing(settings: NotifySettings, *, every_s: float = 60.0) -> Iterator[None]:
    """In aws, send this process's counters every ``every_s`` while the block runs and once as it ends (how
    it ends too: a failed run's outcome is what an alarm waits for); elsewhere nothing. For the processes
    that are no Lambda: ``notify consume``, ``notify worker`` and the Dagster runs that plan or deliver."""
    counters = cloudwatch_counters(settings)
    if counters is None:
        yield
        return
    stop = threading.Event()

    def every() -> None:
        while not stop.wait(every_s):
            publish_counters(counters)

    thread = threading.Thread(target=every, daemon=True, name="cloudwatch-counters")
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(30)
        publish_counters(counters)


def publish_counters(counters: CloudWatchCounters | None) -> None:
    """:meth:`CloudWatchCounters.flush`, a failure logged, not raised: the same gains go with the next call."""
    if counters is None:
        return
    try:
        counters.flush()
    except Exception as exc:  # CloudWatch unreachable or refusing
        logging.getLogger(__name__).warning("metrics publish failed", extra={"error": str(exc)})

"""The SLO counters of a process that is no Lambda, sent to CloudWatch (an adapter: boto3 stays here).

A Lambda's counters reach CloudWatch as EMF lines in its log
(:meth:`notify_core.observability.Invocations.flush_counters`); the consumer pod and the Dagster run pods have
no such log, so in aws they send the same counters' gains with ``PutMetricData``: the same namespace, names and
``outcome`` dimension, which the alarms of :mod:`notify_core.slo` read (pipeline success: the consumer's
records; schedule generation: the daily plan's runs).
"""

from __future__ import annotations

import logging
import threading
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
    counted since its last flush), else None. For the processes that are no Lambda: ``notify consume`` and
    the Dagster runs that plan (the pipeline-success and schedule-generation alarms read their counters)."""
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


def publish_counters(counters: CloudWatchCounters | None) -> None:
    """:meth:`CloudWatchCounters.flush`, a failure logged, not raised: the same gains go with the next call."""
    if counters is None:
        return
    try:
        counters.flush()
    except Exception as exc:  # CloudWatch unreachable or refusing
        logging.getLogger(__name__).warning("metrics publish failed", extra={"error": str(exc)})

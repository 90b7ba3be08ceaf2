"""The service-level metrics of Notify, in one place: what the SLO table, the alert rules and the Grafana
dashboard query, so a renamed metric breaks a test here instead of a silent dashboard panel.

Prometheus (``prometheus_client``'s default registry, served at ``notify serve``'s ``/metrics``):

* ``notify_http_requests_total{route,method,status}`` and ``notify_http_request_duration_seconds{route,method}``:
  one sample per gateway request, labelled by the route *template* (``/v1/users/{user_id}/recommendations``),
  never the raw path, so the series count stays bounded by the route table.
* ``notify_capture_events_total{outcome}``: events accepted into the stream / rejected by validation.
* ``notify_consumer_lag_seconds``: how far behind the event consumer is (age of the oldest record of the
  batch it just committed; 0 once it has caught up; while the Store keeps failing a batch, that batch's age).
  The record count is ``notify_consumer_lag_records``.
* ``notify_plan_generations_total{outcome}``, ``notify_planned_users_total``,
  ``notify_planned_notifications_total``: plan generation runs and what they planned.
* Delivery outcomes are ``notify_deliveries_total{outcome,channel}`` (owned by the delivery worker), the event
  pipeline's ``notify_consumer_records_total{outcome}`` (owned by the consumer).

On Lambda there is no scrape: :func:`emf_line` formats the same numbers as CloudWatch Embedded Metric
Format, one JSON log line that CloudWatch turns into metrics without an API call.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping
from typing import Any, ParamSpec, TypeVar

from prometheus_client import Counter, Gauge, Histogram

# Latency buckets from the recommendation path (~1 ms) to a cold start or a big plan request (seconds).
HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

HTTP_REQUESTS = Counter("notify_http_requests", "Gateway requests by route template, method and status",
                        ["route", "method", "status"])
HTTP_LATENCY = Histogram("notify_http_request_duration_seconds", "Gateway request latency by route template",
                         ["route", "method"], buckets=HTTP_BUCKETS)
CAPTURE_EVENTS = Counter("notify_capture_events", "Events received by capture, by outcome (accepted, rejected)",
                         ["outcome"])
CONSUMER_LAG_SECONDS = Gauge("notify_consumer_lag_seconds",
                             "Age of the oldest record in the consumer's last committed batch (0 when caught up)")
PLAN_GENERATIONS = Counter("notify_plan_generations", "Plan generation runs by outcome (success, failure)",
                           ["outcome"])
PLANNED_USERS = Counter("notify_planned_users", "Users planned by successful plan generation runs")
PLANNED_NOTIFICATIONS = Counter("notify_planned_notifications", "Notifications planned by successful runs")

# The counters the CloudWatch alarms read, sent as EMF by Lambda handlers and with PutMetricData by the
# processes that are no Lambda: each name with the one label that becomes its dimension (None: summed over
# its labels into one metric without dimensions).
# Histograms whose share under one bound an SLA reads (§1.2 on-time delivery, §1.4 event persistence): their
# bucket at that bound (dimension ``le``) and their count (no dimension) go to CloudWatch with the counters.
EMF_HISTOGRAM_BOUNDS = {"notify_delivery_lateness_seconds": "10.0", "notify_consumer_persist_latency_seconds": "5.0"}
EMF_COUNTERS: Mapping[str, str | None] = {
    "notify_deliveries_total": "outcome", "notify_plan_generations_total": "outcome",
    "notify_consumer_records_total": "outcome", "notify_capture_events_total": "outcome",
    "notify_delivery_missed_total": None,  # the missed-deliveries alarm: found too late to send, any channel
}

P = ParamSpec("P")
R = TypeVar("R")


_CHILDREN: dict[tuple[str, str, int], tuple[Any, Any]] = {}  # labelled children: .labels() costs ~5 us a call


def observe_request(*, route: str, method: str, status: int, seconds: float) -> None:
    """One gateway request (called by the gateway's middleware for every routed request)."""
    key = (route, method, status)
    children = _CHILDREN.get(key)
    if children is None:  # bounded: route templates x methods x statuses
        children = _CHILDREN.setdefault(key, (HTTP_REQUESTS.labels(route, method, str(status)),
                                               HTTP_LATENCY.labels(route, method)))
    children[0].inc()
    children[1].observe(seconds)


def observe_capture(*, accepted: int, rejected: int) -> None:
    if accepted:
        CAPTURE_EVENTS.labels("accepted").inc(accepted)
    if rejected:
        CAPTURE_EVENTS.labels("rejected").inc(rejected)


def counted_plan_generation(func: Callable[P, R]) -> Callable[P, R]:
    """Count a plan generation function's runs by outcome, and what a successful one planned.

    The wrapped function returns something with ``stats.users`` and ``stats.notifications`` (a ``PlanRun``).
    """

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            result = func(*args, **kwargs)
        except Exception:
            PLAN_GENERATIONS.labels("failure").inc()
            raise
        PLAN_GENERATIONS.labels("success").inc()
        stats: Any = getattr(result, "stats", None)
        if stats is not None:
            PLANNED_USERS.inc(int(getattr(stats, "users", 0)))
            PLANNED_NOTIFICATIONS.inc(int(getattr(stats, "notifications", 0)))
        return result

    return wrapper


def emf_line(
    *, namespace: str, metrics: Mapping[str, tuple[float, str]], dimensions: Mapping[str, str],
    timestamp_ms: int, properties: Mapping[str, Any] | None = None, also_undimensioned: bool = False,
) -> str:
    """One CloudWatch Embedded Metric Format record (``metrics``: name -> (value, unit)).

    The spec: https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html
    ``properties`` are extra searchable fields (the request id) that do not become dimensions.
    ``also_undimensioned``: the metrics are also published without dimensions (an empty dimension set), the
    sum over every value of ``dimensions`` that an alarm can read (CloudWatch does not aggregate across them).
    """
    when = timestamp_ms
    record: dict[str, Any] = {
        "_aws": {
            "Timestamp": when,
            "CloudWatchMetrics": [{
                "Namespace": namespace,
                "Dimensions": [sorted(dimensions)] + ([[]] if also_undimensioned else []),
                "Metrics": [{"Name": name, "Unit": unit} for name, (_v, unit) in metrics.items()],
            }],
        },
        **dict(properties or {}),
        **dict(dimensions),
        **{name: value for name, (value, _unit) in metrics.items()},
    }
    return json.dumps(record, separators=(",", ":"), default=str)

"""Lambda ``deliver_notifications``: an EventBridge rule invokes it every minute; it delivers what is due.

Thin: parse the event, run :class:`notify_core.delivery.DeliveryWorker` until nothing is due (bounded by
the invocation's remaining time, less a safety margin), shape the reply. It returns as soon as nothing
is due: an idle minute costs one short invocation, not ``linger_s`` of billed waiting. Only when this
invocation scheduled retries (+1 s, +5 s) does it linger (``linger_s``) for them, so they need not
wait for the next minute's invocation. Settings, Store and channel are built once per cold start.

Events: an EventBridge scheduled event (``"detail-type": "Scheduled Event"``) or a direct invocation
``{"linger_s": 20, "max_seconds": 50}`` (both optional).
"""

from __future__ import annotations

import time
from typing import Any

from lambdas.coldstart import ColdStart
from lambdas.http import flush_metrics
from notify_core.delivery.worker import DeliveryWorker, build_worker
from notify_core.observability import request_context

MARGIN_S = 3.0  # leave this much of the invocation for flushing and the reply
DEFAULT_LINGER_S = 25.0

def _build_worker() -> DeliveryWorker:
    from notify_core.observability import configure_logging
    from notify_core.settings import load_settings
    from notify_core.store.factory import build_store

    settings = load_settings()
    configure_logging()
    return build_worker(settings, build_store(settings), clock=settings.clock())


_worker = ColdStart(_build_worker)
use_worker = _worker.use  # install the worker this handler runs (tests); None: from settings on next use


def _remaining_s(context: Any) -> float:
    getter = getattr(context, "get_remaining_time_in_millis", None)
    return getter() / 1000.0 if callable(getter) else 60.0


def handler(event: dict[str, Any] | None, context: Any) -> dict[str, Any]:
    event = event or {}
    scheduled = event.get("detail-type") == "Scheduled Event" or event.get("source") == "aws.events"
    worker = _worker.get()
    budget = max(0.0, _remaining_s(context) - MARGIN_S)
    if "max_seconds" in event:
        budget = min(budget, float(event["max_seconds"]))
    linger = min(float(event.get("linger_s", DEFAULT_LINGER_S)), budget)
    started = time.perf_counter()
    now = worker.clock.now()
    with request_context(getattr(context, "aws_request_id", None)):  # on each delivery log row
        summary = worker.run_until_idle(deadline=now + budget)  # nothing due now: returns at once
        if summary.retried and linger > 0 and worker.clock.now() < now + budget:
            more = worker.run_until_idle(deadline=now + budget, linger_until=worker.clock.now() + linger)
            summary.add(more)
            summary.next_due_at = more.next_due_at
    flush_metrics()  # on Lambda: the delivery outcomes as EMF, for the notification-failure alarm
    return {
        "trigger": "schedule" if scheduled else "direct",
        "scheduled_time": event.get("time"),
        "seconds": round(time.perf_counter() - started, 3),
        **summary.as_dict(),
        "next_due_at": summary.next_due_at,
    }

"""Delivery stage: one delivery pass over what is due, and the "delivery execution" check.

``delivery_run`` runs the same worker as ``notify worker`` / the ``deliver_notifications`` Lambda for
notifications due now. For the demo, ``fast_forward_minutes`` shifts the worker's clock so what the plan
holds for the next N minutes is due now and lands in the outbox (lateness is then measured against the
shifted clock). It is 0 unless asked (``make demo`` asks for 60 with ``notify run --fast-forward-minutes``):
a shifted clock sends early, past the users' windows and quiet hours, and records those sends as made
later than they were. It was 60 by default, so every `notify run` and every run of the main job from the
UI sent the next hour of the plan at once. The check passes when every notification claimed in that window
has an outcome.
"""

import time

import dagster as dg

from notify_assets.automation import pool_for
from notify_core.cloudwatch_metrics import publishing
from notify_core.delivery import OffsetClock, build_worker
from notify_core.delivery.worker import execution_report, worker_options
from notify_core.observability import request_context
from notify_resources.resources import NotifyResource

DELIVERY_GROUP = "delivery"


class DeliveryConfig(dg.Config):
    fast_forward_minutes: int = 0  # the demo's: send the next N minutes of the plan now (see the module)
    lookback_minutes: int = 15
    linger_s: float = 0.0  # wait (real time) for retries due within this many seconds


@dg.asset(group_name=DELIVERY_GROUP, deps=[dg.AssetKey("notification_plan")], pool=pool_for("delivery_run"),
          description="One delivery pass: claim, render, send (channel from settings), record outcomes.")
def delivery_run(context: dg.AssetExecutionContext, config: DeliveryConfig,
                 notify: NotifyResource) -> dg.MaterializeResult:
    settings = notify.settings
    offset = config.fast_forward_minutes * 60.0
    clock = OffsetClock(offset, base=notify.clock())
    worker = build_worker(settings, notify.store, clock=clock, options=worker_options(
        settings, lookback_minutes=config.lookback_minutes + config.fast_forward_minutes, prefetch_s=0.0))
    started = time.perf_counter()
    try:
        now = worker.clock.now()
        # aws: a run pod is no Lambda, so what the run counted (failures, missed deliveries) is sent to CloudWatch
        with request_context(context.run_id), publishing(settings):  # log rows name the run that sent them
            summary = worker.run_until_idle(deadline=now + 600, linger_until=now + config.linger_s)
    finally:
        worker.close()
        worker.channel.close()
    stats = summary.as_dict()
    context.log.info(f"delivery: {stats}")
    return dg.MaterializeResult(metadata={
        "delivered": summary.delivered, "retried": summary.retried, "dead_lettered": summary.dead_lettered,
        "duplicates": summary.duplicates, "reclaimed": summary.reclaimed,
        "lateness_p50_s": float(stats["lateness_p50_s"] or 0.0),
        "lateness_p99_s": float(stats["lateness_p99_s"] or 0.0),
        "channel": settings.channel, "fast_forward_minutes": config.fast_forward_minutes,
        "window_start": now - worker.options.lookback_minutes * 60, "window_end": now,
        "seconds": round(time.perf_counter() - started, 3), "rows": summary.delivered,
    })


@dg.asset_check(asset=delivery_run, name="delivery_execution",
                description="Every notification claimed in the pass's window has an outcome (no stuck claims).")
def delivery_execution(context: dg.AssetCheckExecutionContext, notify: NotifyResource) -> dg.AssetCheckResult:
    event = context.instance.get_latest_materialization_event(dg.AssetKey("delivery_run"))
    meta = event.asset_materialization.metadata if event and event.asset_materialization else {}
    now = notify.clock().now()
    end = float(meta["window_end"].value) if "window_end" in meta else now
    start = float(meta["window_start"].value) if "window_start" in meta else end - 900
    counts = execution_report(notify.store, start=start, end=end, now=now + 3600)  # any claim left = stuck
    return dg.AssetCheckResult(passed=counts.get("claimed", 0) == 0, metadata={k: int(v) for k, v in counts.items()})


DELIVERY_ASSETS = [delivery_run]
DELIVERY_CHECKS = [delivery_execution]

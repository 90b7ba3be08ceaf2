"""The daily plan: every user's next local day of notifications, planned and written to the Store.

Thin on purpose: the asset calls :func:`notify_core.scheduling.service.plan_from_lake` (candidates from
the recommender when an index is published, otherwise the cosine fallback), reports the counts as
metadata, and reports the plan's independent re-checks (cap, quiet hours, capacity) as asset checks.
Re-materialising a partition re-plans that day idempotently: unchanged notifications are not written,
superseded pending ones are cancelled, claimed/sent ones are never touched.
"""

# No `from __future__ import annotations` here: Dagster reads the context annotations at decoration time.

from datetime import date

import dagster as dg

from notify_assets.embeddings import campaign_embeddings, user_embeddings
from notify_core.clock import Clock, today, utcnow
from notify_core.recommend.artefacts import build_artefact_store
from notify_core.scheduling.models import PlanOptions
from notify_core.scheduling.service import plan_from_lake
from notify_resources.resources import NotifyResource

SCHEDULING_GROUP = "scheduling"
PLAN_PARTITIONS = dg.DailyPartitionsDefinition(start_date="2026-01-01", end_offset=2)  # up to tomorrow
REPLAN_JOB = "replan_notifications"

_CHECKS = {
    "daily_cap": "No user above min(daily_cap, 5) notifications in the day.",
    "quiet_hours": "No notification inside the user's quiet hours or outside their local plan day (DST-aware).",
    "minute_capacity": "No minute above the delivery capacity, across the whole plan day.",
}


class PlanConfig(dg.Config):
    minute_capacity: int = 20_000
    min_gap_minutes: int = 60
    candidates_per_user: int = 20


def today_partition(clock: Clock) -> str:
    """Today's plan partition (UTC day) by the entry point's clock."""
    return today(clock).isoformat()


@dg.asset(
    group_name=SCHEDULING_GROUP, partitions_def=PLAN_PARTITIONS, deps=[user_embeddings, campaign_embeddings,
                                                                       "campaign_index"],
    check_specs=[dg.AssetCheckSpec(name, asset="notification_plan", description=d) for name, d in _CHECKS.items()],
    description="Each user's local day of notifications (caps, quiet hours, gaps, cooldowns, budgets, minute "
                "capacity), written to the Store tables plans and schedules; re-planning is idempotent.",
)
def notification_plan(
    context: dg.AssetExecutionContext, config: PlanConfig, notify: NotifyResource
) -> dg.MaterializeResult:
    # Runs that select every asset without a partition (notify_main, tests materialising ASSETS) plan today.
    clock = notify.clock()
    plan_day = date.fromisoformat(context.partition_key if context.has_partition_key else today_partition(clock))
    options = PlanOptions(minute_capacity=config.minute_capacity, min_gap_minutes=config.min_gap_minutes)
    run = plan_from_lake(notify.store, notify.lake, plan_day=plan_day, now=utcnow(clock), options=options,
                         artefacts=build_artefact_store(notify.settings), k=config.candidates_per_user)
    v = run.violations
    context.log.info(f"plan {run.plan_day}: {run.stats.notifications} notifications for {run.stats.users} users "
                     f"({run.writes.inserted} new, {run.writes.cancelled} cancelled, {run.writes.unchanged} unchanged; "
                     f"candidates: {run.candidate_source})")
    return dg.MaterializeResult(
        metadata={**run.metadata(), "busiest_minutes": dg.MetadataValue.json(run.minute_loads)},
        check_results=[
            dg.AssetCheckResult(check_name="daily_cap", passed=v.get("over_cap", 0) == 0,
                                metadata={"users_over_cap": v.get("over_cap", 0)}),
            dg.AssetCheckResult(check_name="quiet_hours",
                                passed=v.get("quiet_hours", 0) == 0 and v.get("outside_day", 0) == 0,
                                metadata={"in_quiet_hours": v.get("quiet_hours", 0),
                                          "outside_local_day": v.get("outside_day", 0),
                                          "not_minute_aligned": v.get("not_minute_aligned", 0)}),
            dg.AssetCheckResult(check_name="minute_capacity", passed=v.get("over_capacity", 0) == 0,
                                metadata={"minutes_over_capacity": v.get("over_capacity", 0),
                                          "peak_minute_load": run.stats.peak_minute_load,
                                          "capacity": config.minute_capacity}),
        ],
    )


SCHEDULING_ASSETS = [notification_plan]
SCHEDULING_JOBS = [
    dg.define_asset_job(REPLAN_JOB, selection=dg.AssetSelection.assets(notification_plan),
                        partitions_def=PLAN_PARTITIONS, description="Re-plan one day (the re-plan sensor's job)."),
]

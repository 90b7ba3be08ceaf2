"""The daily plan: every user's next local day of notifications, planned and written to the Store.

Thin on purpose: the asset calls :func:`notify_core.scheduling.service.plan_from_lake` (candidates from
the recommender when an index is published, otherwise the cosine fallback), reports the counts as
metadata, and reports the plan's independent re-checks (cap, quiet hours, capacity) as asset checks.
Re-materialising a partition re-plans that day idempotently: unchanged notifications are not written,
superseded pending ones are cancelled, claimed/sent ones are never touched.

The partitions start at the deployment (``notify_assets.automation.deployment_date``), so the asset is
built per settings by :func:`build_plan_asset`. The automation condition ``PLAN`` plans tomorrow as
soon as its partition exists and re-plans today and tomorrow when embeddings or the index change.
"""

# No `from __future__ import annotations` here: Dagster reads the context annotations at decoration time.

import functools
from collections.abc import Sequence
from datetime import date, timedelta

import dagster as dg

from notify_assets.automation import (
    AUTOMATED_RUN_TAG,
    CHANGED_USERS,
    CHANGED_USERS_SET,
    PLAN,
    REPLAN_UPDATES_MAX,
    REPLAN_USERS_MAX,
    pool_for,
)
from notify_assets.embeddings import campaign_embeddings, user_embeddings
from notify_core.clock import Clock, today, utcnow
from notify_core.cloudwatch_metrics import publishing
from notify_core.recommend.artefacts import build_artefact_store
from notify_core.scheduling.candidate_pool import backends_of
from notify_core.scheduling.checks import REACH_FLOOR, reaches_users
from notify_core.scheduling.models import ExplorationOptions, PlanOptions
from notify_core.scheduling.planner import PlanStats
from notify_core.scheduling.replan_users import changed_users
from notify_core.scheduling.service import plan_from_lake
from notify_core.store.port import Store
from notify_resources.resources import NotifyResource

SCHEDULING_GROUP = "scheduling"
PLAN_ASSET = "notification_plan"
FRESHNESS_CHECK = "todays_plan_exists"
REACH_CHECK = "reaches_users"
REPLAN_JOB = "replan_notifications"

_CHECKS = {
    "daily_cap": "No user above min(daily_cap, 5) notifications in the day.",
    "quiet_hours": "No notification inside the user's quiet hours or outside their local plan day (DST-aware).",
    "minute_capacity": "No minute above the delivery capacity, across the whole plan day.",
    REACH_CHECK: f"At least {REACH_FLOOR:.0%} of the users with a free slot left and an eligible candidate get a "
                 "notification (WARN: budgets and capacity may leave a few out; more means they are lost).",
}


class PlanConfig(dg.Config):
    minute_capacity: int = 20_000
    min_gap_minutes: int = 60
    candidates_per_user: int = 20


def today_partition(clock: Clock) -> str:
    """Today's plan partition (UTC day) by the entry point's clock, the one ``notify run`` plans."""
    return today(clock).isoformat()


def build_plan_asset(partitions: dg.DailyPartitionsDefinition) -> dg.AssetsDefinition:
    """The plan asset over ``partitions`` (``automation.plan_partitions(deployment_date(settings))``)."""

    @dg.asset(
        name=PLAN_ASSET, group_name=SCHEDULING_GROUP, partitions_def=partitions,
        deps=[user_embeddings, campaign_embeddings, "campaign_index"], automation_condition=PLAN,
        pool=pool_for(PLAN_ASSET),
        check_specs=[dg.AssetCheckSpec(name, asset=PLAN_ASSET, description=d, partitions_def=partitions)
                     for name, d in _CHECKS.items()],
        description="Each user's local day of notifications (caps, quiet hours, gaps, cooldowns, budgets, minute "
                    "capacity), written to the Store tables plans and schedules; re-planning is idempotent.",
    )
    def notification_plan(
        context: dg.AssetExecutionContext, config: PlanConfig, notify: NotifyResource
    ) -> dg.MaterializeResult:
        return _plan(context, config, notify)

    return notification_plan


def _data_version(records: "Sequence[dg.EventLogRecord]") -> str | None:
    mat = records[0].asset_materialization if records else None
    return (mat.tags or {}).get("dagster/data_version") if mat is not None else None


def _changed_since(instance: dg.DagsterInstance, key: dg.AssetKey, storage_id: int) -> bool:
    """Whether ``key`` got a new data version after event ``storage_id`` (a re-materialisation that
    changed nothing keeps its version)."""
    after = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=key, after_storage_id=storage_id),
                                            limit=1).records
    if not after:
        return False
    before = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=key, before_storage_id=storage_id),
                                             limit=1).records
    return not before or _data_version(after) != _data_version(before)


def affected_users(instance: dg.DagsterInstance, plan_key: dg.AssetKey, partition: str, *,
                   store: Store) -> list[str] | None:
    """The users a re-plan of ``partition`` must look at again, or None for every user.

    Limited only where it is cheap and safe: the day was planned before; since then the campaign side
    did not change (campaign vectors and index keep their data versions: a campaign change re-plans
    everyone); and every user-vector update since recorded the users it changed (metadata
    ``changed_users``, at most ``REPLAN_USERS_MAX``, their ids in the Store set ``changed_users_set``:
    :mod:`notify_core.scheduling.replan_users`), in at most ``REPLAN_UPDATES_MAX`` updates. The other users'
    plans are then exactly what a full re-plan would keep."""
    previous = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=plan_key, asset_partitions=[partition]), limit=1).records
    if not previous:
        return None
    since = previous[0].storage_id
    if any(_changed_since(instance, dg.AssetKey(key), since) for key in ("campaign_embeddings", "campaign_index")):
        return None
    updates = instance.fetch_materializations(dg.AssetRecordsFilter(
        asset_key=user_embeddings.key, after_storage_id=since), limit=REPLAN_UPDATES_MAX + 1).records
    if len(updates) > REPLAN_UPDATES_MAX:  # the newest first: the older updates' users would be missed
        return None
    users: set[str] = set()
    for record in updates:
        mat = record.asset_materialization
        count = mat.metadata.get(CHANGED_USERS) if mat is not None else None
        set_id = mat.metadata.get(CHANGED_USERS_SET) if mat is not None else None
        if not isinstance(count, dg.IntMetadataValue) or not isinstance(set_id, dg.TextMetadataValue):
            return None  # a large delta, or a run that named its users in the metadata (before the sets)
        named = changed_users(store, str(set_id.value), count=int(count.value or 0))
        if named is None:  # the set expired, or all its users were erased since
            return None
        users.update(named)
    return sorted(users) if 0 < len(users) <= REPLAN_USERS_MAX else None


def _plan(context: dg.AssetExecutionContext, config: PlanConfig, notify: NotifyResource) -> dg.MaterializeResult:
    # Runs that select every asset without a partition (tests materialising every asset) plan today.
    clock = notify.clock()
    plan_day = date.fromisoformat(context.partition_key if context.has_partition_key else today_partition(clock))
    context.log.info(f"progress {PLAN_ASSET}: planning {plan_day} (each user's local day)")
    options = PlanOptions(minute_capacity=config.minute_capacity, min_gap_minutes=config.min_gap_minutes,
                          exploration=ExplorationOptions(share=notify.settings.exploration_share))
    only = None
    if context.has_partition_key and context.run.tags.get(AUTOMATED_RUN_TAG) == "true":
        only = affected_users(context.instance, context.asset_key, context.partition_key, store=notify.store)
        if only is not None:
            context.log.info(f"progress {PLAN_ASSET}: re-planning the {len(only):,} users whose vectors changed")
    # aws: a run pod is no Lambda, so the run's plan generation (success or failure) is sent to CloudWatch
    # for the schedule-generation alarm
    with publishing(notify.settings):
        run = plan_from_lake(notify.store, notify.lake, plan_day=plan_day, now=utcnow(clock), options=options,
                             artefacts=build_artefact_store(notify.settings), k=config.candidates_per_user,
                             user_ids=only, candidate_workers=notify.settings.plan_candidate_workers,
                             reopen=functools.partial(backends_of, notify.settings),
                             progress=lambda done, total: context.log.info(
                                 f"progress {PLAN_ASSET}: {done:,}/{total:,} users planned"))
    v = run.violations
    context.log.info(f"plan {run.plan_day}: {run.stats.notifications} notifications for {run.stats.users} users "
                     f"({run.writes.inserted} new, {run.writes.cancelled} cancelled, {run.writes.unchanged} unchanged; "
                     f"candidates: {run.candidate_source})")
    return dg.MaterializeResult(
        metadata={**run.metadata(), "busiest_minutes": dg.MetadataValue.json(run.minute_loads),
                  "users_replanned": "all" if only is None else len(only)},
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
            _reach_result(run.stats),
        ],
    )


def _reach_result(stats: PlanStats) -> dg.AssetCheckResult:
    reachable, reached = stats.users_reachable, stats.users_planned
    return dg.AssetCheckResult(
        check_name=REACH_CHECK, passed=reaches_users(reachable=reachable, reached=reached),
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"users_reachable": reachable, "users_with_notifications": reached,
                  "share_reached": round(reached / reachable, 4) if reachable else 1.0,
                  "users_below_relevance_floor": stats.users_below_floor,
                  "budget_dropped": stats.budget_dropped, "capacity_dropped": stats.capacity_dropped})


def plan_exists_check(plan: dg.AssetsDefinition) -> dg.AssetChecksDefinition:
    """Freshness: today's and tomorrow's plan partitions exist (tomorrow's is planned ahead of time)."""

    @dg.asset_check(
        asset=plan, name=FRESHNESS_CHECK, blocking=False,
        # dagster 1.13's stubs type since_last_handled for asset-or-check conditions only
        automation_condition=dg.AutomationCondition.cron_tick_passed("30 0 * * *").since_last_handled(),  # type: ignore[misc]
        description="Freshness: today's plan exists, and tomorrow's (planned ahead for every time zone) after "
                    "00:30 UTC. Evaluated with every plan run and daily at 00:30 UTC.",
    )
    def todays_plan_exists(context: dg.AssetCheckExecutionContext, notify: NotifyResource) -> dg.AssetCheckResult:
        day = today(notify.clock())
        wanted = [day.isoformat(), (day + timedelta(days=1)).isoformat()]
        done = context.instance.get_materialized_partitions(plan.key)
        missing = [d for d in wanted if d not in done]
        return dg.AssetCheckResult(passed=day.isoformat() in done, severity=dg.AssetCheckSeverity.ERROR,
                                   metadata={"today": wanted[0], "missing": ", ".join(missing) or "none"})

    return todays_plan_exists


def replan_job(plan: dg.AssetsDefinition) -> "dg.UnresolvedAssetJobDefinition":
    """Re-plan one day by hand (the UI's launchpad); the automation re-plans on its own."""
    return dg.define_asset_job(REPLAN_JOB, selection=dg.AssetSelection.assets(plan), partitions_def=plan.partitions_def,
                               description="Re-plan one day.")

"""How the graph runs itself: automation conditions, concurrency pools and the plan's partitions.

One place for the rules the daemon follows, so each asset module only says which rule applies:

- ``DELTA``: run when an upstream asset's *data version* changed since the last tick (or the upstream is
  requested in the same tick, so a chain runs as one run), never while an upstream is missing or in
  progress, never twice at once. Every asset records a data version that stays the same when its
  content is the one its last materialisation recorded (:func:`data_version`: a content digest in the
  metadata, not "did this attempt write anything", so content written by a failed attempt still flows
  on), so a re-ingest with no new rows stops the chain there, and a daemon started on an up-to-date
  instance launches nothing (``since_last_handled`` resets on the first evaluation).
- ``PLAN``: the same for the daily plan, restricted to today's and tomorrow's partitions, and a new
  partition (tomorrow, at 00:00 UTC) is planned as soon as it exists: planning day D at the start of
  D-1 UTC is ahead of every time zone (UTC+14's local day D starts at D-1 10:00 UTC). Upstream
  requests in the same tick do not count (they run in another run; the plan waits for them to land).
- ``pool_for``: every asset has its own concurrency pool; ``dagster.yaml`` limits each pool to one
  slot, so at most one step of an asset (hence one run per asset partition) executes at a time.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import date, timedelta
from pathlib import Path

import dagster as dg

from notify_core.clock import SYSTEM_CLOCK, Clock, today
from notify_core.deployment_facts import PLAN_START, recorded_day
from notify_core.settings import NotifySettings
from notify_core.store.adapter import build_adapter

_DEPS_CHANGED = dg.AutomationCondition.any_deps_match(
    (dg.AutomationCondition.data_version_changed() & ~dg.AutomationCondition.executed_with_root_target())
    | dg.AutomationCondition.will_be_requested()
).with_label("any_deps_changed")
_DEPS_LANDED = dg.AutomationCondition.any_deps_match(
    dg.AutomationCondition.data_version_changed() & ~dg.AutomationCondition.executed_with_root_target()
).with_label("any_deps_changed_and_landed")

PLAN = (
    dg.AutomationCondition.in_latest_time_window(timedelta(days=2))
    & (dg.AutomationCondition.newly_missing() | _DEPS_LANDED).since_last_handled()
    & ~dg.AutomationCondition.any_deps_missing()
    & ~dg.AutomationCondition.any_deps_in_progress()
    & ~dg.AutomationCondition.any_deps_match(dg.AutomationCondition.will_be_requested())
    & ~dg.AutomationCondition.in_progress()
).with_label("plan_today_and_tomorrow")

DELTA = (
    (dg.AutomationCondition.newly_missing() | _DEPS_CHANGED).since_last_handled()
    & ~dg.AutomationCondition.any_deps_missing()
    & ~dg.AutomationCondition.any_deps_in_progress()
    & ~dg.AutomationCondition.in_progress()
).with_label("delta")

AUTOMATION_SENSOR = "default_automation_condition_sensor"
# Re-plans limited to the users affected: ``user_embeddings`` records the users it changed, when they are at
# most this many, as a set in the Store (notify_core.scheduling.replan_users; metadata ``changed_users``: how
# many, ``changed_users_set``: the set's id; never the ids, which Dagster's run storage would keep past an
# erasure); an automated re-plan of a day already planned, after only user vectors changed, then plans just
# them (``notify_assets.scheduling.affected_users``).
CHANGED_USERS = "changed_users"
CHANGED_USERS_SET = "changed_users_set"
AUTOMATED_RUN_TAG = "dagster/from_automation_condition"  # what the automation sensor tags its runs with
REPLAN_USERS_MAX = 1000
REPLAN_UPDATES_MAX = 100  # user-vector updates since a day's plan that its re-plan reads; more: everyone
AUTOMATION_INTERVAL_S = 5


def pool_for(asset: str) -> str:
    """The concurrency pool of one asset (``dagster.yaml``: ``concurrency.pools.default_limit: 1``)."""
    return f"notify_{asset}"


DEPLOYED_ON = "deployed_on"  # the data directory's marker before session 42: read once, as the day to record


def deployment_date(settings: NotifySettings, *, clock: Clock = SYSTEM_CLOCK) -> date:
    """The first plan partition: ``NOTIFY_PLAN_START_DATE`` when set, else the deployment's first day, which
    the first process to load the definitions records in the Store (:mod:`notify_core.deployment_facts`), so
    the UI does not show months of "missing" plans from before the deployment existed, and every process of
    it (the code server, each run pod, a restarted one) has the same partitions. A data directory's
    ``deployed_on`` marker from before is the day recorded, so an existing deployment keeps its first day."""
    if settings.plan_start_date is not None:
        return settings.plan_start_date
    marker = Path(settings.data_dir) / DEPLOYED_ON
    proposed = date.fromisoformat(marker.read_text(encoding="utf-8").strip()) if marker.exists() else today(clock)
    store = build_adapter(settings)  # the day is no personal field: nothing sealed, no key reached
    try:
        return recorded_day(store, PLAN_START, proposed=proposed)
    finally:
        store.close()


def plan_partitions(start: date, *, clock: Clock = SYSTEM_CLOCK) -> dg.DailyPartitionsDefinition:
    """Daily plan partitions from ``start`` up to tomorrow (UTC) by ``clock``: tomorrow is planned ahead.

    With the system clock the window moves with Dagster's own time (``end_offset=2`` adds today and
    tomorrow to the last complete day), so a long-running daemon sees a new partition every midnight.
    With an injected clock (``NOTIFY_CLOCK_START``: tests, replays) Dagster's wall time is not the
    clock's, so the window is pinned to the clock's day when the definitions load: ``end_date`` (exclusive)
    stops it at the clock's tomorrow, and the offset reaches that far when the clock is ahead of the
    calendar."""
    if clock is SYSTEM_CLOCK:
        return dg.DailyPartitionsDefinition(start_date=start.isoformat(), end_offset=2)
    day = today(clock)
    ahead = max(0, (day - today(SYSTEM_CLOCK)).days)  # Dagster counts partitions by the wall clock
    return dg.DailyPartitionsDefinition(start_date=min(start, day).isoformat(), end_offset=2 + ahead,
                                        end_date=(day + timedelta(days=2)).isoformat())


def automation_sensor() -> dg.AutomationConditionSensorDefinition:
    """Dagster's default automation sensor, declared so it is RUNNING by default (Dagster's own is stopped).
    It emits runs (one per plan partition), not backfills: a backfill waits for the backfill daemon's next
    pass, which added ~40 s to the landing-to-plan latency."""
    return dg.AutomationConditionSensorDefinition(
        AUTOMATION_SENSOR, target=dg.AssetSelection.all(),
        default_status=dg.DefaultSensorStatus.RUNNING, minimum_interval_seconds=AUTOMATION_INTERVAL_S,
        emit_backfills=False,  # today's and tomorrow's plan as two runs now, not a backfill the next daemon picks up
        description="Evaluates every asset's automation condition (ingested data -> features, embeddings, "
                    "index, plan).")


CONTENT_DIGEST = "content_digest"
"""Materialisation metadata: a digest of the asset's content as recorded (:func:`data_version` compares it)."""
DATA_VERSION_TAG = "dagster/data_version"


def latest_materialization(
    instance: dg.DagsterInstance, key: dg.AssetKey, partition: str | None = None
) -> dg.AssetMaterialization | None:
    """``key``'s latest recorded materialisation (of ``partition``), if any."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition] if partition else None), limit=1).records
    return records[0].asset_materialization if records else None


def previous_data_version(instance: dg.DagsterInstance, key: dg.AssetKey, partition: str | None = None) -> str | None:
    """The data version of ``key``'s latest materialisation (of ``partition``), if any."""
    mat = latest_materialization(instance, key, partition)
    return (mat.tags or {}).get(DATA_VERSION_TAG) if mat is not None else None


def recorded_digest(mat: dg.AssetMaterialization | None) -> str | None:
    """The content digest a materialisation recorded (metadata ``content_digest``), if any."""
    value = mat.metadata.get(CONTENT_DIGEST) if mat is not None else None
    return str(value.value) if value is not None else None


def combined_digest(parts: Mapping[str, str]) -> str:
    """One digest over per-partition digests (order-independent): cheap, no data re-read."""
    text = "\n".join(f"{name}={digest}" for name, digest in sorted(parts.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def data_version(context: dg.AssetExecutionContext, key: str, *, changed: bool,
                 digest: str | None = None) -> dg.DataVersion:
    """The previous data version when the asset's content is the one last recorded, else a new one, so
    downstream conditions (``data_version_changed``) skip a step whose inputs were re-checked but not changed.

    ``digest`` (a digest of the content the step leaves, recorded by the caller as metadata
    ``content_digest``) decides whenever given: compared with the digest the latest materialisation (of
    this partition) recorded, so content written by an attempt that failed before Dagster recorded it
    (a retried or re-run step then finds nothing to write) still gets a new version. A previous
    materialisation without a digest counts as different. ``changed`` (this attempt wrote something)
    always gives a new version."""
    partition = context.partition_key if context.has_partition_key else None
    previous = latest_materialization(context.instance, dg.AssetKey(key), partition)
    version = (previous.tags or {}).get(DATA_VERSION_TAG) if previous is not None else None
    if version is not None and not changed and (digest is None or digest == recorded_digest(previous)):
        return dg.DataVersion(version)
    return dg.DataVersion(f"{context.run_id[:8]}-{key}")

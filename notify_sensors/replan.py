"""Re-plan today's notifications when user embeddings or campaigns change.

One sensor per upstream (``user_embeddings``, ``campaign_embeddings``): a materialisation newer than the
cursor requests a run of the re-plan job for today's partition. The run key carries the event's storage
id, so a repeated tick never plans twice for the same change (and re-planning is idempotent anyway).
On the first tick the cursor is None (PLATFORM.md): the latest event is still handled.
"""

# No `from __future__ import annotations` here: Dagster reads the context annotations at decoration time.

import dagster as dg

from notify_core.clock import today
from notify_resources.resources import NotifyResource

REPLAN_JOB = "replan_notifications"  # notify_assets.scheduling.REPLAN_JOB (sensors do not import assets)


def _replan_sensor(asset: str) -> dg.SensorDefinition:
    @dg.sensor(job_name=REPLAN_JOB, name=f"replan_on_{asset}", minimum_interval_seconds=60,
               default_status=dg.DefaultSensorStatus.RUNNING)
    def sensor(context: dg.SensorEvaluationContext, notify: NotifyResource) -> dg.SensorResult:
        records = context.instance.fetch_materializations(dg.AssetKey(asset), limit=1).records
        if not records:
            return dg.SensorResult(skip_reason=f"{asset} never materialised")
        latest = records[0].storage_id
        if context.cursor is not None and int(context.cursor) >= latest:
            return dg.SensorResult(skip_reason=f"{asset} unchanged since event {latest}", cursor=context.cursor)
        day = today(notify.clock()).isoformat()
        request = dg.RunRequest(run_key=f"replan-{asset}-{latest}", partition_key=day,
                                tags={"notify/replan_reason": asset})
        return dg.SensorResult(run_requests=[request], cursor=str(latest))

    return sensor


replan_on_user_embeddings = _replan_sensor("user_embeddings")
replan_on_campaign_embeddings = _replan_sensor("campaign_embeddings")
REPLAN_SENSORS = [replan_on_user_embeddings, replan_on_campaign_embeddings]

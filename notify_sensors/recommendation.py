"""Publish each new campaign index version that passed its recall check (move ``CURRENT``).

Serving processes poll ``CURRENT`` and memory-map the new version on their own (see
:class:`notify_core.recommend.serving.IndexHolder`), so publishing is one small atomic write. The
sensor polls the artefact store rather than the event log: a version is publishable when its manifest
exists (the build finished) and records a passed recall check, which a failed or low-recall build
never does, so serving keeps the last good index.
"""

# No `from __future__ import annotations` here: Dagster reads the context annotations at decoration time.

import dagster as dg

from notify_core.recommend.artefacts import build_artefact_store
from notify_core.recommend.index import publish_newest
from notify_resources import NotifyResource

PUBLISHER_SENSOR = "campaign_index_publisher"


@dg.sensor(name=PUBLISHER_SENSOR, minimum_interval_seconds=15, default_status=dg.DefaultSensorStatus.RUNNING,
           description="Moves campaign_index/CURRENT to the newest build that passed its recall check.")
def campaign_index_publisher(context: dg.SensorEvaluationContext, notify: NotifyResource) -> dg.SensorResult:
    artefacts = build_artefact_store(notify.settings)
    newest, current = publish_newest(artefacts)
    if newest is None and current is None:
        return dg.SensorResult(skip_reason="no finished campaign index build passed its recall check yet")
    if newest is None:
        return dg.SensorResult(skip_reason=f"serving {current}; nothing newer to publish", cursor=current)
    context.log.info(f"published campaign index {newest} (was {current})")
    return dg.SensorResult(skip_reason=f"published {newest} (was {current})", cursor=newest)

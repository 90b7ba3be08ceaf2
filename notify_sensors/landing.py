"""Watch the landing folder: a new or changed batch file starts an ingestion run of its dataset.

Checked every few seconds (a stat of each file, no reads), ON by default. The state is the event log,
not a sensor cursor: each ingestion records the fingerprint of the files it read, and the sensor asks
only for the datasets whose files differ from what was last ingested. So a daemon started on an
up-to-date instance (after ``notify run``, say) launches nothing, and a run key per fingerprint keeps
one change from starting two runs. What the ingestion changed flows on by automation conditions
(features, embeddings, index, plan); what it did not change stops there.
"""

# No `from __future__ import annotations` here: Dagster reads the context annotations at decoration time.


import hashlib

import dagster as dg

from notify_core.ingest.batch import DATASETS
from notify_core.landing import NO_FILES, LandingArea, build_landing_area
from notify_resources import NotifyResource

INGEST_JOB = "ingest"
LANDING_INTERVAL_S = 5
FINGERPRINT_KEY = "landing_fingerprint"  # materialisation metadata of each ingestion asset
_UNFINISHED = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
               dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]


def dataset_fingerprint(area: LandingArea, dataset: str) -> str:
    """A digest of one dataset's landing files (name, size, mtime; in aws the S3 ETags): changes whenever
    a batch lands; ``NO_FILES`` when it has none."""
    return area.fingerprint(dataset=dataset)


def ingested_fingerprint(instance: dg.DagsterInstance, dataset: str) -> str:
    """The fingerprint the latest ingestion of ``dataset`` recorded (``NO_FILES`` if never ingested)."""
    event = instance.get_latest_materialization_event(dg.AssetKey(dataset))
    mat = event.asset_materialization if event else None
    value = mat.metadata.get(FINGERPRINT_KEY) if mat is not None else None
    return str(value.value) if value is not None else NO_FILES


@dg.sensor(job_name=INGEST_JOB, minimum_interval_seconds=LANDING_INTERVAL_S,
           default_status=dg.DefaultSensorStatus.RUNNING)
def landing_sensor(context: dg.SensorEvaluationContext, notify: NotifyResource) -> dg.SensorResult:
    busy = context.instance.get_runs_count(dg.RunsFilter(job_name=INGEST_JOB, statuses=_UNFINISHED))
    if busy:  # it records its fingerprints as each dataset lands; judge what changed after it ends
        return dg.SensorResult(skip_reason="an ingestion run is queued or in progress")
    area = build_landing_area(notify.settings)  # aws: the S3 prefix is the landing area
    changed = {dataset: fingerprint for dataset in DATASETS
               if (fingerprint := dataset_fingerprint(area, dataset)) != ingested_fingerprint(context.instance,
                                                                                            dataset)}
    if not changed:
        return dg.SensorResult(skip_reason="every landing dataset is ingested as it is")
    key = "-".join(f"{d}:{f}" for d, f in sorted(changed.items()))
    return dg.SensorResult(run_requests=[dg.RunRequest(
        run_key=f"landing-{hashlib.sha256(key.encode()).hexdigest()[:16]}",
        asset_selection=[dg.AssetKey(d) for d in sorted(changed)], tags={"notify/landed": ",".join(sorted(changed))})])

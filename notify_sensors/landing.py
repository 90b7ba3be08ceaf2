"""Watch the landing folder: a new or changed batch file starts an ingestion run of its dataset.

Checked every few seconds (a stat of each file, no reads), ON by default. The state is the event log,
not a sensor cursor: each ingestion records the fingerprint of the files it read, and the sensor asks
only for the datasets whose files differ from what was last ingested. So a daemon started on an
up-to-date instance (after ``notify run``, say) launches nothing, and a run key per fingerprint keeps
one change from starting two runs. What the ingestion changed flows on by automation conditions
(features, embeddings, index, plan); what it did not change stops there.

A failed (or canceled) ingestion records no fingerprint, so the sensor asks again for the same files; Dagster
never launches a second run for a run key it has seen, whatever became of the first, so the run key also
counts the unsuccessful runs for those files (``landing-<digest>``, then ``landing-<digest>-retry<n>``). A
retry waits :func:`retry_backoff_s` after the last failure (1 min, doubling, at most 1 h), so a file that
can never be ingested is tried again now and then, not in a loop; the tick says why it skipped.
"""

# No `from __future__ import annotations` here: Dagster reads the context annotations at decoration time.


import hashlib
import time

import dagster as dg

from notify_core.ingest.batch import DATASETS
from notify_core.landing import NO_FILES, LandingArea, build_landing_area
from notify_resources import NotifyResource

INGEST_JOB = "ingest"
LANDING_INTERVAL_S = 5
FINGERPRINT_KEY = "landing_fingerprint"  # materialisation metadata of each ingestion asset
UNFINISHED_RUNS = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
               dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]
UNSUCCESSFUL_RUNS = [dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED]
LANDING_KEY_TAG = "notify/landing_key"  # the digest of the landing fingerprints a run was requested for
RUN_KEY_TAG = "dagster/run_key"  # Dagster's (dagster._core.storage.tags.RUN_KEY_TAG)
RETRY_BACKOFF_S = 60.0  # wait after the first unsuccessful run for the same files; doubles with each one
RETRY_BACKOFF_MAX_S = 3600.0


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


def retry_backoff_s(failures: int) -> float:
    """Seconds to wait after the last of ``failures`` unsuccessful runs before asking again (0 for none)."""
    if failures <= 0:
        return 0.0
    return min(RETRY_BACKOFF_S * 2.0 ** min(failures - 1, 32), RETRY_BACKOFF_MAX_S)


def unsuccessful_runs(instance: dg.DagsterInstance, digest: str) -> list[dg.RunRecord]:
    """The failed or canceled ingestion runs requested for the landing files of ``digest``, newest first
    (those from before the landing-key tag carry only the first run key)."""
    records: dict[str, dg.RunRecord] = {}
    for tags in ({LANDING_KEY_TAG: digest}, {RUN_KEY_TAG: f"landing-{digest}"}):
        for record in instance.get_run_records(dg.RunsFilter(job_name=INGEST_JOB, statuses=UNSUCCESSFUL_RUNS,
                                                             tags=tags)):
            records[record.dagster_run.run_id] = record
    return sorted(records.values(), key=ended_at, reverse=True)


def ended_at(record: dg.RunRecord) -> float:
    return record.end_time if record.end_time is not None else record.update_timestamp.timestamp()


@dg.sensor(job_name=INGEST_JOB, minimum_interval_seconds=LANDING_INTERVAL_S,
           default_status=dg.DefaultSensorStatus.RUNNING)
def landing_sensor(context: dg.SensorEvaluationContext, notify: NotifyResource) -> dg.SensorResult:
    busy = context.instance.get_runs_count(dg.RunsFilter(job_name=INGEST_JOB, statuses=UNFINISHED_RUNS))
    if busy:  # it records its fingerprints as each dataset lands; judge what changed after it ends
        return dg.SensorResult(skip_reason="an ingestion run is queued or in progress")
    area = build_landing_area(notify.settings)  # aws: the S3 prefix is the landing area
    changed = {dataset: fingerprint for dataset in DATASETS
               if (fingerprint := dataset_fingerprint(area, dataset)) != ingested_fingerprint(context.instance,
                                                                                            dataset)}
    if not changed:
        return dg.SensorResult(skip_reason="every landing dataset is ingested as it is")
    key = "-".join(f"{d}:{f}" for d, f in sorted(changed.items()))
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    landed = ",".join(sorted(changed))
    failed = unsuccessful_runs(context.instance, digest)  # none of them recorded these fingerprints
    if failed:
        wait = retry_backoff_s(len(failed)) - (time.time() - ended_at(failed[0]))
        if wait > 0:
            last = failed[0].dagster_run
            reason = (f"{len(failed)} unsuccessful ingestion run(s) of {landed} for these landing files (last: "
                      f"{last.run_id}, {last.status.value}); next try in {wait:.0f} s "
                      f"(backoff {retry_backoff_s(len(failed)):.0f} s)")
            context.log.info(reason)
            return dg.SensorResult(skip_reason=reason)
        context.log.info(f"retrying the ingestion of {landed}: {len(failed)} unsuccessful run(s) for these files")
    return dg.SensorResult(run_requests=[dg.RunRequest(
        run_key=f"landing-{digest}" + (f"-retry{len(failed)}" if failed else ""),
        asset_selection=[dg.AssetKey(d) for d in sorted(changed)],
        tags={"notify/landed": landed, LANDING_KEY_TAG: digest})])

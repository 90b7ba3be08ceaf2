"""Watch the landing folder: a new or changed batch file starts an ingestion run (which is idempotent).

Checked every few seconds (a stat of each file, no reads), ON by default. What the ingestion changed
flows on by automation conditions (features, embeddings, index, plan); what it did not change stops here.
"""

# No `from __future__ import annotations` here: Dagster reads the context annotations at decoration time.


import hashlib

import dagster as dg

from notify_core.ingest.batch import DATASETS, landing_files
from notify_resources import NotifyResource

INGEST_JOB = "ingest"
LANDING_INTERVAL_S = 5


def landing_fingerprint(notify: NotifyResource) -> str:
    """A digest of every landing file's name, size and mtime: changes whenever a batch lands."""
    digest = hashlib.sha256()
    for dataset in DATASETS:
        for path in landing_files(notify.settings.landing, dataset):
            stat = path.stat()
            digest.update(f"{dataset}/{path.name}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


@dg.sensor(job_name=INGEST_JOB, minimum_interval_seconds=LANDING_INTERVAL_S,
           default_status=dg.DefaultSensorStatus.RUNNING)
def landing_sensor(context: dg.SensorEvaluationContext, notify: NotifyResource) -> dg.SensorResult:
    fingerprint = landing_fingerprint(notify)
    if fingerprint == context.cursor:
        return dg.SensorResult(skip_reason="landing folder unchanged", cursor=fingerprint)
    return dg.SensorResult(run_requests=[dg.RunRequest(run_key=f"landing-{fingerprint}")], cursor=fingerprint)

"""Finish the erasures the HTTP route left queued: start the ``erasure_sweep`` job when the queue is not empty.

``DELETE /v1/users/{id}`` works for its time budget and leaves the rest queued
(:mod:`notify_core.erasure_queue`); so does an erasure killed half-way. The sensor looks at the queue once a
minute (one item read) and starts one sweep run, which finishes every queued erasure in one pass. Never two
runs at once. A run that fails (S3 or the Store refusing) is retried after the landing sensor's backoff
(1 min, doubling, at most 1 h), not in a loop. ON by default: an erasure must finish unattended.
"""

# No `from __future__ import annotations` here: Dagster reads the context annotations at decoration time.

import time

import dagster as dg

from notify_core.erasure_queue import has_queued_erasures
from notify_resources import NotifyResource
from notify_sensors.landing import UNFINISHED_RUNS, UNSUCCESSFUL_RUNS, ended_at, retry_backoff_s

ERASURE_SWEEP_JOB = "erasure_sweep"
ERASURE_SWEEP_INTERVAL_S = 60
_RECENT = 20  # runs looked at to count the failures in a row


def _failures_in_a_row(instance: dg.DagsterInstance) -> tuple[int, float]:
    """How many of the latest sweep runs failed or were canceled in a row, and when the last one ended."""
    records = instance.get_run_records(dg.RunsFilter(job_name=ERASURE_SWEEP_JOB), limit=_RECENT)
    failed = 0
    for record in records:
        if record.dagster_run.status not in UNSUCCESSFUL_RUNS:
            break
        failed += 1
    return failed, ended_at(records[0]) if failed else 0.0


@dg.sensor(job_name=ERASURE_SWEEP_JOB, minimum_interval_seconds=ERASURE_SWEEP_INTERVAL_S,
           default_status=dg.DefaultSensorStatus.RUNNING,
           description="Starts the erasure sweep when an erasure waits in the erasure queue.")
def erasure_sweep_sensor(context: dg.SensorEvaluationContext, notify: NotifyResource) -> dg.SensorResult:
    if context.instance.get_runs_count(dg.RunsFilter(job_name=ERASURE_SWEEP_JOB, statuses=UNFINISHED_RUNS)):
        return dg.SensorResult(skip_reason="a sweep run is queued or in progress")
    if not has_queued_erasures(notify.store):
        return dg.SensorResult(skip_reason="no erasure waits")
    failed, ended = _failures_in_a_row(context.instance)
    wait = retry_backoff_s(failed) - (time.time() - ended) if failed else 0.0
    if wait > 0:
        return dg.SensorResult(skip_reason=f"{failed} unsuccessful sweep run(s) in a row; next try in {wait:.0f} s")
    return dg.SensorResult(run_requests=[dg.RunRequest(tags={"notify/retry": str(failed)} if failed else {})])

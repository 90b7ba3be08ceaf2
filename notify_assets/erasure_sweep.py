"""The ``erasure_sweep`` job: finish every queued erasure (thin glue over
:func:`notify_core.erasure.sweep_erasures`; started by ``notify_sensors.erasure``).

Dagster's run storage cannot forget one user, so nothing here names one: the log line and the audit
entry carry counts only.
"""

from typing import Any

import dagster as dg

from notify_core.erasure import erasure_objects, erasure_paths, erasure_replicas, sweep_erasures
from notify_core.security import audit
from notify_resources import NotifyResource
from notify_sensors.erasure import ERASURE_SWEEP_JOB


@dg.op(description="Finish every queued erasure: one pass over each table not keyed by user, every file and "
                   "every object version, for all of them together.")
def sweep_queued_erasures(context: dg.OpExecutionContext, notify: NotifyResource) -> None:
    from notify_core.stream import open_stream

    settings, store = notify.settings, notify.store

    def audited(action: str, detail: Any) -> None:
        audit.record(store, clock=notify.clock(), action=action, actor="dagster", source="dagster",
                     target=str(detail["target"]), detail={"rows_removed": detail.get("rows_removed")})

    stream = open_stream(settings)  # the embedded log forgets the users' records; Kafka's age out
    try:
        # no compaction: serving and the pipeline share the file (deletes are secure_delete, the WAL checkpointed)
        report = sweep_erasures(store, file_roots=erasure_paths(settings), object_areas=erasure_objects(settings),
                                replica_areas=erasure_replicas(settings), stream_log=stream, audit=audited,
                                actor="dagster", compact=False)
    finally:
        stream.close()
    context.log.info(f"erasure sweep: {report.users_finished} of {report.users_queued} queued erasures finished, "
                     f"{report.total} rows removed")


@dg.job(name=ERASURE_SWEEP_JOB, description="Finish the erasures the HTTP route or a killed run left queued.")
def erasure_sweep() -> None:
    sweep_queued_erasures()

"""Fail the runs whose process is gone, so their assets and pools are free again (the embedded default).

A run's status is written by the process that executes it. When that process dies with the code server
that watches it (the machine restarts, ``make dev`` is stopped mid-run, the OOM killer takes both) or a
``notify run`` is killed, the run stays STARTED for good: Dagster's own check of a run worker lives in the
code server that launched it and dies with it, and its run monitoring cannot ask the default run launcher
whether a worker lives. A run that never ends holds its asset's pool (one run per asset,
``notify_assets.automation.pool_for``) and one of the two run slots, and the automation conditions see its
assets as in progress: nothing it touches would ever run again.

Only where every run is on this machine: an instance on SQLite (it cannot be shared between hosts)
launching runs with the default launcher (subprocesses of the code server this sensor runs in). A run's
process is the one its first engine event names (``pid``: the run worker, or the ``notify run`` process);
it is alive only if that pid exists, is not a zombie and was created before the run started (a pid the
system gave to another process since is not the run's). On Kubernetes, Dagster's run monitoring asks the
K8s launcher instead.
"""

# No `from __future__ import annotations` here: Dagster reads the sensor's annotations at decoration time.

from dataclasses import dataclass

import dagster as dg
import psutil
from dagster._core.launcher import DefaultRunLauncher
from dagster._core.storage.runs import SqliteRunStorage

DEAD_RUNS_INTERVAL_S = 60
_CLOCK_SLACK_S = 1.0  # a run's start time and a process's creation time come from two clocks' roundings
_ENGINE_EVENTS_READ = 20  # the first engine events of a run: the one naming its process comes early


@dataclass(frozen=True, kw_only=True)
class DeadRuns:
    failed: list[str]
    canceled: list[str]

    def summary(self) -> str:
        if not self.failed and not self.canceled:
            return "no run without its process"
        return (f"marked failed: {len(self.failed)} run(s) whose process is gone; marked canceled: "
                f"{len(self.canceled)} run(s) canceling without a process")


def runs_are_local(instance: dg.DagsterInstance) -> bool:
    """Whether every run of ``instance`` executes on this machine (see the module's docstring)."""
    return isinstance(instance.run_storage, SqliteRunStorage) and isinstance(instance.run_launcher, DefaultRunLauncher)


def run_process(instance: dg.DagsterInstance, run_id: str) -> int | None:
    """The pid of the process executing ``run_id``, from its first engine event that names one."""
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT,
                                           limit=_ENGINE_EVENTS_READ).records
    for record in records:
        event = record.event_log_entry.dagster_event
        data = event.engine_event_data if event is not None else None
        pid = data.metadata.get("pid") if data is not None else None
        if isinstance(pid, dg.TextMetadataValue) and pid.value and pid.value.isdigit():
            return int(pid.value)
        if isinstance(pid, dg.IntMetadataValue) and pid.value is not None:
            return int(pid.value)
    return None


def process_lives(pid: int, *, started_at: float) -> bool:
    """Whether ``pid`` is a live process created by ``started_at`` (epoch seconds) at the latest."""
    try:
        process = psutil.Process(pid)
        created = float(process.create_time())
        return bool(process.status() != psutil.STATUS_ZOMBIE) and created <= started_at + _CLOCK_SLACK_S
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return False
    except psutil.AccessDenied:  # another user's process with that pid: not a run this user started
        return False


def fail_dead_runs(instance: dg.DagsterInstance) -> DeadRuns:
    """Mark failed each STARTED run, and canceled each CANCELING one, whose process is gone."""
    failed: list[str] = []
    canceled: list[str] = []
    filters = dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING])
    for record in instance.get_run_records(filters):
        run = record.dagster_run
        pid = run_process(instance, run.run_id)
        started_at = record.start_time or record.create_timestamp.timestamp()
        if pid is None or process_lives(pid, started_at=started_at):
            continue  # not started far enough to name its process, or running
        current = instance.get_run_by_id(run.run_id)  # it may have ended while we looked
        if current is None or current.is_finished:
            continue
        message = (f"The process executing this run (pid {pid}) is gone: it was killed, or the machine or "
                   "`dagster dev` restarted while it ran. Marked so by Notify's dead_run_sensor, which frees its "
                   "assets and pool; launch it again to redo its work.")
        if current.status == dg.DagsterRunStatus.CANCELING:
            instance.report_run_canceled(current, message=message)
            canceled.append(run.run_id)
        else:
            instance.report_run_failed(current, message=message)
            failed.append(run.run_id)
    return DeadRuns(failed=failed, canceled=canceled)


@dg.sensor(minimum_interval_seconds=DEAD_RUNS_INTERVAL_S, default_status=dg.DefaultSensorStatus.RUNNING,
           description="Marks failed the runs whose process is gone (a restart or a kill mid-run), so their "
                       "assets and pools are free again; only where every run is on this machine.")
def dead_run_sensor(context: dg.SensorEvaluationContext) -> dg.SkipReason:
    if not runs_are_local(context.instance):
        return dg.SkipReason("runs may execute on other machines: Dagster's run monitoring watches them")
    found = fail_dead_runs(context.instance)
    if found.failed or found.canceled:
        context.log.warning(found.summary())
    return dg.SkipReason(found.summary())

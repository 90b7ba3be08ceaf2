"""Forget Dagster's old runs, keeping every run whose events the pipeline still reads.

Dagster OSS keeps every run, its event log, its SQLite shard (``storage/history/runs/<run id>.db``, ~130 kB
for a one-step run) and its captured stdout/stderr for good: an unattended deployment grows by each
ingestion, automation and sweep run. Deleting old runs blindly would be wrong, though: a run's events are
the assets' history. The data versions and the landing sensor read each asset's latest materialization
(``notify_assets.automation.latest_materialization``), the index's freshness check reads the last 100
materializations of the campaign vectors, a partition's status (materialized, failed, in progress) is its
latest materialization or planned materialization, and the UI shows each check's latest result.

So a run goes only when all of these hold: it has finished; it was created more than
:data:`~notify_core.observability.LOG_RETENTION_DAYS` ago (a run's event log is a log, kept as long as the
others); and it holds none of the events above. Its leftovers go first, its run record last: the event log
(the index's rows and the shard's), the check results, the shard file, the captured logs, then the run.
Killed half-way, the next sweep finds the run again and finishes it; nothing is left behind without a
run to find it by.

The sensor sweeps once an hour, at most :data:`SLICE_RUNS` runs or :data:`SLICE_SECONDS` a tick, and says
what it did in its tick (the Dagster UI's sensor page). ON by default, as every other housekeeping chore.
Its "now" is the deployment's clock (``notify.now()``); a clock pinned in the past (``NOTIFY_CLOCK_START``,
a replay) finds every run younger than the retention, so nothing goes.
"""

# No `from __future__ import annotations` here: Dagster reads the sensor's annotations at decoration time.

import contextlib
import os
import re
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import dagster as dg
from dagster._core.storage.event_log.schema import AssetCheckExecutionsTable
from dagster._core.storage.event_log.sql_event_log import SqlEventLogStorage
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage

from notify_core.observability import LOG_RETENTION_DAYS
from notify_resources import NotifyResource

RUN_RETENTION_INTERVAL_S = 3600
MATERIALIZATIONS_KEPT = 100  # each asset's latest materializations kept whatever their age (freshness reads 100)
SLICE_RUNS = 500  # runs deleted a tick at most; the rest wait for the next tick
SLICE_SECONDS = 20.0  # and at most this long a tick (a sensor's evaluation times out after 60 s)
_PAGE = 200  # old runs read a query
_FINISHED = [dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED]
_MATERIALIZATION = dg.DagsterEventType.ASSET_MATERIALIZATION
_OBSERVATION = dg.DagsterEventType.ASSET_OBSERVATION
# Dagster's run ids are UUIDs; one given by hand (``execute_in_process(run_id=...)``) could hold a path
_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


@dataclass(frozen=True, kw_only=True)
class RunsPruned:
    """One sweep: runs deleted, old runs kept because the pipeline still reads them, and whether old runs
    were left for the next sweep (the slice ran out)."""

    deleted: int
    kept: int
    more: bool

    def summary(self) -> str:
        left = "; more left for the next sweep" if self.more else ""
        return f"{self.deleted} old run(s) deleted, {self.kept} old run(s) kept as still read{left}"


def runs_still_read(instance: dg.DagsterInstance, *, check_keys: Iterable[dg.AssetCheckKey] = ()) -> set[str]:
    """The runs holding an event the pipeline or the UI reads: each asset's :data:`MATERIALIZATIONS_KEPT`
    latest materializations, and its latest observation; each partition's latest materialization,
    observation and materialization attempt that has none after it (failed or in progress); each check's
    latest result."""
    storage = instance.event_log_storage
    keep: set[str] = set()
    for key in instance.get_asset_keys():
        keep.update(r.run_id for r in instance.fetch_materializations(key, limit=MATERIALIZATIONS_KEPT).records)
        keep.update(r.run_id for r in instance.fetch_observations(key, limit=1).records)
        planned = instance.get_latest_planned_materialization_info(key)
        if planned is not None:
            keep.add(planned.run_id)
        for event_type, fetch in ((_MATERIALIZATION, instance.fetch_materializations),
                                  (_OBSERVATION, instance.fetch_observations)):
            ids = list(storage.get_latest_storage_id_by_partition(key, event_type).values())
            for start in range(0, len(ids), _PAGE):
                chunk = ids[start:start + _PAGE]
                records = fetch(dg.AssetRecordsFilter(asset_key=key, storage_ids=chunk), limit=len(chunk))
                keep.update(r.run_id for r in records.records)
        attempts = storage.get_latest_asset_partition_materialization_attempts_without_materializations(key)
        keep.update(run_id for run_id, _ in attempts.values())
    checks = list(check_keys)
    if checks:
        keep.update(r.run_id for r in storage.get_latest_asset_check_execution_by_key(checks).values())
    keep.discard("")  # events reported outside any run
    return keep


def forget_run(instance: dg.DagsterInstance, run_id: str) -> None:
    """Delete one run and everything Dagster keeps of it, the run record last (see the module's docstring)."""
    events = instance.event_log_storage
    events.delete_events(run_id)
    if isinstance(events, SqlEventLogStorage):  # Dagster's delete_events leaves the check results
        with events.index_connection() as conn:
            conn.execute(AssetCheckExecutionsTable.delete().where(AssetCheckExecutionsTable.c.run_id == run_id))
    if _FILE_NAME.fullmatch(run_id):  # files are named by the run id: only a plain name is joined to a path
        if isinstance(events, SqliteEventLogStorage):  # and, on SQLite, the run's emptied shard file
            shard = events.path_for_shard(run_id)
            for path in (shard, f"{shard}-wal", f"{shard}-shm"):
                if os.path.exists(path):
                    os.unlink(path)
        with contextlib.suppress(NotImplementedError):  # a manager that cannot delete keeps them (its retention)
            instance.compute_log_manager.delete_logs(prefix=[run_id])
    instance.run_storage.delete_run(run_id)  # its tags go with it (ON DELETE CASCADE)


def _pages(instance: dg.DagsterInstance, filters: dg.RunsFilter, *, size: int) -> Iterator[Sequence[dg.RunRecord]]:
    """The runs ``filters`` selects, oldest first, a page at a time. Each page is read before the one before
    it is handed out: its cursor is that page's last run, which the caller may delete (a deleted cursor
    would end the listing)."""
    page = instance.get_run_records(filters, limit=size, ascending=True)
    while page:
        following = instance.get_run_records(filters, limit=size, ascending=True,
                                             cursor=page[-1].dagster_run.run_id) if len(page) == size else []
        yield page
        page = following


def prune_runs(instance: dg.DagsterInstance, *, now: datetime, check_keys: Sequence[dg.AssetCheckKey] = (),
               retention_days: int = LOG_RETENTION_DAYS, max_runs: int = SLICE_RUNS,
               max_seconds: float = SLICE_SECONDS, page_size: int = _PAGE) -> RunsPruned:
    """Delete finished runs created more than ``retention_days`` before ``now`` (the deployment's clock) that
    the pipeline no longer reads, oldest first, at most ``max_runs`` or ``max_seconds`` of them."""
    if retention_days <= 0:
        raise ValueError(f"retention_days must be positive, got {retention_days}")
    started = time.monotonic()
    old = dg.RunsFilter(statuses=_FINISHED, created_before=now - timedelta(days=retention_days))
    keep: set[str] | None = None  # read once, and only when an old run exists
    deleted = kept = 0
    for page in _pages(instance, old, size=page_size):
        if keep is None:
            keep = runs_still_read(instance, check_keys=check_keys)
        for record in page:
            run_id = record.dagster_run.run_id
            if run_id in keep:
                kept += 1
                continue
            if deleted >= max_runs or time.monotonic() - started > max_seconds:
                return RunsPruned(deleted=deleted, kept=kept, more=True)
            forget_run(instance, run_id)
            deleted += 1
    return RunsPruned(deleted=deleted, kept=kept, more=False)


@dg.sensor(minimum_interval_seconds=RUN_RETENTION_INTERVAL_S, default_status=dg.DefaultSensorStatus.RUNNING,
           description=f"Deletes finished runs older than {LOG_RETENTION_DAYS} days that no asset, partition or "
                       "check still reads (their event logs, shards and captured logs too), once an hour.")
def run_retention_sensor(context: dg.SensorEvaluationContext, notify: NotifyResource) -> dg.SkipReason:
    repository = context.repository_def
    checks = sorted(repository.asset_graph.asset_check_keys, key=str) if repository is not None else []
    pruned = prune_runs(context.instance, now=notify.now(), check_keys=checks)
    context.log.info(pruned.summary())
    return dg.SkipReason(pruned.summary())

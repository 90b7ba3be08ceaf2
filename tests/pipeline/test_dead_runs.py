"""A run whose process is gone is marked failed (:mod:`notify_sensors.dead_runs`), on the instance the embedded
default runs; a live run, wherever its process, is left alone.

The first test reproduces what a restart leaves: ``notify run`` killed with SIGKILL mid-run (as the machine
restarting or the OOM killer would) leaves its run STARTED, and it stayed so for good, its assets in
progress for the automation conditions.
"""

# No `from __future__ import annotations`: Dagster reads the test asset's context annotation at decoration time.

import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest

from notify_assets.definitions import build_definitions
from notify_core.settings import NotifySettings
from notify_sensors.dead_runs import fail_dead_runs, process_lives, run_process, runs_are_local
from tests.pipeline.instances import REPO, repo_instance
from tests.pipeline.test_dagster_postgres import _dagster_home
from tests.retail_fixture import write_retail
from tests.servers import EmbeddedPostgres

MORNING = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
IN_PROGRESS = [dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.CANCELING]


def _sensor_tick(instance: dg.DagsterInstance, data: Path) -> str:
    defs = build_definitions(NotifySettings(data_dir=data))
    sensor = defs.resolve_sensor_def("dead_run_sensor")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    with dg.build_sensor_context(instance=instance, repository_def=defs.get_repository_def()) as context:
        result = sensor(context)
    assert isinstance(result, dg.SkipReason)
    return str(result.skip_message)


def test_a_run_killed_mid_way_is_marked_failed_and_the_next_run_goes_through(tmp_path: Path) -> None:
    home, data = tmp_path / "dagster", tmp_path / "data"
    repo_instance(home).dispose()
    env = {**os.environ, "DAGSTER_HOME": str(home), "NOTIFY_CLOCK_START": MORNING.isoformat(),
           "NOTIFY_SOURCE_DATA": str(write_retail(tmp_path / "retail.parquet"))}
    notify = [sys.executable, "-m", "notify_cli.main", "run", "--data-dir", str(data)]
    child = subprocess.Popen(notify, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    instance = repo_instance(home)
    try:
        deadline, run_id = time.monotonic() + 120, None
        while run_id is None and time.monotonic() < deadline and child.poll() is None:
            for record in instance.get_run_records(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED])):
                if instance.get_records_for_run(record.dagster_run.run_id,
                                                of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records:
                    run_id = record.dagster_run.run_id  # mid-way: an asset done, the rest to come
            time.sleep(0.05)
        assert run_id is not None, "the run never got going"
        child.send_signal(signal.SIGKILL)
        child.wait(30)
        assert run_process(instance, run_id) == child.pid
        time.sleep(1.0)
        run = instance.get_run_by_id(run_id)
        assert run is not None and run.status == dg.DagsterRunStatus.STARTED  # what a restart leaves, for good

        assert _sensor_tick(instance, data) == (
            "marked failed: 1 run(s) whose process is gone; marked canceled: 0 run(s) canceling without a process")
        run = instance.get_run_by_id(run_id)
        assert run is not None and run.status == dg.DagsterRunStatus.FAILURE
        failure = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.RUN_FAILURE).records
        assert len(failure) == 1 and f"(pid {child.pid}) is gone" in str(failure[0].event_log_entry.message)
        assert not instance.get_run_records(dg.RunsFilter(statuses=IN_PROGRESS))
        assert _sensor_tick(instance, data) == "no run without its process"  # once

        again = subprocess.run(notify, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
        assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
        assert not instance.get_run_records(dg.RunsFilter(statuses=IN_PROGRESS))
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        instance.dispose()


_RELEASE = threading.Event()
_ENTERED = threading.Event()


@dg.asset
def waits(context: dg.AssetExecutionContext) -> None:
    _ENTERED.set()
    _RELEASE.wait(60)


def test_a_live_run_is_left_alone(tmp_path: Path) -> None:
    """A run executing in this very process (the pid its engine event names is alive and older than the run)."""
    instance = repo_instance(tmp_path / "dagster")
    results: list[dg.ExecuteInProcessResult] = []
    runner = threading.Thread(target=lambda: results.append(dg.materialize([waits], instance=instance)))
    try:
        runner.start()
        assert _ENTERED.wait(30)
        [record] = instance.get_run_records(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))
        assert run_process(instance, record.dagster_run.run_id) == os.getpid()
        found = fail_dead_runs(instance)
        assert found.failed == [] and found.canceled == []
        run = instance.get_run_by_id(record.dagster_run.run_id)
        assert run is not None and run.status == dg.DagsterRunStatus.STARTED
    finally:
        _RELEASE.set()
        runner.join(60)
        instance.dispose()
    assert results and results[0].success


def test_a_pid_given_to_another_process_since_is_not_the_runs() -> None:
    """Judged against the process's creation time as the system reports it (psutil reads /proc, which a
    shifted test clock does not move; in production both are the wall clock)."""
    import psutil

    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        created = psutil.Process(other.pid).create_time()
        assert process_lives(other.pid, started_at=created + 5)  # created before "its" run started
        assert not process_lives(other.pid, started_at=created - 5)  # created after the run started: another's
    finally:
        other.kill()
        other.wait()
    assert not process_lives(other.pid, started_at=time.time())  # gone


def test_runs_on_other_machines_are_not_judged(tmp_path: Path, postgres: EmbeddedPostgres) -> None:
    """On PostgreSQL (the Helm chart's storage) runs may be on any pod: the sensor only says so."""
    local = repo_instance(tmp_path / "local")
    shared = dg.DagsterInstance.from_config(str(_dagster_home(tmp_path, postgres)))
    try:
        assert runs_are_local(local) and not runs_are_local(shared)
        assert _sensor_tick(shared, tmp_path / "data").startswith("runs may execute on other machines")
    finally:
        local.dispose()
        shared.dispose()


def test_a_run_whose_worker_never_started_is_failed_by_dagsters_run_monitoring(
        instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch) -> None:
    """Launched (STARTING: the launch event stored) and never started: the repo's ``dagster.yaml`` turns on
    Dagster's run monitoring, which fails it once its start timeout has passed (the clock it reads moved)."""
    import logging

    from dagster._core.events import DagsterEvent
    from dagster._daemon.monitoring import run_monitoring

    assert instance.run_monitoring_enabled and instance.run_monitoring_start_timeout_seconds == 180
    run = instance.add_run(dg.DagsterRun(job_name="launched", run_id="2" * 36,
                                         status=dg.DagsterRunStatus.NOT_STARTED))
    instance.report_dagster_event(DagsterEvent(event_type_value=dg.DagsterEventType.RUN_STARTING.value,
                                               job_name=run.job_name), run_id=run.run_id)
    [record] = instance.get_run_records(dg.RunsFilter(run_ids=[run.run_id]))
    assert record.dagster_run.status == dg.DagsterRunStatus.STARTING
    logger = logging.getLogger("test")
    run_monitoring.monitor_starting_run(instance, record, logger)
    assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.STARTING  # within its timeout
    later = time.time() + 181
    monkeypatch.setattr(run_monitoring, "get_current_timestamp", lambda: later)
    run_monitoring.monitor_starting_run(instance, record, logger)
    assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE

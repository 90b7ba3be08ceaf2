"""Old Dagster runs are deleted with everything Dagster keeps of them, except the runs the pipeline still reads
(:mod:`notify_sensors.run_retention`), on the instance the embedded default runs (the repo's ``dagster.yaml``).

The invariant checked after every sweep, a killed one included: the runs left are exactly the finished runs
younger than the retention, the unfinished ones and those holding an event still read; every partition's
status, each asset's latest materialization and each check's latest result are what they were; nothing of a
deleted run is left (event rows, check rows, tags, shard file, captured logs).
"""

# No `from __future__ import annotations`: Dagster reads the assets' context annotations at decoration time.

import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa

from notify_sensors import run_retention
from notify_sensors.run_retention import RunsPruned, prune_runs, runs_still_read
from tests.pipeline.instances import REPO, repo_instance
from tests.pipeline.test_dagster_postgres import _dagster_home
from tests.servers import EmbeddedPostgres

LATER = timedelta(days=31)  # past the 30-day retention


DAYS = dg.DailyPartitionsDefinition(start_date="2026-01-01")


@dg.asset
def vectors() -> dg.MaterializeResult:
    print("captured stdout")  # the compute log manager keeps it per run
    return dg.MaterializeResult(metadata={"rows": 1})


@dg.asset_check(asset=vectors)
def vectors_fresh() -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=True)


_FAILING: set[str] = set()  # the plan's days that fail now


@dg.asset(partitions_def=DAYS)
def plan(context: dg.AssetExecutionContext) -> None:
    if context.partition_key in _FAILING:
        raise RuntimeError("this day fails")


CHECK_KEYS = [vectors_fresh.check_key]


def _history(instance: dg.DagsterInstance) -> dict[str, list[str]]:
    """Runs a history worth pruning: ``vectors`` (with its check) 5 times; the plan's day 1 once, day 2 three
    times, day 9 once and then failing (its status in the UI: failed), day 2 again (so the failed attempt
    is not the plan's latest attempt). The tests keep an asset's last 2 materializations."""
    runs: dict[str, list[str]] = {"vectors": [], "plan": []}
    for _ in range(5):
        runs["vectors"].append(dg.materialize([vectors, vectors_fresh], instance=instance).run_id)
    for day in ("2026-01-01", "2026-01-02", "2026-01-02", "2026-01-02", "2026-01-09", "2026-01-09", "2026-01-02"):
        if len(runs["plan"]) == 5:
            _FAILING.add(day)
        try:
            runs["plan"].append(dg.materialize([plan], instance=instance, partition_key=day,
                                               raise_on_error=False).run_id)
        finally:
            _FAILING.clear()
    return runs


def _statuses(instance: dg.DagsterInstance) -> dict[str, Any]:
    """What the pipeline and the UI read of the assets' history."""
    storage = instance.event_log_storage
    latest = instance.get_latest_materialization_event(vectors.key)
    checks = storage.get_latest_asset_check_execution_by_key(CHECK_KEYS)
    return {
        "materialized": instance.get_materialized_partitions(plan.key),
        "attempts": dict(storage.get_latest_asset_partition_materialization_attempts_without_materializations(
            plan.key)),
        "latest_by_partition": dict(storage.get_latest_storage_id_by_partition(
            plan.key, dg.DagsterEventType.ASSET_MATERIALIZATION)),
        "latest_vectors": (latest.run_id, latest.timestamp) if latest else None,
        "latest_check": {str(k): v.run_id for k, v in checks.items()},
    }


def _leftovers(home: Path, instance: dg.DagsterInstance) -> dict[str, set[str]]:
    """Run ids that something still names, per place Dagster keeps them (the tables on either storage; the
    shard files on SQLite; the captured logs' folders)."""
    from dagster._core.storage.event_log.schema import AssetCheckExecutionsTable, SqlEventLogStorageTable
    from dagster._core.storage.runs.schema import RunTagsTable

    def run_ids(conn: Any, column: Any) -> set[str]:
        return {r for (r,) in conn.execute(sa.select(column).distinct()) if r}

    with instance.event_log_storage.index_connection() as index:  # type: ignore[attr-defined]
        events = run_ids(index, SqlEventLogStorageTable.c.run_id)
        checks = run_ids(index, AssetCheckExecutionsTable.c.run_id)
    with instance.run_storage.connect() as runs_db:  # type: ignore[attr-defined]
        tags = run_ids(runs_db, RunTagsTable.c.run_id)
    shards = home / "storage" / "history" / "runs"
    logs = Path(instance.compute_log_manager._base_dir)  # type: ignore[attr-defined]  # the local manager's folder
    return {
        "runs": {r.dagster_run.run_id for r in instance.get_run_records()},
        "events": events, "checks": checks, "tags": tags,
        "shards": {p.stem for p in shards.glob("*.db") if p.stem != "index"} if shards.exists() else set(),
        "compute_logs": {p.name for p in logs.iterdir()} if logs.exists() else set(),
    }


def _assert_nothing_of_deleted_runs_left(home: Path, instance: dg.DagsterInstance) -> None:
    left = _leftovers(home, instance)
    for place, run_ids in left.items():
        assert run_ids <= left["runs"], (place, run_ids - left["runs"])


@pytest.fixture
def keep_two(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(run_retention, "MATERIALIZATIONS_KEPT", 2)


def _expected_left(runs: dict[str, list[str]]) -> set[str]:
    v, p = runs["vectors"], runs["plan"]
    # vectors: its last 2 (the latest check's run among them); the plan: each day's latest materialization
    # (day 1's only one is not among the plan's last 2) and day 9's failed attempt (its partition's status)
    return {v[3], v[4], p[0], p[4], p[5], p[6]}


def test_old_runs_go_and_every_run_still_read_stays(instance: dg.DagsterInstance, dagster_home: Path,
                                                    keep_two: None) -> None:
    runs = _history(instance)
    assert instance.get_run_by_id(runs["plan"][5]).status == dg.DagsterRunStatus.FAILURE
    before, everything = _statuses(instance), _leftovers(dagster_home, instance)
    assert len(everything["shards"]) == len(everything["compute_logs"]) == 12 and everything["tags"]

    now = datetime.now(UTC)
    assert prune_runs(instance, now=now, check_keys=CHECK_KEYS) == RunsPruned(deleted=0, kept=0, more=False)
    assert _leftovers(dagster_home, instance) == everything  # nothing is older than the retention yet

    pruned = prune_runs(instance, now=now + LATER, check_keys=CHECK_KEYS)
    left = _leftovers(dagster_home, instance)
    assert left["runs"] == _expected_left(runs)
    assert pruned == RunsPruned(deleted=6, kept=6, more=False)
    assert _statuses(instance) == before
    _assert_nothing_of_deleted_runs_left(dagster_home, instance)
    assert left["shards"] == left["compute_logs"] == left["runs"]
    assert left["tags"] == {r for r in left["runs"] if r in runs["plan"]}  # partition tags of kept runs

    # the next sweep finds only the kept runs; a new run is kept by its age whatever it holds
    assert prune_runs(instance, now=now + LATER, check_keys=CHECK_KEYS) == RunsPruned(
        deleted=0, kept=6, more=False)


def test_unfinished_runs_are_never_deleted(instance: dg.DagsterInstance, keep_two: None) -> None:
    runs = _history(instance)
    stuck = instance.add_run(dg.DagsterRun(job_name="stuck", run_id="0" * 36,
                                           status=dg.DagsterRunStatus.STARTED))
    canceling = instance.add_run(dg.DagsterRun(job_name="canceling", run_id="1" * 36,
                                            status=dg.DagsterRunStatus.CANCELING))
    prune_runs(instance, now=datetime.now(UTC) + LATER, check_keys=CHECK_KEYS)
    left = {r.dagster_run.run_id for r in instance.get_run_records()}
    assert left == _expected_left(runs) | {stuck.run_id, canceling.run_id}


def test_a_sweep_in_slices_ends_where_one_sweep_does(instance: dg.DagsterInstance, dagster_home: Path,
                                                     keep_two: None) -> None:
    """Small pages whose last run is deleted (the listing's cursor) and a slice of one run a sweep."""
    runs = _history(instance)
    before = _statuses(instance)
    later = datetime.now(UTC) + LATER
    sweeps = []
    while not sweeps or sweeps[-1].more:
        sweeps.append(prune_runs(instance, now=later, check_keys=CHECK_KEYS, max_runs=1, page_size=2))
        assert len(sweeps) < 20
    assert [s.deleted for s in sweeps] == [1, 1, 1, 1, 1, 1]  # the last one finds nothing more
    assert _leftovers(dagster_home, instance)["runs"] == _expected_left(runs)
    assert _statuses(instance) == before
    _assert_nothing_of_deleted_runs_left(dagster_home, instance)


def test_a_sweep_stops_at_its_time_budget(instance: dg.DagsterInstance, keep_two: None) -> None:
    _history(instance)
    pruned = prune_runs(instance, now=datetime.now(UTC) + LATER, check_keys=CHECK_KEYS, max_seconds=0.0)
    assert pruned.deleted == 0 and pruned.more


# The sweep in a child process that kills itself (SIGKILL) right after one step of its third run's deletion.
_KILLED_SWEEP = textwrap.dedent("""
    import os, signal, sys
    from datetime import UTC, datetime, timedelta
    import dagster as dg
    from notify_sensors import run_retention
    from tests.pipeline.instances import repo_instance
    from tests.pipeline.test_run_retention import CHECK_KEYS, LATER

    home, target, attribute = sys.argv[1], sys.argv[2], sys.argv[3]
    run_retention.MATERIALIZATIONS_KEPT = 2
    instance = repo_instance(__import__("pathlib").Path(home))
    owner = {"events": instance.event_log_storage, "logs": instance.compute_log_manager,
             "runs": instance.run_storage}[target]
    step, calls = getattr(owner, attribute), []

    def killed_after(*args, **kwargs):
        step(*args, **kwargs)
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGKILL)

    setattr(owner, attribute, killed_after)
    run_retention.prune_runs(instance, now=datetime.now(UTC) + LATER, check_keys=CHECK_KEYS)
    sys.exit(3)  # not killed: the test fails
""")


@pytest.mark.parametrize("target, attribute", [("events", "delete_events"), ("logs", "delete_logs"),
                                                ("runs", "delete_run")])
def test_a_sweep_killed_mid_run_is_finished_by_the_next(tmp_path: Path, keep_two: None, target: str,
                                                         attribute: str) -> None:
    home = tmp_path / "dagster"
    instance = repo_instance(home)
    try:
        runs = _history(instance)
        before = _statuses(instance)
    finally:
        instance.dispose()
    child = subprocess.run([sys.executable, "-c", _KILLED_SWEEP, str(home), target, attribute], cwd=REPO,
                           env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=120)
    assert child.returncode == -signal.SIGKILL, child.stderr[-2000:]
    instance = repo_instance(home)
    try:
        left = _leftovers(home, instance)["runs"]
        assert _expected_left(runs) < left < set(runs["vectors"] + runs["plan"])  # killed half-way
        pruned = prune_runs(instance, now=datetime.now(UTC) + LATER, check_keys=CHECK_KEYS)
        assert pruned.deleted == len(left) - 6
        assert _leftovers(home, instance)["runs"] == _expected_left(runs)
        assert _statuses(instance) == before
        _assert_nothing_of_deleted_runs_left(home, instance)
    finally:
        instance.dispose()


def test_the_runs_still_read_include_each_partitions_latest_beyond_the_assets_last(instance: dg.DagsterInstance,
                                                                                  keep_two: None) -> None:
    runs = _history(instance)
    read = runs_still_read(instance, check_keys=CHECK_KEYS)
    assert runs["plan"][0] in read  # day 1's only materialization, not among the plan's last 2
    assert runs["plan"][5] in read  # day 9's failed attempt
    assert runs["plan"][1] not in read and runs["vectors"][0] not in read


def test_the_sensor_sweeps_on_the_deployments_clock(instance: dg.DagsterInstance, tmp_path: Path,
                                                    keep_two: None) -> None:
    """The sensor of the Definitions ``dagster dev`` loads, on the resource's clock (pinned a month ahead)."""
    from notify_assets.definitions import build_definitions
    from notify_core.settings import NotifySettings
    from notify_resources import NotifyResource

    runs = _history(instance)
    defs = build_definitions(NotifySettings(data_dir=tmp_path / "data"))
    sensor = defs.resolve_sensor_def("run_retention_sensor")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    clock_start = (datetime.now(UTC) + LATER).isoformat()
    resource = NotifyResource(data_dir=str(tmp_path / "data"), clock_start=clock_start)
    with dg.build_sensor_context(instance=instance, resources={"notify": resource},
                                 repository_def=defs.get_repository_def()) as context:
        result = sensor(context)
    assert isinstance(result, dg.SkipReason)
    assert result.skip_message == "6 old run(s) deleted, 6 old run(s) kept as still read"
    # the Definitions' own check keys are not this test's, so its check's latest run is not protected:
    # only what the assets read keeps a run
    assert {r.dagster_run.run_id for r in instance.get_run_records()} == _expected_left(runs)


def test_a_run_within_the_retention_is_kept_whatever_it_holds(instance: dg.DagsterInstance, keep_two: None) -> None:
    runs = _history(instance)
    time.sleep(1.1)  # created timestamps have a second's resolution on SQLite
    cutoff = datetime.now(UTC)
    newer = dg.materialize([vectors], instance=instance).run_id
    prune_runs(instance, now=cutoff + timedelta(days=30), check_keys=CHECK_KEYS)
    left = {r.dagster_run.run_id for r in instance.get_run_records()}
    # newer is younger than 30 days at `now`; vectors' last 2 are now v[4] and newer, so v[3] goes
    assert left == (_expected_left(runs) - {runs["vectors"][3]}) | {newer}


def test_the_pipeline_runs_on_unchanged_after_its_old_runs_went(
        instance: dg.DagsterInstance, dagster_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Notify's ingestion and embedding chain, run three times; the second run deleted (one materialization
    kept an asset: the first run holds the months of purchases it wrote, the third everything else); a
    fourth run then finds what the third did: every data version unchanged, no month of purchases rewritten,
    the landing fingerprints recorded as before. The second run, not pruned, shows the same run to run."""
    from notify_assets.definitions import build_definitions
    from notify_core.settings import load_settings
    from tests.pipeline.test_data_version_after_retry import CHAIN, UPSTREAM, _assets
    from tests.retail_fixture import write_retail

    monkeypatch.setattr(run_retention, "MATERIALIZATIONS_KEPT", 1)
    settings = load_settings(data_dir=tmp_path / "data", source_data=write_retail(tmp_path / "retail.parquet"))
    defs = build_definitions(settings)
    chain = list(_assets(settings, UPSTREAM + CHAIN).values())

    def recorded(run_id: str) -> dict[str, tuple[str | None, Any]]:
        out = {}
        for record in instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records:
            mat = record.asset_materialization
            assert mat is not None
            fingerprint = mat.metadata.get("landing_fingerprint")
            out[f"{mat.asset_key.to_user_string()}/{mat.partition}"] = (
                (mat.tags or {}).get("dagster/data_version"), fingerprint.value if fingerprint else None)
        return out

    first, second, third = (dg.materialize(chain, resources=defs.resources, instance=instance)
                            for _ in range(3))
    assert first.success and second.success and third.success
    months = instance.get_materialized_partitions(dg.AssetKey("purchase_months"))
    assert months and any(key.startswith("purchase_months/") for key in recorded(first.run_id))
    # the demo source's step records no data version of its own: Dagster gives every run a new one
    landing = "online_retail_landing/None"
    assert recorded(second.run_id)[landing] != recorded(third.run_id)[landing]
    pruned = prune_runs(instance, now=datetime.now(UTC) + LATER)
    assert pruned == RunsPruned(deleted=1, kept=2, more=False)
    assert {r.dagster_run.run_id for r in instance.get_run_records()} == {first.run_id, third.run_id}
    _assert_nothing_of_deleted_runs_left(dagster_home, instance)

    fourth = dg.materialize(chain, resources=defs.resources, instance=instance)
    assert fourth.success
    assert {k: v for k, v in recorded(fourth.run_id).items() if k != landing} == {
        k: v for k, v in recorded(third.run_id).items() if k != landing}
    assert not any(key.startswith("purchase_months/") for key in recorded(fourth.run_id))
    assert instance.get_materialized_partitions(dg.AssetKey("purchase_months")) == months


def test_old_runs_go_on_postgres_storage(tmp_path: Path, postgres: EmbeddedPostgres, keep_two: None) -> None:
    """The same sweep on the storage the Helm chart deploys (a real PostgreSQL): no shard files there, the
    rows and the captured logs go the same way."""
    home = _dagster_home(tmp_path, postgres)
    instance = dg.DagsterInstance.from_config(str(home))
    try:
        runs = _history(instance)
        before = _statuses(instance)
        everything = _leftovers(home, instance)
        assert everything["events"] == everything["runs"] == everything["compute_logs"]
        assert everything["checks"] and everything["tags"]
        pruned = prune_runs(instance, now=datetime.now(UTC) + LATER, check_keys=CHECK_KEYS)
        assert pruned == RunsPruned(deleted=6, kept=6, more=False)
        assert _leftovers(home, instance)["runs"] == _expected_left(runs)
        assert _statuses(instance) == before
        _assert_nothing_of_deleted_runs_left(home, instance)
    finally:
        instance.dispose()


def test_a_run_id_that_is_a_path_deletes_no_file_outside(instance: dg.DagsterInstance, dagster_home: Path) -> None:
    """Run ids name the shard file and the captured logs' folder; one given by hand can be anything."""
    outside = dagster_home / "compute_logs" / ".." / "precious"
    outside.mkdir(parents=True)
    (outside / "keep.txt").write_text("x")
    odd = "../precious"
    instance.add_run(dg.DagsterRun(job_name="by_hand", run_id=odd, status=dg.DagsterRunStatus.SUCCESS))
    pruned = prune_runs(instance, now=datetime.now(UTC) + LATER)
    assert pruned.deleted == 1 and instance.get_run_by_id(odd) is None
    assert (outside / "keep.txt").read_text() == "x"

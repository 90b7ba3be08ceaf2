"""The Dagster graph materialised in-process on the hand-checked fixture, the landing sensor, and the graph's
partitions and automation conditions as Dagster sees them."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from notify_assets.automation import AUTOMATION_SENSOR, DELTA, PLAN, deployment_date
from notify_assets.definitions import MAIN_JOB, assets_for, build_definitions, checks_for
from notify_assets.ingestion import PURCHASE_MONTHS
from notify_assets.scheduling import today_partition
from notify_core.repositories import get_entity
from notify_core.settings import load_settings
from notify_core.store import tables
from notify_core.store.sqlite import SqliteStore
from notify_sensors.landing import landing_sensor
from tests.retail_fixture import HEART, write_retail


@pytest.fixture
def settings(tmp_path: Path):
    source = write_retail(tmp_path / "retail.parquet")
    return load_settings(data_dir=tmp_path / "data", source_data=source)


def _materialize(settings, instance):
    defs = build_definitions(settings)
    assets, plan = assets_for(settings)
    return dg.materialize([*assets, *checks_for(plan)], resources=defs.resources, instance=instance,
                          selection=dg.AssetSelection.all() - dg.AssetSelection.assets(PURCHASE_MONTHS),
                          partition_key=today_partition(settings.clock()), raise_on_error=True)


def _metadata(result: dg.ExecuteInProcessResult, asset: str) -> dict:
    for event in result.get_asset_materialization_events():
        mat = event.step_materialization_data.materialization
        if mat.asset_key == dg.AssetKey(asset):
            return {k: v.value for k, v in mat.metadata.items()}
    raise AssertionError(f"{asset} not materialised")


def test_definitions_load(tmp_path: Path) -> None:
    defs = build_definitions(load_settings(data_dir=tmp_path))
    dg.Definitions.validate_loadable(defs)
    main = defs.resolve_job_def(MAIN_JOB)  # raises when the job is missing
    # every asset but the monthly purchase partitions (a run cannot mix them with the daily plan)
    assert set(main.asset_layer.executable_asset_keys) == {
        spec.key for spec in defs.resolve_all_asset_specs()} - {dg.AssetKey("purchase_months")}


def test_graph_materialises_features_that_match_hand_computation(settings) -> None:
    with dg.instance_for_test() as instance:
        first = _materialize(settings, instance)
        assert first.success
        failed = [f"{e.asset_key.to_user_string()}:{e.check_name}" for e in first.get_asset_check_evaluations()
                  if not e.passed]
        assert not failed
        store = SqliteStore(settings.sqlite_path)
        user = get_entity(store, tables.USER_FEATURES, "100")
        assert user["order_count"] == 2
        assert user["total_spend"] == pytest.approx(55.6)
        assert user["avg_order_value"] == pytest.approx(30.3)
        assert user["preferred_hours"] == [9, 14]
        product = get_entity(store, tables.PRODUCT_FEATURES, HEART)
        assert product["units_sold"] == 19 and product["last_sold_date"] == "2011-03-05"
        assert store.table(tables.USER_PRODUCT).get("100", HEART)["order_count"] == 2
        assert _metadata(first, "purchases")["store_inserted"] == 6

        second = _materialize(settings, instance)
        for asset in ("users", "products", "campaigns", "purchases"):
            meta = _metadata(second, asset)
            assert meta["lake_inserted"] == meta["lake_updated"] == meta["store_inserted"] == meta["store_updated"] == 0
        for asset in (tables.USER_FEATURES, tables.PRODUCT_FEATURES, tables.USER_PRODUCT):
            meta = _metadata(second, asset)
            assert meta["store_inserted"] == meta["store_updated"] == 0
        store.close()


def test_landing_sensor_requests_only_datasets_whose_files_changed_since_their_ingestion(settings) -> None:
    defs = build_definitions(settings)
    notify = defs.resources["notify"]
    settings.landing.joinpath("users").mkdir(parents=True)
    (settings.landing / "users" / "a.csv").write_text("user_id,timezone\nu1,UTC\n")
    with dg.instance_for_test() as instance:
        def tick():
            with dg.build_sensor_context(instance=instance, resources={"notify": notify}) as context:
                return landing_sensor(context)

        first = tick()
        [request] = first.run_requests
        assert request.asset_selection == [dg.AssetKey("users")]
        assert tick().run_requests[0].run_key == request.run_key  # same files, same key: Dagster runs it once
        users = next(a for a in assets_for(settings)[0] if a.key == dg.AssetKey("users"))
        assert dg.materialize([users], resources=defs.resources, instance=instance).success
        assert not tick().run_requests  # ingested as it is: nothing to do, with or without a cursor
        (settings.landing / "users" / "b.csv").write_text("user_id,timezone\nu2,UTC\n")
        [again] = tick().run_requests
        assert again.asset_selection == [dg.AssetKey("users")] and again.run_key != request.run_key


def test_asset_graph_partitions_and_automation(settings, tmp_path) -> None:
    """What the UI shows: purchases' monthly partitions, the plan's daily partitions from the deployment
    day (not a fixed date), and an automation condition on every step from the features to the plan."""
    defs = build_definitions(settings)
    graph = defs.resolve_asset_graph()
    months = graph.get(dg.AssetKey(PURCHASE_MONTHS)).partitions_def
    assert isinstance(months, dg.MonthlyPartitionsDefinition)
    assert "2011-01" in months.get_partition_keys() and graph.get(dg.AssetKey(PURCHASE_MONTHS)).parent_keys == {
        dg.AssetKey("purchases")}
    plan = graph.get(dg.AssetKey("notification_plan"))
    assert isinstance(plan.partitions_def, dg.DailyPartitionsDefinition)
    first_day = deployment_date(settings)
    assert plan.partitions_def.get_first_partition_window().start.date() == first_day
    assert deployment_date(settings) == first_day  # recorded once, kept
    assert plan.automation_condition == PLAN
    for key in ("user_features", "product_features", "user_product", "product_embeddings", "purchase_embeddings",
                "user_embeddings", "campaign_embeddings", "campaign_index"):
        assert graph.get(dg.AssetKey(key)).automation_condition == DELTA, key
    for key in ("users", "products", "campaigns", "purchases", "online_retail_landing", "delivery_run"):
        assert graph.get(dg.AssetKey(key)).automation_condition is None, key  # the landing sensor / the worker
    for check in ("daily_cap", "quiet_hours", "minute_capacity", "reaches_users"):  # each result's partition
        node = graph.get(dg.AssetCheckKey(dg.AssetKey("notification_plan"), check))
        assert node.partitions_def == plan.partitions_def, check
    freshness = {k.name for k in graph.asset_check_keys}
    assert {"todays_plan_exists", "not_older_than_its_campaigns"} <= freshness
    sensors = {s.name: s for s in defs.sensors}
    assert sensors[AUTOMATION_SENSOR].default_status == dg.DefaultSensorStatus.RUNNING
    assert sensors["landing_sensor"].default_status == dg.DefaultSensorStatus.RUNNING
    # the README's "sensors and automation conditions (on by default)": every sensor, not just these two
    assert {n: s.default_status for n, s in sensors.items() if s.default_status != dg.DefaultSensorStatus.RUNNING} \
        == {}
    assert not any(name.startswith("replan_on") for name in sensors)  # the automation re-plans; no duplicate
    main = defs.resolve_job_def(MAIN_JOB)
    assert main.partitions_def == plan.partitions_def
    pinned = load_settings(data_dir=tmp_path / "other", plan_start_date=first_day.replace(day=1))
    assert deployment_date(pinned) == first_day.replace(day=1)


def test_workspace_yaml_loads_with_the_dagster_cli(tmp_path) -> None:
    """What `dagster dev -w workspace.yaml` loads: the real loader path, not just the Python object."""
    import os
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[2]
    dagster = Path(sys.executable).with_name("dagster")
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path), "NOTIFY_DATA_DIR": str(tmp_path / "data")}
    done = subprocess.run([str(dagster), "definitions", "validate", "-w", "workspace.yaml"], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "All code locations passed validation" in done.stdout + done.stderr

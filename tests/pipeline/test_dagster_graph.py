"""The Dagster graph materialised in-process on the hand-checked fixture, plus the landing sensor."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from notify_assets.definitions import ASSETS, CHECKS, MAIN_JOB, build_definitions
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
    return dg.materialize([*ASSETS, *CHECKS], resources=defs.resources, instance=instance,
                          raise_on_error=True)


def _metadata(result: dg.ExecuteInProcessResult, asset: str) -> dict:
    for event in result.get_asset_materialization_events():
        mat = event.step_materialization_data.materialization
        if mat.asset_key == dg.AssetKey(asset):
            return {k: v.value for k, v in mat.metadata.items()}
    raise AssertionError(f"{asset} not materialised")


def test_definitions_load() -> None:
    defs = build_definitions(load_settings(data_dir=Path("/tmp/notify-defs-test")))
    dg.Definitions.validate_loadable(defs)
    main = defs.resolve_job_def(MAIN_JOB)  # raises when the job is missing
    assert set(main.asset_layer.executable_asset_keys) == {spec.key for spec in defs.resolve_all_asset_specs()}


def test_graph_materialises_features_that_match_hand_computation(settings) -> None:
    with dg.instance_for_test() as instance:
        first = _materialize(settings, instance)
        assert first.success
        assert all(e.passed for e in first.get_asset_check_evaluations())
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


def test_landing_sensor_requests_a_run_only_when_files_change(settings) -> None:
    defs = build_definitions(settings)
    notify = defs.resources["notify"]
    settings.landing.joinpath("users").mkdir(parents=True)
    (settings.landing / "users" / "a.csv").write_text("user_id,timezone\nu1,UTC\n")
    with dg.build_sensor_context(cursor=None, resources={"notify": notify}) as context:
        first = landing_sensor(context)
    assert len(first.run_requests) == 1
    with dg.build_sensor_context(cursor=first.cursor, resources={"notify": notify}) as context:
        unchanged = landing_sensor(context)
    assert not unchanged.run_requests
    (settings.landing / "users" / "b.csv").write_text("user_id,timezone\nu2,UTC\n")
    with dg.build_sensor_context(cursor=first.cursor, resources={"notify": notify}) as context:
        changed = landing_sensor(context)
    assert len(changed.run_requests) == 1 and changed.cursor != first.cursor


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

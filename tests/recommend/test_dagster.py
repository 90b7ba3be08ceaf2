"""Dagster: the campaign_index asset and its recall check, and the publishing sensor."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
import polars as pl
import pytest

from notify_assets.recommendation import campaign_index
from notify_core.embeddings.embedder import HashingEmbedder
from notify_core.embeddings.store import CAMPAIGN, USER, save_state, state_schema, vector_series
from notify_core.embeddings.texts import campaign_texts
from notify_core.lake import Lake
from notify_core.recommend.artefacts import LocalArtefactStore
from notify_core.recommend.index import current_version, load_version, read_manifest
from notify_core.schemas import PURCHASES
from notify_core.settings import NotifySettings
from notify_resources.resources import NotifyResource, RecommendResource
from notify_sensors.recommendation import campaign_index_publisher
from tests.recommend.conftest import DIM, campaign_rows

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def _state(entity: str, ids: list[str], vectors: np.ndarray[Any, Any]) -> pl.DataFrame:
    schema = state_schema(entity, DIM)
    return pl.DataFrame({"id": ids, "content_hash": [f"h{i}" for i in ids], "model": ["hashing"] * len(ids),
                         "updated_at": [T0] * len(ids)}).with_columns(vector_series(vectors)).select(
        list(schema)).cast(schema)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A lake with 60 campaign vectors, 40 user vectors and a few purchases (popularity)."""
    lake = Lake(NotifySettings(data_dir=tmp_path).lake_root)
    campaigns = campaign_rows()
    lake.merge("campaigns", campaigns)
    vectors = HashingEmbedder(dim=DIM).embed(campaign_texts(campaigns)["text"].to_list())
    save_state(lake, CAMPAIGN, _state(CAMPAIGN, campaigns["campaign_id"].to_list(), vectors))
    users = np.random.default_rng(0).standard_normal((40, DIM)).astype(np.float32)
    save_state(lake, USER, _state(USER, [f"u{i}" for i in range(40)], users / np.linalg.norm(users, axis=1)[:, None]))
    purchases = pl.DataFrame([{"order_id": f"o{i}", "user_id": f"u{i % 7}", "product_id": f"p{i % 3:03d}",
                               "quantity": 1, "unit_price": 1.0, "ts": datetime(2011, 11, 1, tzinfo=UTC),
                               "country": "United Kingdom", "is_return": False} for i in range(20)], schema=PURCHASES)
    lake.merge("purchases", purchases)
    return tmp_path


def _materialize(data_dir: Path, **options: Any) -> dg.ExecuteInProcessResult:
    return dg.materialize([campaign_index], resources={"notify": NotifyResource(data_dir=str(data_dir)),
                                                       "recommend": RecommendResource(**options)},
                          raise_on_error=False)


def evaluate_sensor(data_dir: Path) -> Any:
    with dg.build_sensor_context(resources={"notify": NotifyResource(data_dir=str(data_dir))}) as context:
        return campaign_index_publisher(context)


def test_materialise_builds_a_version_with_passing_recall_and_publishes(data_dir: Path) -> None:
    result = _materialize(data_dir)
    assert result.success
    [check] = result.get_asset_check_evaluations()
    assert check.passed and check.check_name == "recall_at_10"
    meta = result.asset_materializations_for_node("campaign_index")[0].metadata
    assert meta["rows"].value == 60 and meta["recall_at_10"].value >= 0.99 and meta["published"].value is True
    artefacts = LocalArtefactStore(data_dir / "artefacts")
    version = current_version(artefacts)
    assert version == meta["version"].value
    loaded = load_version(artefacts, version)
    assert loaded.index.size == 60 and loaded.popular["*"][0][0] in {"c000", "c001", "c002"}
    assert [loaded.table.ids[r] for r in loaded.table.products["p001"]] == ["c001"]


def test_an_unchanged_rerun_reuses_the_version_and_a_changed_campaign_builds_a_new_one(data_dir: Path) -> None:
    def version_of(result: dg.ExecuteInProcessResult) -> tuple[str, bool]:
        meta = result.asset_materializations_for_node("campaign_index")[0].metadata
        return str(meta["version"].value), bool(meta["reused"].value)

    first, reused = version_of(_materialize(data_dir))
    assert not reused
    again = _materialize(data_dir)
    assert version_of(again) == (first, True) and again.get_asset_check_evaluations()[0].passed
    lake = Lake(NotifySettings(data_dir=data_dir).lake_root)
    lake.merge("campaigns", campaign_rows().filter(pl.col("campaign_id") == "c005").with_columns(
        pl.lit("paused").alias("status")))
    changed, reused = version_of(_materialize(data_dir))
    assert changed != first and not reused
    assert load_version(LocalArtefactStore(data_dir / "artefacts"), changed).table.active.sum() == 59


def test_a_failed_recall_check_is_never_published_and_serving_keeps_the_last_good(data_dir: Path) -> None:
    good = _materialize(data_dir)
    artefacts = LocalArtefactStore(data_dir / "artefacts")
    served = current_version(artefacts)
    bad = _materialize(data_dir, min_recall=1.01)  # impossible bar: the blocking check fails
    [check] = bad.get_asset_check_evaluations()
    assert good.success and not check.passed
    assert current_version(artefacts) == served
    bad_version = bad.asset_materializations_for_node("campaign_index")[0].metadata["version"].value
    manifest = read_manifest(artefacts, str(bad_version))
    assert manifest is not None and manifest.recall_passed is False
    evaluate_sensor(data_dir)
    assert current_version(artefacts) == served  # the sensor does not publish it either


def test_the_sensor_publishes_the_newest_passing_build(data_dir: Path) -> None:
    artefacts = LocalArtefactStore(data_dir / "artefacts")
    first = evaluate_sensor(data_dir)
    assert first.skip_reason is not None and current_version(artefacts) is None  # nothing built yet
    result = _materialize(data_dir, publish_on_build=False)
    assert current_version(artefacts) is None
    evaluate_sensor(data_dir)
    version = result.asset_materializations_for_node("campaign_index")[0].metadata["version"].value
    assert current_version(artefacts) == version
    again = evaluate_sensor(data_dir)
    assert "nothing newer" in str(again.skip_reason)


def test_definitions_load_with_the_recommendation_stage(tmp_path: Path) -> None:
    from notify_assets.definitions import build_definitions

    defs = build_definitions(NotifySettings(data_dir=tmp_path))
    graph = defs.resolve_asset_graph()
    assert graph.get(dg.AssetKey("campaign_index")).parent_keys == {dg.AssetKey("campaign_embeddings")}
    assert dg.AssetKey("campaign_index") in graph.get(dg.AssetKey("notification_plan")).parent_keys
    assert defs.resolve_sensor_def("campaign_index_publisher").name == "campaign_index_publisher"


def test_a_month_of_daily_builds_keeps_a_week_of_index_versions(data_dir: Path) -> None:
    """Every build is a new version folder (campaigns and purchases change the side tables daily). Before
    session 40 none was ever removed: the artefacts grew by one index a day for as long as Notify ran. Now
    the asset removes superseded versions a week old beyond the last few; the served one, and any newer one,
    always stay."""
    lake = Lake(NotifySettings(data_dir=data_dir).lake_root)
    artefacts = LocalArtefactStore(data_dir / "artefacts")
    days = 20
    built = []
    for day in range(days):
        lake.merge("campaigns", campaign_rows().filter(pl.col("campaign_id") == f"c{day:03d}").with_columns(
            pl.lit("paused").alias("status")))
        at = datetime(2024, 1, 1, 9, tzinfo=UTC) + timedelta(hours=25 * day)  # no build on a 7-day boundary
        result = dg.materialize([campaign_index], resources={
            "notify": NotifyResource(data_dir=str(data_dir), clock_start=at.isoformat()),
            "recommend": RecommendResource()})
        built.append(str(result.asset_materializations_for_node("campaign_index")[0].metadata["version"].value))
    assert len(set(built)) == days and current_version(artefacts) == built[-1]
    kept = artefacts.list_dirs("campaign_index")
    assert kept == built[-7:]  # the served version and the six built in the week before it
    assert load_version(artefacts, built[-1]).table.active.sum() == 60 - days
    assert load_version(artefacts, built[-7:][0]) is not None  # a week-old one still opens (a rollback)

"""Data versions of the feature tables and the campaign index follow content, not "did this attempt write".

The same lost update as ``test_data_version_after_retry`` (ingestion, embeddings), in the two other steps
that write and then record: ``feature_tables`` converges the Store and replaces the lake tables, then dies
before Dagster records the materialisations; ``campaign_index`` saves and publishes a new version, then
dies. The re-run finds nothing to write (the features are equal to the lake's, the published version is
reused) and used to re-record the OLD data version, so ``data_version_changed`` never carried the change
downstream. Each now records a content digest (metadata ``content_digest``); an unchanged re-run still
records the same version.
"""

# No `from __future__ import annotations`: Dagster reads asset context annotations at decoration time.

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
import polars as pl
import pytest

import notify_assets.features as feature_assets
import notify_assets.recommendation as recommendation
from notify_assets.definitions import assets_for, build_definitions
from notify_core.embeddings.embedder import HashingEmbedder
from notify_core.embeddings.store import CAMPAIGN, USER, save_state, state_schema, vector_series
from notify_core.embeddings.texts import campaign_texts
from notify_core.lake import Lake
from notify_core.recommend.artefacts import LocalArtefactStore
from notify_core.recommend.index import current_version
from notify_core.schemas import PURCHASES
from notify_core.settings import NotifySettings, load_settings
from notify_core.store import tables
from notify_resources.resources import NotifyResource, RecommendResource
from tests.pipeline.test_data_version_after_retry import UPSTREAM, _latest, _version
from tests.recommend.conftest import DIM, campaign_rows
from tests.retail_fixture import write_retail

FEATURES = (tables.USER_FEATURES, tables.PRODUCT_FEATURES, tables.USER_PRODUCT)


def _fail_once_after(monkeypatch: pytest.MonkeyPatch, module: Any, name: str) -> dict[str, int]:
    """``module.name`` runs (its writes commit), then raises the first time: the step dies before Dagster
    records the materialisation."""
    real = getattr(module, name)
    calls = {"n": 0}

    def flaky(*args: Any, **kwargs: Any) -> Any:
        result = real(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 1:
            raise OSError("connection reset after the write")
        return result

    monkeypatch.setattr(module, name, flaky)
    return calls


def test_feature_tables_written_by_a_failed_attempt_get_a_new_data_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = load_settings(data_dir=tmp_path / "data", source_data=write_retail(tmp_path / "retail.parquet"))
    defs = build_definitions(settings)
    assets, _ = assets_for(settings)
    by = {a.key.to_user_string(): a for a in assets if len(a.keys) == 1}
    features = next(a for a in assets if dg.AssetKey(tables.USER_FEATURES) in a.keys)
    with dg.instance_for_test() as instance:
        assert dg.materialize([*(by[n] for n in UPSTREAM), features], resources=defs.resources,
                              instance=instance).success
        before = {n: _version(instance, n) for n in FEATURES}

        # a new batch of orders lands (new order ids): every feature table changes
        landed = pl.read_parquet(settings.landing / "purchases" / "online_retail.parquet")
        landed.with_columns(pl.col("order_id") + "-new").write_parquet(settings.landing / "purchases" / "b2.parquet")
        assert dg.materialize([by["purchases"]], resources=defs.resources, instance=instance).success

        calls = _fail_once_after(monkeypatch, feature_assets, "refresh_features")
        failed = dg.materialize([features], resources=defs.resources, instance=instance, raise_on_error=False)
        assert not failed.success and calls["n"] == 1  # Store and lake written, nothing recorded
        assert all(_version(instance, n) == before[n] for n in FEATURES)

        assert dg.materialize([features], resources=defs.resources, instance=instance).success
        after = {n: _version(instance, n) for n in FEATURES}
        for name in FEATURES:
            mat = _latest(instance, name)
            assert mat.metadata["lake_rewritten"].value is False  # the re-run found nothing to write ...
            assert after[name] != before[name]  # ... and still records a new data version

        assert dg.materialize([features], resources=defs.resources, instance=instance).success
        assert {n: _version(instance, n) for n in FEATURES} == after  # an unchanged re-run keeps it


def _index_lake(data_dir: Path) -> Lake:
    """60 campaign vectors, 40 user vectors and a few purchases (as ``tests/recommend/test_dagster.py``)."""
    lake = Lake(NotifySettings(data_dir=data_dir).lake_root)
    campaigns = campaign_rows()
    lake.merge("campaigns", campaigns)
    t0 = datetime(2024, 1, 1, tzinfo=UTC)

    def state(entity: str, ids: list[str], vectors: np.ndarray[Any, Any]) -> pl.DataFrame:
        schema = state_schema(entity, DIM)
        return pl.DataFrame({"id": ids, "content_hash": [f"h{i}" for i in ids], "model": ["hashing"] * len(ids),
                             "updated_at": [t0] * len(ids)}).with_columns(vector_series(vectors)).select(
            list(schema)).cast(schema)

    vectors = HashingEmbedder(dim=DIM).embed(campaign_texts(campaigns)["text"].to_list())
    save_state(lake, CAMPAIGN, state(CAMPAIGN, campaigns["campaign_id"].to_list(), vectors))
    users = np.random.default_rng(0).standard_normal((40, DIM)).astype(np.float32)
    save_state(lake, USER, state(USER, [f"u{i}" for i in range(40)], users / np.linalg.norm(users, axis=1)[:, None]))
    lake.merge("purchases", pl.DataFrame(
        [{"order_id": f"o{i}", "user_id": f"u{i % 7}", "product_id": f"p{i % 3:03d}", "quantity": 1,
          "unit_price": 1.0, "ts": datetime(2011, 11, 1, tzinfo=UTC), "country": "United Kingdom",
          "is_return": False} for i in range(20)], schema=PURCHASES))
    return lake


def test_an_index_version_published_by_a_failed_attempt_gets_a_new_data_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lake = _index_lake(tmp_path)
    resources = {"notify": NotifyResource(data_dir=str(tmp_path)), "recommend": RecommendResource()}
    artefacts = LocalArtefactStore(tmp_path / "artefacts")

    def run() -> dg.ExecuteInProcessResult:
        return dg.materialize([recommendation.campaign_index], resources=resources, instance=instance,
                              raise_on_error=False)

    with dg.instance_for_test() as instance:
        assert run().success
        before = _version(instance, "campaign_index")
        first = current_version(artefacts)

        # a campaign is paused: the next build is a new version
        lake.merge("campaigns", campaign_rows().filter(pl.col("campaign_id") == "c005").with_columns(
            pl.lit("paused").alias("status")))
        calls = _fail_once_after(monkeypatch, recommendation, "publish")
        assert not run().success and calls["n"] == 1  # saved and published, nothing recorded
        built = current_version(artefacts)
        assert built != first and _version(instance, "campaign_index") == before

        assert run().success
        mat = _latest(instance, "campaign_index")
        assert mat.metadata["reused"].value is True and mat.metadata["version"].value == built  # nothing rebuilt ...
        after = _version(instance, "campaign_index")
        assert after != before  # ... and still a new data version: the plan follows the new index

        assert run().success
        assert _version(instance, "campaign_index") == after  # an unchanged re-run keeps it


def test_a_failed_recall_build_keeps_the_index_data_version(tmp_path: Path) -> None:
    _index_lake(tmp_path)
    notify = NotifyResource(data_dir=str(tmp_path))
    with dg.instance_for_test() as instance:
        def run(**options: Any) -> dg.ExecuteInProcessResult:
            return dg.materialize([recommendation.campaign_index], instance=instance, raise_on_error=False,
                                  resources={"notify": notify, "recommend": RecommendResource(**options)})

        assert run().success
        good = _version(instance, "campaign_index")
        run(min_recall=1.01)  # an impossible bar: a version that is never published
        assert _version(instance, "campaign_index") == good
        assert run().success
        assert _version(instance, "campaign_index") == good  # the published version reused: unchanged

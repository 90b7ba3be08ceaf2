"""Data versions follow content, not "did this attempt write anything".

A step that commits its data and then fails before Dagster records the materialisation (ingestion: the
lake commit, then the quarantine push to S3 raises and the RetryPolicy retries; embeddings: the vectors
are persisted, then the Store round-trip read raises) is retried or re-run, finds nothing to write, and
used to re-record the OLD data version: the automation conditions (``data_version_changed``) then never
took the change downstream. Each materialisation now records a content digest (metadata
``content_digest``) and a new data version is issued whenever it differs from the last recorded one; an
unchanged re-run still records the same version.
"""

# No `from __future__ import annotations`: Dagster reads the test asset's context annotation at decoration time.

from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl
import pytest

import notify_assets.ingestion as ingestion
import notify_core.embeddings.pipeline as pipeline
from notify_assets import automation
from notify_assets.definitions import assets_for, build_definitions
from notify_core.landing import LocalLandingArea
from notify_core.scheduling.replan_users import changed_users
from notify_core.settings import NotifySettings, load_settings
from notify_core.store.factory import build_store
from notify_resources.resources import EmbedderResource
from tests.retail_fixture import write_retail

UPSTREAM = ("online_retail_landing", "users", "products", "campaigns", "purchases")
CHAIN = ("product_embeddings", "purchase_embeddings", "user_embeddings")


def _latest(instance: dg.DagsterInstance, asset: str) -> dg.AssetMaterialization:
    mat = instance.fetch_materializations(dg.AssetKey(asset), limit=1).records[0].asset_materialization
    assert mat is not None
    return mat


def _version(instance: dg.DagsterInstance, asset: str) -> str:
    return (_latest(instance, asset).tags or {})["dagster/data_version"]


@pytest.fixture
def settings(tmp_path: Path) -> NotifySettings:
    return load_settings(data_dir=tmp_path / "data", source_data=write_retail(tmp_path / "retail.parquet"))


def _assets(settings: NotifySettings, names: tuple[str, ...]) -> dict[str, dg.AssetsDefinition]:
    assets, _ = assets_for(settings)
    return {a.key.to_user_string(): a for a in assets if len(a.keys) == 1 and a.key.to_user_string() in names}


def _month_events(instance: dg.DagsterInstance, after: int) -> list[str]:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(ingestion.PURCHASE_MONTHS), after_storage_id=after),
        limit=100).records
    return sorted(str(r.asset_materialization.partition) for r in records if r.asset_materialization is not None)


def _last_storage_id(instance: dg.DagsterInstance, asset: str) -> int:
    return instance.fetch_materializations(dg.AssetKey(asset), limit=1).records[0].storage_id


def test_a_retried_ingest_after_a_post_commit_failure_records_a_new_data_version(
    settings: NotifySettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    defs = build_definitions(settings)
    by = _assets(settings, UPSTREAM)
    with dg.instance_for_test() as instance:
        assert dg.materialize(list(by.values()), resources=defs.resources, instance=instance).success
        before = _version(instance, "purchases")
        since = _last_storage_id(instance, ingestion.PURCHASE_MONTHS)

        # a new batch of orders lands (same months as the first one, new order ids)
        landed = pl.read_parquet(settings.landing / "purchases" / "online_retail.parquet")
        batch = landed.with_columns(pl.col("order_id") + "-new")
        batch.write_parquet(settings.landing / "purchases" / "batch2.parquet")
        months = sorted(set(batch["ts"].dt.strftime("%Y-%m").to_list()))

        calls = {"n": 0}

        class FlakyPush(LocalLandingArea):  # aws: the quarantine folder's S3 PutObject fails once
            def push(self, *, quarantine: bool = False) -> list[Any]:
                if quarantine:
                    calls["n"] += 1
                    if calls["n"] == 1:
                        raise OSError("S3 PutObject: 503 SlowDown")
                return []

        monkeypatch.setattr(ingestion, "build_landing_area",
                            lambda s: FlakyPush(landing=s.landing, quarantine=s.quarantine_root))
        result = dg.materialize([by["purchases"]], resources=defs.resources, instance=instance,
                                raise_on_error=False)
        assert result.success and calls["n"] == 2  # the first attempt committed the lake, then failed; retried
        mat = _latest(instance, "purchases")
        assert mat.metadata["lake_inserted"].value == 0  # the retry found nothing left to write ...
        after = _version(instance, "purchases")
        assert after != before  # ... and still records a new data version: DELTA takes the orders downstream
        assert _month_events(instance, since) == months  # and the months the failed attempt rewrote

        # an unchanged re-run keeps the version and records no month
        since = _last_storage_id(instance, ingestion.PURCHASE_MONTHS)
        assert dg.materialize([by["purchases"]], resources=defs.resources, instance=instance).success
        assert _version(instance, "purchases") == after and _month_events(instance, since) == []


def _flaky_round_trip(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """The Store round-trip read (after the vectors are persisted) raises once: DynamoDB throttling."""
    real = pipeline.round_trip_check
    calls = {"n": 0}

    def flaky(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise OSError("Store read throttled")
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline, "round_trip_check", flaky)
    return calls


def _rename_first_product(settings: NotifySettings) -> None:
    path = settings.landing / "products" / "online_retail.parquet"
    frame = pl.read_parquet(path)
    frame.with_columns(pl.when(pl.int_range(pl.len()) == 0).then(pl.lit("A BRAND NEW DESCRIPTION"))
                       .otherwise(pl.col("description")).alias("description")).write_parquet(path)


def test_a_rerun_after_vectors_were_persisted_then_the_step_failed_records_a_new_data_version(
    settings: NotifySettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    resources = {**(build_definitions(settings).resources or {}), "embedder": EmbedderResource(kind="hashing")}
    names = (*UPSTREAM, "product_embeddings")
    by = _assets(settings, names)
    with dg.instance_for_test() as instance:
        assert dg.materialize([by[n] for n in names], resources=resources, instance=instance).success
        before = _version(instance, "product_embeddings")

        _rename_first_product(settings)
        assert dg.materialize([by["products"]], resources=resources, instance=instance).success
        _flaky_round_trip(monkeypatch)
        failed = dg.materialize([by["product_embeddings"]], resources=resources, instance=instance,
                                raise_on_error=False)
        assert not failed.success  # the changed vector is persisted, the materialisation is not recorded

        assert dg.materialize([by["product_embeddings"]], resources=resources, instance=instance).success
        assert _latest(instance, "product_embeddings").metadata["embedded"].value == 0  # nothing left to embed
        after = _version(instance, "product_embeddings")
        assert after != before  # but the vectors differ from the recorded ones: a new data version

        assert dg.materialize([by["product_embeddings"]], resources=resources, instance=instance).success
        assert _version(instance, "product_embeddings") == after  # unchanged re-run: same version


def test_user_vectors_persisted_by_a_failed_attempt_get_a_new_version_and_replan_everyone(
    settings: NotifySettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    resources = {**(build_definitions(settings).resources or {}), "embedder": EmbedderResource(kind="hashing")}
    names = (*UPSTREAM, *CHAIN)
    by = _assets(settings, names)
    with dg.instance_for_test() as instance:
        assert dg.materialize([by[n] for n in names], resources=resources, instance=instance).success
        before = _version(instance, "user_embeddings")

        _rename_first_product(settings)  # its orders, hence their buyers' vectors, change
        assert dg.materialize([by[n] for n in ("products", "product_embeddings", "purchase_embeddings")],
                              resources=resources, instance=instance).success
        _flaky_round_trip(monkeypatch)
        assert not dg.materialize([by["user_embeddings"]], resources=resources, instance=instance,
                                  raise_on_error=False).success

        assert dg.materialize([by["user_embeddings"]], resources=resources, instance=instance).success
        mat = _latest(instance, "user_embeddings")
        assert mat.metadata["embedded"].value == 0
        after = _version(instance, "user_embeddings")
        assert after != before
        # the users the failed attempt changed are unknown: name nobody, so the re-plan covers every user
        assert automation.CHANGED_USERS not in mat.metadata

        assert dg.materialize([by["user_embeddings"]], resources=resources, instance=instance).success
        mat = _latest(instance, "user_embeddings")
        assert _version(instance, "user_embeddings") == after
        assert mat.metadata[automation.CHANGED_USERS].value == 0  # started from the recorded vectors: exact
        store = build_store(settings)
        try:
            assert changed_users(store, str(mat.metadata[automation.CHANGED_USERS_SET].value), count=0) == []
        finally:
            store.close()


DIGESTS: dict[str, str] = {}  # the content digest each partition of ``parted`` reports (none: no digest)
WRITTEN: set[str] = set()  # the partitions whose next run writes something (``changed=True``)
PARTS = dg.StaticPartitionsDefinition(["a", "b"])


@dg.asset(partitions_def=PARTS)
def parted(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    digest = DIGESTS.get(context.partition_key)
    extra: dict[str, Any] = {"digest": digest} if digest is not None else {}
    version = automation.data_version(context, "parted", changed=context.partition_key in WRITTEN, **extra)
    return dg.MaterializeResult(metadata={"content_digest": digest or "none"}, data_version=version)


def test_a_partitioned_asset_compares_with_its_own_partition() -> None:
    with dg.instance_for_test() as instance:
        def run(partition: str) -> str:
            assert dg.materialize([parted], instance=instance, partition_key=partition).success
            return _version_of(instance, partition)

        DIGESTS.clear()
        WRITTEN.clear()
        first_a, first_b = run("a"), run("b")
        assert first_b != first_a  # b's own content, not a version copied from a
        WRITTEN.add("a")
        second_a = run("a")
        WRITTEN.clear()
        assert second_a != first_a
        assert run("b") == first_b  # unchanged: b's own previous version, not a's (the asset's latest)
        DIGESTS["a"] = "d1"
        third_a = run("a")
        assert third_a not in (first_a, second_a)  # a digest a never recorded: new content, though nothing written
        assert run("b") == first_b and run("a") == third_a  # b untouched; a unchanged since


def _version_of(instance: dg.DagsterInstance, partition: str) -> str:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("parted"), asset_partitions=[partition]), limit=1).records
    mat = records[0].asset_materialization
    assert mat is not None
    return (mat.tags or {})["dagster/data_version"]

"""Dagster tests of the embedding assets on a sample of the real data, with the real MiniLM model.

They pin the delta contract with exact counts (first run embeds all, second 0, an increment exactly
what it touches), failure isolation between the campaign asset and the user chain, and blocking checks
that keep bad vectors out of the Store.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
import pytest

import notify_assets.embeddings as embedding_assets
from notify_assets.embeddings import (
    EMBEDDING_ASSETS,
    campaign_embeddings,
    product_embeddings,
    purchase_embeddings,
    user_embeddings,
)
from notify_core.embeddings.embedder import Embedder, HashingEmbedder, Progress, Vectors
from notify_core.embeddings.store import CAMPAIGN, USER, load_embeddings
from notify_core.lake import Lake
from notify_core.store.sqlite import SqliteStore
from notify_resources.resources import EmbedderResource, NotifyResource

NAMES = ("product_embeddings", "purchase_embeddings", "user_embeddings", "campaign_embeddings")


def _resources(data_dir: Path, embedder: EmbedderResource | None = None) -> dict[str, Any]:
    return {"notify": NotifyResource(data_dir=str(data_dir)), "embedder": embedder or EmbedderResource()}


def _run(data_dir: Path, *, embedder: EmbedderResource | None = None, assets: list[Any] | None = None,
         raise_on_error: bool = True) -> dg.ExecuteInProcessResult:
    return dg.materialize(assets or EMBEDDING_ASSETS, resources=_resources(data_dir, embedder),
                          raise_on_error=raise_on_error)


def _counts(result: dg.ExecuteInProcessResult, key: str = "embedded") -> dict[str, int]:
    out = {}
    for name in NAMES:
        mats = result.asset_materializations_for_node(name)
        if mats:
            out[name] = int(mats[0].metadata[key].value)  # type: ignore[arg-type]
    return out


def _checks(result: dg.ExecuteInProcessResult) -> dict[str, bool]:
    return {f"{e.asset_key.to_user_string()}:{e.check_name}": e.passed for e in result.get_asset_check_evaluations()}


def test_first_run_embeds_all_second_none_increment_exactly_what_changed(
    sample_lake: Lake, data_dir: Path, small_sample: Any, make_increment: Callable[..., Any],
) -> None:
    first = _run(data_dir)
    expected = {"product_embeddings": small_sample.products.height, "purchase_embeddings": small_sample.expected_orders,
                "user_embeddings": small_sample.buyers, "campaign_embeddings": small_sample.campaigns.height}
    assert _counts(first) == expected
    assert _counts(first, "rows") == expected
    assert all(_checks(first).values()) and len(_checks(first)) == 20

    second = _run(data_dir)
    assert _counts(second) == dict.fromkeys(NAMES, 0)
    assert _counts(second, "skipped") == expected
    assert all(_checks(second).values())

    increment = make_increment()
    sample_lake.merge("products", increment.products)
    sample_lake.merge("purchases", increment.purchases)
    third = _run(data_dir)
    assert _counts(third) == {"product_embeddings": 10, "purchase_embeddings": 25, "user_embeddings": 20,
                              "campaign_embeddings": 0}
    assert len(increment.orders) == 25 and len(increment.users) == 20
    purchases_meta = third.asset_materializations_for_node("purchase_embeddings")[0].metadata
    assert purchases_meta["partitions_read"].value == 1  # only the newest month was read
    assert _counts(third, "rows")["purchase_embeddings"] == small_sample.expected_orders + 25
    assert all(_checks(third).values())

    store = SqliteStore(data_dir / "store.sqlite")
    users = load_embeddings(store, USER, increment.users)
    assert len(users) == 20 and all(v.vector.shape == (384,) for v in users.values())
    assert all(v.model.startswith("sentence-transformers/all-MiniLM-L6-v2@") for v in users.values())
    store.close()


def test_model_change_re_embeds_everything(sample_lake: Lake, data_dir: Path, small_sample: Any) -> None:
    _run(data_dir, embedder=EmbedderResource(kind="hashing"))
    again = _run(data_dir, embedder=EmbedderResource(kind="hashing"))
    assert set(_counts(again).values()) == {0}
    switched = _run(data_dir)  # the real model
    assert _counts(switched)["product_embeddings"] == small_sample.products.height
    assert _counts(switched)["user_embeddings"] == small_sample.buyers
    assert _counts(switched)["campaign_embeddings"] == small_sample.campaigns.height


def test_campaign_failure_leaves_user_chain_materialised_and_green(
    sample_lake: Lake, data_dir: Path, monkeypatch: pytest.MonkeyPatch, make_increment: Callable[..., Any],
) -> None:
    _run(data_dir)
    store = SqliteStore(data_dir / "store.sqlite")
    before = {k: v.vector for k, v in load_embeddings(store, CAMPAIGN, ["cat-bags-storage"]).items()}

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("injected campaign embedding failure")

    monkeypatch.setattr(embedding_assets, "refresh_campaign_embeddings", broken)
    increment = make_increment()
    sample_lake.merge("products", increment.products)
    sample_lake.merge("purchases", increment.purchases)
    result = _run(data_dir, raise_on_error=False)
    assert not result.success
    assert _counts(result) == {"product_embeddings": 10, "purchase_embeddings": 25, "user_embeddings": 20}
    checks = _checks(result)
    assert [k for k in checks if k.startswith("user_embeddings:")] and all(checks.values())
    assert not result.asset_materializations_for_node("campaign_embeddings")
    after = {k: v.vector for k, v in load_embeddings(store, CAMPAIGN, ["cat-bags-storage"]).items()}
    assert before.keys() == after.keys() and all(np.array_equal(before[k], after[k]) for k in before)
    store.close()


def test_product_failure_skips_the_user_chain_but_not_campaigns(
    sample_lake: Lake, data_dir: Path, monkeypatch: pytest.MonkeyPatch, small_sample: Any,
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("injected product embedding failure")

    monkeypatch.setattr(embedding_assets, "refresh_product_embeddings", broken)
    result = _run(data_dir, embedder=EmbedderResource(kind="hashing"), raise_on_error=False)
    assert _counts(result) == {"campaign_embeddings": small_sample.campaigns.height}
    assert all(_checks(result).values()) and all(k.startswith("campaign_embeddings:") for k in _checks(result))


class _NaNEmbedder(HashingEmbedder):
    def embed(self, texts: Any, *, batch_size: int = 64, progress: Progress | None = None) -> Vectors:
        out = super().embed(texts, batch_size=batch_size, progress=progress)
        out[len(out) // 2, 0] = np.nan
        return out


class _NaNEmbedderResource(EmbedderResource):
    def build(self) -> Embedder:
        return _NaNEmbedder()


def test_failing_blocking_check_persists_nothing_and_stops_downstream(sample_lake: Lake, data_dir: Path) -> None:
    result = _run(data_dir, embedder=_NaNEmbedderResource(), raise_on_error=False,
                  assets=[product_embeddings, purchase_embeddings, user_embeddings, campaign_embeddings])
    checks = _checks(result)
    assert checks["product_embeddings:no_nan"] is False and checks["campaign_embeddings:no_nan"] is False
    assert checks["product_embeddings:store_round_trip"] is False
    assert not result.asset_materializations_for_node("purchase_embeddings")  # blocked by the failed check
    assert result.asset_materializations_for_node("product_embeddings")[0].metadata["persisted"].value is False
    store = SqliteStore(data_dir / "store.sqlite")
    assert list(store.table("embeddings").scan()) == []
    store.close()

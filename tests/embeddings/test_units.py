"""Unit tests of the embedding domain: hashing, deltas, combinations, checks (HashingEmbedder only)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from notify_core.embeddings.checks import CHECK_NAMES, round_trip_check, vector_checks
from notify_core.embeddings.combine import Interactions, order_vectors, user_vectors
from notify_core.embeddings.delta import content_hash, diff, order_hashes, text_hashes, user_hashes
from notify_core.embeddings.embedder import HashingEmbedder, normalise
from notify_core.embeddings.store import ORDER, PRODUCT, load_embeddings, persist, vector_series
from notify_core.embeddings.texts import campaign_texts, product_texts
from notify_core.store.sqlite import SqliteStore

T0 = datetime(2011, 6, 1, tzinfo=UTC)


def _lines(rows: list[tuple[str, str | None, str, int, bool, datetime]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema={"order_id": pl.String, "user_id": pl.String, "product_id": pl.String,
                                      "quantity": pl.Int64, "is_return": pl.Boolean,
                                      "ts": pl.Datetime("us", "UTC")}, orient="row")


# embedder -------------------------------------------------------------------------------------------
def test_hashing_embedder_is_deterministic_unit_and_batch_independent() -> None:
    texts = ["red retrospot bag", "blue lantern", "", "red retrospot bag"]
    calls: list[tuple[int, int]] = []
    a = HashingEmbedder().embed(texts, batch_size=1, progress=lambda d, t: calls.append((d, t)))
    b = HashingEmbedder().embed(texts, batch_size=64)
    assert a.shape == (4, 384) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-6)
    np.testing.assert_array_equal(a[0], a[3])
    assert calls[-1] == (4, 4) and len(calls) == 4
    assert HashingEmbedder().embed([], batch_size=8).shape == (0, 384)


def test_normalise_keeps_zero_rows_zero() -> None:
    out = normalise(np.array([[3.0, 4.0], [0.0, 0.0]]))
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 0.0]])


# texts ---------------------------------------------------------------------------------------------
def test_product_text_uses_price_band_not_price() -> None:
    products = pl.DataFrame({"product_id": ["a", "b", "c"], "description": ["RED BAG ", "RED BAG", "RED BAG"],
                             "category": ["bags", "bags", "bags"], "unit_price": [2.10, 2.15, 12.0]})
    texts = product_texts(products)["text"].to_list()
    assert texts[0] == texts[1] == "red bag. category: bags. low price."
    assert texts[2] == "red bag. category: bags. premium."


def test_campaign_text_includes_targeting_but_not_status() -> None:
    base = {"campaign_id": "c", "name": "Deal", "text": "Save now.", "category": "bags"}
    frame = pl.DataFrame([{**base, "target_countries": ["Germany", "France"], "status": "active"},
                          {**base, "target_countries": [], "status": "paused"}])
    texts = campaign_texts(frame)["text"].to_list()
    assert texts[0].endswith("for customers in France, Germany.")
    assert texts[1].endswith("for everyone.")


# hashes and delta ------------------------------------------------------------------------------------
def test_content_hash_is_stable_and_separates_parts() -> None:
    assert content_hash("a", "b") == content_hash("a", "b")
    assert content_hash("ab", "") != content_hash("a", "b")
    assert len(content_hash("x")) == 32


def test_text_hash_includes_model_id() -> None:
    texts = pl.DataFrame({"product_id": ["p"], "text": ["red bag"]})
    assert (text_hashes(texts, id_column="product_id", model_id="m1")["content_hash"].item()
            != text_hashes(texts, id_column="product_id", model_id="m2")["content_hash"].item())


def test_diff_splits_new_changed_unchanged_removed() -> None:
    current = pl.DataFrame({"id": ["a", "b", "c"], "content_hash": ["1", "2", "3"]})
    stored = pl.DataFrame({"id": ["b", "c", "d"], "content_hash": ["2", "x", "4"]})
    delta = diff(current, stored)
    assert (delta.to_embed, delta.unchanged, delta.removed) == (["a", "c"], ["b"], ["d"])
    assert diff(current, current).is_empty


def test_order_hash_follows_product_hashes_and_ignores_returns() -> None:
    lines = _lines([("o1", "u1", "p1", 2, False, T0), ("o1", "u1", "p2", 1, False, T0),
                    ("o2", "u1", "p2", 1, False, T0), ("C3", "u1", "p1", -2, True, T0)])
    hashes = pl.DataFrame({"id": ["p1", "p2"], "content_hash": ["h1", "h2"]})
    first = order_hashes(lines, hashes)
    assert first["id"].to_list() == ["o1", "o2"]  # the return-only order has no vector
    changed = order_hashes(lines, hashes.with_columns(pl.when(pl.col("id") == "p1").then(pl.lit("new"))
                                                      .otherwise("content_hash").alias("content_hash")))
    assert changed.filter(pl.col("id") == "o1")["content_hash"].item() != first["content_hash"][0]
    assert changed.filter(pl.col("id") == "o2")["content_hash"].item() == first["content_hash"][1]
    assert first.filter(pl.col("id") == "o1")["product_ids"].item().to_list() == ["p1", "p2"]


def test_user_hash_changes_only_for_the_user_whose_orders_changed() -> None:
    orders = pl.DataFrame({"id": ["o1", "o2", "o3"], "user_id": ["u1", "u2", None], "content_hash": ["a", "b", "c"]})
    before = user_hashes(orders)
    after = user_hashes(pl.concat([orders, pl.DataFrame({"id": ["o4"], "user_id": ["u1"], "content_hash": ["d"]})]))
    assert before["id"].to_list() == ["u1", "u2"]  # guests have no user vector
    delta = diff(after, before)
    assert delta.to_embed == ["u1"] and delta.unchanged == ["u2"]
    digests = pl.DataFrame({"user_id": ["u2"], "digest": ["clicks-1"]})
    assert diff(user_hashes(orders, interaction_digests=digests), before).to_embed == ["u2"]


# combinations ---------------------------------------------------------------------------------------------
def test_order_vector_is_log1p_quantity_weighted_and_excludes_returns() -> None:
    products = normalise(np.random.default_rng(1).standard_normal((3, 8)))
    lines = _lines([("o1", "u", "p0", 1, False, T0), ("o1", "u", "p1", 9, False, T0),
                    ("o1", "u", "p2", 5, True, T0), ("o2", "u", "p2", 3, False, T0), ("o3", "u", "px", 3, False, T0)])
    combined = order_vectors(lines, product_ids=["p0", "p1", "p2"], product_vectors=products)
    assert combined.ids == ["o1", "o2"]  # o3's only product is unknown
    expected = normalise((np.log1p(1) * products[0] + np.log1p(9) * products[1])[None, :])[0]
    np.testing.assert_allclose(combined.vectors[0], expected, atol=1e-6)
    np.testing.assert_allclose(combined.vectors[1], products[2], atol=1e-6)


@settings(max_examples=25, deadline=None)
@given(shift=st.integers(min_value=0, max_value=2000))
def test_user_vector_does_not_depend_on_a_common_time_shift(shift: int) -> None:
    """Why users need no as-of in their hash: renormalisation cancels any common recency factor."""
    vecs = normalise(np.random.default_rng(2).standard_normal((3, 16)))
    orders = pl.DataFrame({"user_id": ["u", "u", "v"], "ts": [T0, T0 + timedelta(days=40), T0]})
    moved = orders.with_columns(pl.col("ts") + timedelta(days=shift))
    a, b = user_vectors(orders, vecs), user_vectors(moved, vecs)
    assert a.ids == b.ids == ["u", "v"]
    np.testing.assert_allclose(a.vectors, b.vectors, atol=1e-5)


def test_user_vector_weights_recent_orders_more() -> None:
    vecs = normalise(np.eye(2, 4))
    orders = pl.DataFrame({"user_id": ["u", "u"], "ts": [T0, T0 + timedelta(days=90)]})
    out = user_vectors(orders, vecs, half_life_days=90).vectors[0]
    np.testing.assert_allclose(out[:2] / np.linalg.norm(out[:2]), normalise(np.array([[0.5, 1.0]]))[0], atol=1e-6)


def test_interactions_fold_into_user_vectors() -> None:
    vecs = normalise(np.eye(2, 4))
    orders = pl.DataFrame({"user_id": ["u"], "ts": [T0]})
    clicks = Interactions(pl.DataFrame({"user_id": ["u"], "ts": [T0], "weight": [1.0]}), vecs[1:2])
    plain = user_vectors(orders, vecs[:1]).vectors[0]
    folded = user_vectors(orders, vecs[:1], interactions=clicks).vectors[0]
    assert plain[1] == 0 and folded[1] > 0.5
    np.testing.assert_allclose(np.linalg.norm(folded), 1.0, atol=1e-6)


# checks and the Store ------------------------------------------------------------------------------------
def test_vector_checks_pass_on_good_vectors_and_name_each_failure() -> None:
    vecs = HashingEmbedder(dim=8).embed(["a", "b", "c"])
    good = vector_checks(["a", "b", "c"], vecs, dim=8, expected_ids=["a", "b", "c"])
    assert [c.name for c in good] == list(CHECK_NAMES[:4]) and all(c.passed for c in good)
    bad = vecs.copy()
    bad[0, 0] = np.nan
    bad[1] *= 2
    result = {c.name: c for c in vector_checks(["a", "b", "c"], bad, dim=8, expected_ids=["a", "b", "d"])}
    assert not result["no_nan"].passed and result["no_nan"].metadata["examples"] == "a"
    assert not result["unit_norm"].passed and "b" in result["unit_norm"].metadata["examples"]
    assert not result["one_vector_per_entity"].passed and result["one_vector_per_entity"].metadata["missing"] == 1
    assert result["dimension"].passed
    assert not vector_checks(["a"], vecs[:1], dim=16, expected_ids=["a"])[0].passed


def test_store_round_trip_and_model_filter(tmp_path: object) -> None:
    store = SqliteStore(f"{tmp_path}/s.sqlite")
    vecs = HashingEmbedder().embed(["x", "y"])
    rows = pl.DataFrame({"id": ["a", "b"], "content_hash": ["1", "2"], "model": ["m", "m"],
                         "updated_at": [T0, T0]}).with_columns(vector_series(vecs))
    assert persist(store, PRODUCT, rows) == 2
    loaded = load_embeddings(store, PRODUCT, ["a", "b", "zz"])
    np.testing.assert_array_equal(loaded["a"].vector, vecs[0])
    assert loaded["b"].model == "m" and loaded["b"].content_hash == "2"
    assert load_embeddings(store, PRODUCT, ["a"], model="other") == {}
    assert load_embeddings(store, ORDER, ["a"]) == {}  # entity types never collide
    assert round_trip_check(store, PRODUCT, ["a", "b"], vecs, model="m").passed
    assert not round_trip_check(store, PRODUCT, ["a", "b"], vecs[::-1], model="m").passed
    persist(store, PRODUCT, rows.head(0), removed=["a"])
    assert set(load_embeddings(store, PRODUCT, ["a", "b"])) == {"b"}
    store.close()


@pytest.mark.dynamodb
def test_store_round_trip_on_dynamodb(dynamodb_endpoint: str) -> None:
    import uuid

    import boto3

    from notify_core.store.dynamodb import DynamoStore

    session = boto3.Session(aws_access_key_id="local", aws_secret_access_key="local", region_name="us-east-1")
    prefix = f"emb_{uuid.uuid4().hex[:10]}_"
    store = DynamoStore(region="us-east-1", endpoint_url=dynamodb_endpoint, table_prefix=prefix, session=session)
    try:
        vecs = HashingEmbedder().embed([f"text {i}" for i in range(130)])  # > one batch_get page (100)
        ids = [f"p{i}" for i in range(130)]
        rows = pl.DataFrame({"id": ids, "content_hash": ids, "model": ["m"] * 130,
                             "updated_at": [T0] * 130}).with_columns(vector_series(vecs))
        persist(store, PRODUCT, rows)
        check = round_trip_check(store, PRODUCT, ids, vecs, model="m")
        assert check.passed, check.metadata
        persist(store, PRODUCT, rows.head(0), removed=ids[:5])
        assert len(load_embeddings(store, PRODUCT, ids)) == 125
    finally:
        for name in store.client.list_tables(ExclusiveStartTableName=prefix, Limit=100)["TableNames"]:
            if name.startswith(prefix):
                store.client.delete_table(TableName=name)
        store.close()

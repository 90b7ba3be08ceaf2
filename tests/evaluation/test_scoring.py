"""The shared pure scoring agrees with serving's formula, scalar or vectorised."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import sparse

from notify_core.recommend import scoring
from notify_core.recommend.recommender import ScoreWeights


@pytest.mark.parametrize("orders", [0, 1, 2, 4, 5, 9, 50])
def test_repeat_affinity_is_servings(orders: int) -> None:
    expected = 0.0 if orders <= 0 else min(1.0, math.log1p(orders) / math.log1p(ScoreWeights().affinity_saturation))
    assert scoring.repeat_affinity(orders) == pytest.approx(expected)


def test_blend_scalar_equals_serving_formula_and_vectorises() -> None:
    w = ScoreWeights()
    expected = w.similarity * 0.42 + w.affinity * 0.7 + w.priority * (4 - 1) / 4
    assert scoring.blend(similarity=0.42, affinity=0.7, priority=4) == pytest.approx(expected)
    assert scoring.blend(similarity=0.42, affinity=0.7, priority=4, copurchase=0.5) \
        == pytest.approx(expected + w.copurchase * 0.5)
    sims = np.array([[0.42, 0.1], [0.0, -0.2]])
    out = scoring.blend(similarity=sims, affinity=np.array([[0.7, 0.0], [1.0, 0.0]]), priority=np.array([[4, 1]]))
    assert out.shape == (2, 2)
    assert out[0, 0] == pytest.approx(expected)
    assert out[1, 1] == pytest.approx(-0.2)
    # serving's defaults ARE the evaluated weights (what "notify: selected (serving)" measures)
    assert w.blend() == scoring.EVALUATED_WEIGHTS == scoring.SERVING_WEIGHTS
    assert scoring.REPEAT_WEIGHTS.copurchase == 0.0


def test_campaign_max_and_copurchase() -> None:
    # 3 users x 3 products; campaigns: c0 promotes p0+p1, c1 promotes p2, c2 promotes nothing
    incidence = sparse.csr_matrix(np.array([[1, 0, 0], [1, 0, 0], [0, 1, 0]], dtype=float))
    values = np.array([[1.0, 3.0, 2.0]])
    assert scoring.campaign_max(values, incidence).tolist() == [[3.0, 2.0, 0.0]]
    bought = sparse.csr_matrix(np.array([[1, 1, 0], [1, 1, 0], [0, 0, 1]], dtype=float))
    sim = scoring.item_similarity(bought, neighbours=2)
    assert sim.diagonal().tolist() == [0.0, 0.0, 0.0]
    assert sim[0, 1] == pytest.approx(1.0) and sim[0, 2] == 0.0
    co = scoring.copurchase_affinity(sparse.csr_matrix(np.array([[1, 0, 0]], dtype=float)), sim, incidence)
    assert co.tolist() == [[1.0, 0.0, 0.0]]  # p0's buyers also buy p1 (campaign c0), never p2


def test_chunked_item_similarity_equals_one_block() -> None:
    rng = np.random.default_rng(0)
    bought = sparse.csr_matrix((rng.random((200, 300)) < 0.05).astype(float))
    whole = scoring.item_similarity(bought, neighbours=10, chunk=10_000)
    assert abs(scoring.item_similarity(bought, neighbours=10, chunk=37) - whole).max() == 0.0


def test_servings_per_user_copurchase_equals_the_evaluations_matrices() -> None:
    """The per-request functions serving calls (neighbour map, dicts) give the evaluation's matrix values:
    same candidates (top 20), same affinity, user by user."""
    rng = np.random.default_rng(1)
    users, products, campaigns = 60, 80, 40
    orders = sparse.csr_matrix(np.where(rng.random((users, products)) < 0.08, rng.integers(1, 6, (users, products)), 0)
                               .astype(float))
    incidence = sparse.csr_matrix((rng.random((products, campaigns)) < 0.04).astype(float))
    pids = [f"p{i:03d}" for i in range(products)]
    cids = [f"c{i:03d}" for i in range(campaigns)]
    sim = scoring.item_similarity(orders, neighbours=15)
    matrix = scoring.copurchase_affinity(orders, sim, incidence)
    neighbours = scoring.neighbour_map(sim, pids)
    promoting: dict[str, list[str]] = {}
    for p, c in zip(*incidence.nonzero(), strict=True):
        promoting.setdefault(pids[p], []).append(cids[c])
    for u in range(users):
        row = orders.getrow(u)
        mine = {pids[p]: int(v) for p, v in zip(row.indices, row.data, strict=True)}
        served = scoring.copurchase_campaigns(scoring.copurchase_products(mine, neighbours),
                                              lambda pid: promoting.get(pid, ()))
        assert np.allclose([served.get(c, 0.0) for c in cids], matrix[u])
        top = np.argsort(-matrix[u], kind="stable")[:scoring.COPURCHASE_CANDIDATES]
        expected = {cids[i] for i in top if matrix[u, i] > 0}
        assert set(scoring.top_campaigns(served)) == expected
        raw = scoring.campaign_best(scoring.copurchase_product_scores(mine, neighbours)[1],
                                    lambda pid: promoting.get(pid, ()))
        bm25 = scoring.campaign_max(scoring.bm25_scores(row, sim), incidence)[0]  # the evaluation's Signals.bm25
        assert np.allclose([raw.get(c, 0.0) for c in cids], bm25)


def test_the_vectorised_copurchase_rows_equal_the_reference_functions_exactly() -> None:
    """Serving's array path (:func:`scoring.copurchase_campaign_rows` over a :class:`PromotionMatrix`) gives
    bit-identical affinities and raw BM25 bests to :func:`copurchase_campaigns` / :func:`campaign_best`,
    shadowed (excluded) rows and products no campaign promotes included: ranking cannot move."""
    rng = np.random.default_rng(7)
    users, products, campaigns = 80, 120, 70
    orders = sparse.csr_matrix(np.where(rng.random((users, products)) < 0.1, rng.integers(1, 9, (users, products)), 0)
                               .astype(float))
    pids = [f"p{i:03d}" for i in range(products)]
    neighbours = scoring.neighbour_map(scoring.item_similarity(orders, neighbours=20), pids)
    table = scoring.NeighbourMatrix.of(neighbours)
    incidence = rng.random((products, campaigns)) < 0.03
    excluded = {5, 17, 33}  # e.g. shadowed by the overlay: never a candidate
    promoting = {pids[p]: np.asarray([c for c in np.flatnonzero(incidence[p]) if c not in excluded], dtype=np.int64)
                 for p in range(products)}
    promotion = scoring.PromotionMatrix.of(table, lambda pid: promoting.get(pid))
    for u in range(users):
        row = orders.getrow(u)
        mine = {pids[p]: int(v) for p, v in zip(row.indices, row.data, strict=True)}
        mine["unknown-product"] = 3  # bought, but absent from the map: no score, as in the reference
        products_scores, raw_scores = scoring.copurchase_product_scores(mine, table)
        known = [p for p in mine if p in table.index]
        block = table.matrix[[table.index[p] for p in known]]
        weights = np.asarray([mine[p] for p in known], dtype=np.float64)
        for weight, got in ((np.log1p(weights), products_scores), (weights, raw_scores)):
            summed = sparse.csr_matrix(weight[None, :]) @ block  # scipy's sparse product: the reference sums
            expected_sums = {table.ids[c]: v for c, v in zip(summed.indices, summed.data, strict=True) if v != 0}
            assert got == expected_sums  # bit-identical, not approx
        expected = scoring.copurchase_campaigns(products_scores, lambda pid: promoting.get(pid, np.zeros(0)).tolist())
        raw = scoring.campaign_best(raw_scores, lambda pid: promoting.get(pid, np.zeros(0)).tolist())
        rows, values, raws = scoring.copurchase_campaign_rows(mine, table, promotion)
        assert rows.tolist() == sorted(expected)
        assert values.tolist() == [expected[r] for r in sorted(expected)]  # exact, not approx
        assert raws.tolist() == [raw.get(r, 0.0) for r in sorted(expected)]
    assert scoring.copurchase_campaign_rows({}, table, promotion)[0].size == 0


def test_the_promoted_columns_copy_of_the_neighbour_matrix_gives_the_full_matrix_answer_bit_for_bit() -> None:
    """:class:`PromotionMatrix` keeps the neighbour matrix restricted to promoted columns (serving's
    co-purchase sums skip what no campaign promotes): the rows, affinities and raw bests are exactly those
    of the full matrix, for users whose neighbours are all unpromoted, and with products without any
    neighbour (empty CSR rows, the last one included)."""
    from dataclasses import replace

    rng = np.random.default_rng(11)
    products, campaigns = 60, 25
    pids = [f"p{i:02d}" for i in range(products)]
    neighbours = {pids[p]: [(pids[o], float(rng.random())) for o in rng.choice(products, 6, replace=False) if o != p]
                  for p in range(products - 5)}  # the last products: no neighbours of their own
    table = scoring.NeighbourMatrix.of(neighbours)
    promoting = {pids[p]: np.asarray(sorted(rng.choice(campaigns, 2, replace=False)), dtype=np.int64)
                 for p in range(0, products, 3)}  # a third of the products promoted
    promotion = scoring.PromotionMatrix.of(table, lambda pid: promoting.get(pid))
    assert promotion.restricted is not None and promotion.restricted[3] < len(table.ids)
    full = replace(promotion, restricted=None, compact=None)
    answered = 0
    for _ in range(200):
        mine = {pids[p]: int(rng.integers(0, 6)) for p in rng.choice(products, int(rng.integers(1, 8)), replace=False)}
        got = scoring.copurchase_campaign_rows(mine, table, promotion)
        expected = scoring.copurchase_campaign_rows(mine, table, full)
        for a, b in zip(got, expected, strict=True):
            assert a.tolist() == b.tolist()  # exact, not approx
        answered += bool(len(got[0]))
    assert answered > 50


def test_copurchase_rows_from_pre_coded_products_equal_the_mapping_walk_exactly() -> None:
    """Serving codes a user's products once a request and hands :func:`scoring.copurchase_campaign_rows` the
    (neighbour rows, orders) pairs (``ordered=``) instead of the mapping: the same rows, affinities and
    raw bests bit for bit, with unknown products, zero orders and an empty answer among the cases."""
    rng = np.random.default_rng(13)
    products, campaigns = 50, 20
    pids = [f"p{i:02d}" for i in range(products)]
    neighbours = {pids[p]: [(pids[o], float(rng.random())) for o in rng.choice(products, 5, replace=False) if o != p]
                  for p in range(products - 4)}
    table = scoring.NeighbourMatrix.of(neighbours)
    promoting = {pids[p]: np.asarray(sorted(rng.choice(campaigns, 2, replace=False)), dtype=np.int64)
                 for p in range(0, products, 2)}
    promotion = scoring.PromotionMatrix.of(table, lambda pid: promoting.get(pid))
    for case in range(150):
        mine = {pids[p]: int(rng.integers(0, 5)) for p in rng.choice(products, int(rng.integers(0, 9)), replace=False)}
        if case % 3 == 0:
            mine["not-in-the-map"] = 2
        known = [(table.index[p], float(o)) for p, o in mine.items() if o > 0 and p in table.index]
        ordered = (np.asarray([r for r, _ in known], dtype=np.int64), np.asarray([o for _, o in known]))
        got = scoring.copurchase_campaign_rows(mine, table, promotion, ordered=ordered)
        expected = scoring.copurchase_campaign_rows(mine, table, promotion)
        for a, b in zip(got, expected, strict=True):
            assert a.tolist() == b.tolist()  # exact, not approx


def test_ranker_features_are_the_stacked_broadcast_columns_bit_for_bit() -> None:
    """:func:`scoring.ranker_features` writes its columns into one array: the same values, shape and
    C order as stacking the broadcast columns (its former construction), for 1-D, 2-D and scalar inputs,
    so the ranker's matrix product sees the same bits."""

    def stacked(**kw: object) -> np.ndarray:
        orders = np.maximum(np.asarray(kw["campaign_orders"], dtype=np.float64), 0.0)
        days = np.asarray(kw["days_since"], dtype=np.float64)
        recency = np.where(np.isfinite(days), np.exp(-np.maximum(days, 0.0) / scoring.RECENCY_DAYS), 0.0)
        base = np.broadcast_arrays(np.log1p(orders), recency, np.asarray(kw["copurchase"], dtype=np.float64),
                                   np.asarray(kw["similarity"], dtype=np.float64),
                                   np.asarray(kw["popularity"], dtype=np.float64),
                                   np.asarray(scoring.priority_term(kw["priority"]), dtype=np.float64),
                                   np.log1p(np.maximum(np.asarray(kw["bm25"], dtype=np.float64), 0.0)))
        repeat = (base[0] > 0).astype(np.float64)
        return np.stack([*base[:6], repeat, *(repeat * b for b in base[2:6]), base[6], repeat * base[6]], axis=-1)

    rng = np.random.default_rng(3)
    n = 40
    one_d = dict(campaign_orders=rng.integers(0, 4, n).astype(float), days_since=np.where(rng.random(n) < 0.3, np.inf,
                 rng.random(n) * 90), copurchase=rng.random(n), similarity=rng.normal(size=n),
                 popularity=0.0, priority=rng.integers(1, 6, n), bm25=rng.normal(size=n))
    two_d = {k: (np.reshape(v, (5, 8)) if isinstance(v, np.ndarray) else v) for k, v in one_d.items()}
    scalars = dict(campaign_orders=3, days_since=30.0, copurchase=0.5, similarity=-0.0, popularity=0.7, priority=2,
                   bm25=1.5)
    for kw in (one_d, two_d, scalars):
        got, expected = scoring.ranker_features(**kw), stacked(**kw)  # type: ignore[arg-type]
        assert got.shape == expected.shape and got.flags.c_contiguous
        assert got.tobytes() == expected.tobytes()
        ranker = scoring.SERVING_RANKER
        assert scoring.ranker_score(ranker, got).tobytes() == scoring.ranker_score(ranker, expected).tobytes()


def test_bm25_similarity_is_implicits_bm25_recommender_bit_for_bit_without_its_warning() -> None:
    import warnings

    from implicit.nearest_neighbours import BM25Recommender

    counts = sparse.random(400, 300, density=0.05, random_state=2, format="csr")
    counts.data = np.ceil(counts.data * 5)
    reference = BM25Recommender(K=scoring.BM25_NEIGHBOURS, num_threads=1)
    with warnings.catch_warnings(record=True) as theirs:
        warnings.simplefilter("always")
        reference.fit(sparse.csr_matrix(counts, dtype=np.float64), show_progress=False)
    with warnings.catch_warnings(record=True) as ours:
        warnings.simplefilter("always")
        similarity = scoring.bm25_similarity(counts)
    assert [str(w.message)[:28] for w in theirs] == ["Method expects CSR input, an"]  # what ours avoids
    assert ours == []
    expected = sparse.csr_matrix(reference.similarity, dtype=np.float64)
    assert similarity.nnz == expected.nnz > 0
    assert np.array_equal(similarity.indptr, expected.indptr) and np.array_equal(similarity.indices, expected.indices)
    assert np.array_equal(similarity.data, expected.data)

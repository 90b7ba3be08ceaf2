"""The learned ranker's pure functions (shared by serving and the evaluation) and the paired bootstrap."""

from __future__ import annotations

import numpy as np
import pytest

from notify_core.evaluation.bootstrap import paired_bootstrap
from notify_core.recommend import scoring


def test_features_are_computed_the_same_for_one_candidate_or_a_matrix() -> None:
    one = scoring.ranker_features(campaign_orders=3, days_since=30.0, copurchase=0.5, similarity=0.2, popularity=0.7,
                                  priority=5, bm25=2.0)
    assert one.shape == (len(scoring.RANKER_FEATURES),)
    base = [np.log1p(3), np.exp(-1), 0.5, 0.2, 0.7, 1.0]
    # a bought campaign: the repeat flag and its own slopes (repeat_x_*) carry the same values again
    assert one.tolist() == pytest.approx([*base, 1.0, *base[2:], np.log1p(2.0), np.log1p(2.0)])
    new = scoring.ranker_features(campaign_orders=0, days_since=np.inf, copurchase=0.5, similarity=0.2, popularity=0.7,
                                  priority=5, bm25=2.0)
    assert new.tolist() == pytest.approx([0.0, 0.0, *base[2:], 0.0, 0.0, 0.0, 0.0, 0.0, np.log1p(2.0), 0.0])
    never = scoring.ranker_features(campaign_orders=0, days_since=np.inf, copurchase=0, similarity=0, popularity=0,
                                    priority=1, bm25=0.0)
    assert never.tolist() == [0.0] * len(scoring.RANKER_FEATURES)
    matrix = scoring.ranker_features(campaign_orders=np.array([[3.0, 0.0]]), days_since=np.array([[30.0, np.inf]]),
                                     copurchase=np.array([[0.5, 0.0]]), similarity=np.array([[0.2, 0.0]]),
                                     popularity=np.array([[0.7, 0.0]]), priority=np.array([[5, 1]]),
                                     bm25=np.array([[2.0, 0.0]]))
    assert matrix.shape == (1, 2, len(scoring.RANKER_FEATURES))
    assert matrix[0, 0].tolist() == one.tolist() and matrix[0, 1].tolist() == never.tolist()
    ranker = scoring.LinearRanker(coefficients=tuple(range(1, len(scoring.RANKER_FEATURES) + 1)), intercept=0.5)
    assert scoring.ranker_score(ranker, matrix)[0, 0] == pytest.approx(scoring.ranker_score(ranker, one))


def test_logistic_fit_recovers_the_direction_of_each_signal() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4000, 3))
    p = 1 / (1 + np.exp(-(2.0 * x[:, 0] - 1.0 * x[:, 1] + 0.0 * x[:, 2] - 0.5)))
    y = rng.random(4000) < p
    coefficients, intercept = scoring.fit_logistic(x, y, l2=0.0)
    assert coefficients[0] == pytest.approx(2.0, abs=0.25) and coefficients[1] == pytest.approx(-1.0, abs=0.2)
    assert abs(coefficients[2]) < 0.15 and intercept == pytest.approx(-0.5, abs=0.15)
    again = scoring.fit_logistic(x, y, l2=0.0)
    assert again[0].tolist() == coefficients.tolist()  # deterministic


def test_paired_bootstrap_intervals() -> None:
    rng = np.random.default_rng(1)
    a = rng.random(500) < 0.8
    same = paired_bootstrap([a], [a.copy()])
    assert same == {"diff": 0.0, "low": 0.0, "high": 0.0}
    worse = a & (rng.random(500) < 0.8)  # strictly a subset of a's hits
    better = paired_bootstrap([a, a], [worse, worse])
    assert better["low"] > 0 and better["low"] <= better["diff"] <= better["high"]
    with pytest.raises(ValueError):
        paired_bootstrap([a], [a[:10]])


def test_campaign_orders_sum_the_promoted_products_in_serving_and_evaluation_alike() -> None:
    """The ranker's frequency is the user's orders summed over a campaign's products (not the best one's):
    the evaluation's matrix and serving's per-request sum agree on campaigns promoting 1-3 products."""
    from scipy import sparse

    from notify_core.recommend.recommender import _campaign_orders

    rng = np.random.default_rng(7)
    products, campaigns = 40, 25
    incidence = sparse.csr_matrix(rng.random((products, campaigns)) < 0.06, dtype=np.float64)
    orders = sparse.csr_matrix(np.where(rng.random((5, products)) < 0.3, rng.integers(1, 6, (5, products)), 0))
    matrix = scoring.campaign_orders(orders, incidence)
    dense, promotes = orders.toarray(), incidence.toarray() > 0
    assert matrix.tolist() == (dense @ promotes.astype(float)).tolist()
    two = next(c for c in range(campaigns) if (promotes[:, c] & (dense[0] > 0)).sum() >= 2)
    assert matrix[0, two] > max(dense[0, p] for p in range(products) if promotes[p, two])  # a sum, not the max
    for user in range(5):
        # serving's inputs: one entry per (bought product, campaign promoting it), candidates as sorted rows
        pairs = [(c, float(dense[user, p])) for p in range(products) if dense[user, p] for c in range(campaigns)
                 if promotes[p, c]]
        repeat_rows = np.array([c for c, _ in pairs], dtype=np.int64)
        repeat_orders = np.array([o for _, o in pairs], dtype=np.float64)
        rows = np.arange(campaigns, dtype=np.int64)
        assert _campaign_orders(rows, repeat_rows, repeat_orders).tolist() == matrix[user].tolist()
        some = rows[::3]  # a candidate subset: campaigns outside it are ignored, not mis-assigned
        assert _campaign_orders(some, repeat_rows, repeat_orders).tolist() == matrix[user, ::3].tolist()

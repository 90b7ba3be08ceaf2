"""The learned ranker's pure functions (shared by serving and the evaluation) and the paired bootstrap."""

from __future__ import annotations

import numpy as np
import pytest

from notify_core.evaluation.bootstrap import paired_bootstrap
from notify_core.recommend import scoring


def test_features_are_computed_the_same_for_one_candidate_or_a_matrix() -> None:
    one = scoring.ranker_features(best_orders=3, days_since=30.0, copurchase=0.5, similarity=0.2, popularity=0.7,
                                  priority=5, bm25=2.0)
    assert one.shape == (len(scoring.RANKER_FEATURES),)
    base = [np.log1p(3), np.exp(-1), 0.5, 0.2, 0.7, 1.0]
    # a bought campaign: the repeat flag and its own slopes (repeat_x_*) carry the same values again
    assert one.tolist() == pytest.approx([*base, 1.0, *base[2:], np.log1p(2.0), np.log1p(2.0)])
    new = scoring.ranker_features(best_orders=0, days_since=np.inf, copurchase=0.5, similarity=0.2, popularity=0.7,
                                  priority=5, bm25=2.0)
    assert new.tolist() == pytest.approx([0.0, 0.0, *base[2:], 0.0, 0.0, 0.0, 0.0, 0.0, np.log1p(2.0), 0.0])
    never = scoring.ranker_features(best_orders=0, days_since=np.inf, copurchase=0, similarity=0, popularity=0,
                                    priority=1, bm25=0.0)
    assert never.tolist() == [0.0] * len(scoring.RANKER_FEATURES)
    matrix = scoring.ranker_features(best_orders=np.array([[3.0, 0.0]]), days_since=np.array([[30.0, np.inf]]),
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

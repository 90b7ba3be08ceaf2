"""The fourth design's list construction (notify_core/recommend/distinct.py) as the evaluation applies it
(serving's side: tests/recommend/test_distinct_lists.py)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from notify_core.evaluation.metrics import top_k, user_hits
from notify_core.recommend.distinct import distinct_products_order, distinct_products_scores


def test_a_campaign_whose_products_are_all_shown_higher_up_moves_below_the_list() -> None:
    products = {"a": frozenset({"p1", "p2"}), "b": frozenset({"p1"}), "c": frozenset({"p2", "p3"}),
                "d": frozenset({"p3"}), "e": frozenset(), "f": frozenset({"p4"})}
    order = ["a", "b", "c", "d", "e", "f"]
    # b is inside a's products; d inside a + c's; e promotes nothing and is always kept
    assert distinct_products_order(order, products.__getitem__, limit=4) == ["a", "c", "e", "f"]
    # too few distinct ones: the moved campaigns fill the end, in their order
    assert distinct_products_order(order, products.__getitem__, limit=6) == ["a", "c", "e", "f", "b", "d"]
    assert distinct_products_order(order, products.__getitem__, limit=0) == []
    assert distinct_products_order([], products.__getitem__, limit=3) == []


def test_the_score_matrix_version_ranks_like_the_list_and_never_shows_an_unrecommendable_campaign() -> None:
    products = [frozenset({0}), frozenset({0}), frozenset({1}), frozenset({0, 1}), frozenset({2})]
    scores = np.array([[5.0, 4.0, 3.0, 2.0, 1.0],
                       [1.0, 2.0, -np.inf, 4.0, -np.inf],
                       [-np.inf] * 5])
    ranked = top_k(distinct_products_scores(scores, products, limit=3), 5)
    assert ranked[0].tolist() == [0, 2, 4, 1, 3]
    assert ranked[1].tolist() == [3, 1, 0, -1, -1]  # 3 covers 0 and 1: they fill the end; -inf never shown
    assert ranked[2].tolist() == [-1] * 5
    assert np.array_equal(np.isfinite(distinct_products_scores(scores, products, limit=3)), np.isfinite(scores))


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=0, max_value=2**32 - 1))
def test_for_a_fixed_score_order_the_lists_can_only_gain_hits(seed: int) -> None:
    """A hit is a bought product of the campaign; the moved campaign's hit implies one above it."""
    rng = np.random.default_rng(seed)
    users, campaigns, n_products = 30, 25, 12
    products = [frozenset(rng.choice(n_products, size=rng.integers(1, 4), replace=False).tolist())
                for _ in range(campaigns)]
    incidence = np.zeros((n_products, campaigns), dtype=bool)
    for c, ps in enumerate(products):
        incidence[list(ps), c] = True
    bought = rng.random((users, n_products)) < 0.08
    truth = (bought.astype(int) @ incidence.astype(int)) > 0
    scores = np.where(rng.random((users, campaigns)) < 0.1, -np.inf, rng.random((users, campaigns)))
    for k in (1, 5, 10):
        plain = user_hits(top_k(scores, k), truth, k)
        distinct = user_hits(top_k(distinct_products_scores(scores, products, limit=k), k), truth, k)
        assert (distinct >= plain).all()


"""Ranking metrics against values computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from notify_core.evaluation.metrics import coverage, hit_rate, ndcg, top_k

NEG = -np.inf
# 2 users x 4 campaigns
SCORES = np.array([[0.9, 0.1, 0.5, NEG],
                   [0.2, 0.2, 0.8, 0.1]])
TRUTH = np.array([[False, True, False, True],
                  [True, False, False, False]])


def test_top_k_orders_by_score_then_column_and_marks_unrecommendable() -> None:
    ranked = top_k(SCORES, 4)
    assert ranked.tolist() == [[0, 2, 1, -1], [2, 0, 1, 3]]  # the 0.2 tie: column 0 before column 1


@pytest.mark.parametrize(("k", "expected"), [(1, 0.0), (2, 0.5), (3, 1.0)])
def test_hit_rate(k: int, expected: float) -> None:
    # user 0's hit (column 1) is at rank 3, user 1's (column 0) at rank 2
    assert hit_rate(top_k(SCORES, 4), TRUTH, k) == pytest.approx(expected)


def test_ndcg_binary_relevance() -> None:
    ranked = top_k(SCORES, 4)
    # user 0: hit at rank 3 -> 1/log2(4) = 0.5; 2 relevant -> ideal 1 + 1/log2(3); column 3 is -inf (never ranked)
    user0 = 0.5 / (1 + 1 / math.log2(3))
    user1 = 1 / math.log2(3)  # hit at rank 2, 1 relevant -> ideal 1
    assert ndcg(ranked, TRUTH, 3) == pytest.approx((user0 + user1) / 2)
    assert ndcg(ranked, TRUTH, 1) == 0.0


def test_ndcg_is_one_for_a_perfect_ranking_and_zero_without_relevance() -> None:
    truth = np.array([[True, True, False]])
    ranked = top_k(np.array([[0.9, 0.8, 0.1]]), 2)
    assert ndcg(ranked, truth, 2) == pytest.approx(1.0)
    assert ndcg(ranked, np.zeros((1, 3), bool), 2) == 0.0


def test_coverage_counts_distinct_recommended_campaigns() -> None:
    assert coverage(top_k(SCORES, 1), 4) == pytest.approx(2 / 4)  # columns 0 and 2
    assert coverage(top_k(SCORES, 4), 4) == pytest.approx(1.0)
    assert coverage(np.full((2, 2), -1), 4) == 0.0


def test_empty_inputs() -> None:
    empty = np.zeros((0, 3), dtype=np.int64)
    assert hit_rate(empty, np.zeros((0, 3), bool), 10) == 0.0
    assert ndcg(empty, np.zeros((0, 3), bool), 10) == 0.0
    with pytest.raises(ValueError):
        top_k(SCORES, 0)

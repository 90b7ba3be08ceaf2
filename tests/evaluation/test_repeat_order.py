"""The fifth design's repeat order (notify_core/recommend/repeat_order.py), shared by serving and the evaluation."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from notify_core.evaluation.rolling import DEVELOPMENT_CUTOFFS, HELD_OUT_CUTOFF, ROLLING_CUTOFFS
from notify_core.recommend.repeat_order import repeats_in_frequency_order


def test_bought_places_are_refilled_most_ordered_first() -> None:
    # columns: 0 new, 1 bought x1, 2 bought x5, 3 not a candidate (bought x9), 4 new, 5 bought x2
    score = np.array([0.9, 0.8, 0.1, -np.inf, 0.5, 0.3])
    orders = np.array([0.0, 1.0, 5.0, 9.0, 0.0, 2.0])
    out = repeats_in_frequency_order(score, orders)
    # the bought places (.8, .3, .1) go to x5, x2, x1; new items and the non-candidate stay put
    assert out.tolist() == [0.9, 0.1, 0.8, -np.inf, 0.5, 0.3]
    assert score.tolist() == [0.9, 0.8, 0.1, -np.inf, 0.5, 0.3]  # the input is not modified


def test_equal_orders_keep_the_ranker_order_and_rows_are_independent() -> None:
    score = np.array([[0.2, 0.7, 0.5], [0.1, 0.2, 0.3]])
    orders = np.array([[3.0, 3.0, 1.0], [0.0, 0.0, 0.0]])
    out = repeats_in_frequency_order(score, orders)
    assert out[0].tolist() == [0.5, 0.7, 0.2]  # the two x3 keep their order (.7 before .2), x1 last
    assert out[1].tolist() == [0.1, 0.2, 0.3]  # nothing bought: unchanged


def test_shapes_must_match() -> None:
    with pytest.raises(ValueError, match="differ in shape"):
        repeats_in_frequency_order(np.zeros(3), np.zeros(4))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([-np.inf, 0.0, 0.5, 1.0, 2.5, 3.0, -1.0]),
                          st.integers(min_value=0, max_value=4)), min_size=1, max_size=30))
def test_property_scores_are_a_permutation_within_bought_and_monotone(pairs: list[tuple[float, int]]) -> None:
    score = np.array([p[0] for p in pairs])
    orders = np.array([float(p[1]) for p in pairs])
    out = repeats_in_frequency_order(score, orders)
    moved = (orders > 0) & np.isfinite(score)
    assert np.array_equal(out[~moved], score[~moved])  # new items and -inf never move
    assert sorted(out[moved].tolist()) == sorted(score[moved].tolist())  # the same places
    bought = np.flatnonzero(moved)
    for i in bought:
        for j in bought:
            if orders[i] > orders[j]:
                assert out[i] >= out[j]  # more summed orders never ranks below fewer


def test_every_development_window_ends_by_the_first_rolling_cut_off() -> None:
    """Nothing at or after the first rolling cut-off may inform a design choice: the development windows the
    reports name (60 days from each development cut-off) all end by it, and none is a scored cut-off."""
    assert len(DEVELOPMENT_CUTOFFS) == 5
    for cutoff in DEVELOPMENT_CUTOFFS:
        assert cutoff + timedelta(days=60) <= ROLLING_CUTOFFS[0] < HELD_OUT_CUTOFF

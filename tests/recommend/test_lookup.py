"""The ranking's row lookups: the sorted-keys fast path answers exactly what the general one does."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from notify_core.recommend.recommender import _best_rows, _lookup_sorted, _scatter_lookup


def _lookup(rows: np.ndarray, keys: np.ndarray, values: np.ndarray, *, default: float) -> np.ndarray:
    """The reference: ``values`` of ``keys`` at ``rows`` (both sorted or not), ``default`` where absent, by a
    stable argsort of the keys (a repeated key keeps its first value). Serving's fast paths must equal it."""
    out = np.full(len(rows), default, dtype=np.float64)
    if len(keys):
        order = np.argsort(keys, kind="stable")
        sorted_keys = keys[order]
        at = np.minimum(np.searchsorted(sorted_keys, rows), len(sorted_keys) - 1)
        hit = sorted_keys[at] == rows
        out[hit] = np.asarray(values, dtype=np.float64)[order[at[hit]]]
    return out


@settings(max_examples=200, deadline=None)
@given(keys=st.sets(st.integers(0, 400), max_size=120), rows=st.sets(st.integers(0, 400), max_size=150),
       default=st.sampled_from([0.0, float("nan")]), seed=st.integers(0, 2**32 - 1))
def test_lookup_sorted_equals_lookup(keys: set[int], rows: set[int], default: float, seed: int) -> None:
    sorted_keys = np.array(sorted(keys), dtype=np.int64)
    values = np.random.default_rng(seed).random(len(sorted_keys))
    wanted = np.array(sorted(rows), dtype=np.int64)
    expected = _lookup(wanted, sorted_keys, values, default=default)
    got = _lookup_sorted(wanted, sorted_keys, values, default=default)
    np.testing.assert_array_equal(got, expected)  # NaN == NaN here; every value bit-identical


@settings(max_examples=200, deadline=None)
@given(keys=st.lists(st.integers(0, 400), max_size=150), rows=st.sets(st.integers(0, 400), max_size=200),
       seed=st.integers(0, 2**32 - 1))
def test_scatter_lookup_equals_lookup_for_unsorted_keys(keys: list[int], rows: set[int], seed: int) -> None:
    """The ANN similarities are looked up by scattering the (unsorted, best-first) keys into the sorted
    candidate rows: the same values as the sorting lookup, a repeated key keeping its first value."""
    unsorted = np.array(keys, dtype=np.int64)
    values = np.random.default_rng(seed).random(len(unsorted)).astype(np.float32)
    wanted = np.array(sorted(rows), dtype=np.int64)
    expected = _lookup(wanted, unsorted, values, default=float("nan"))
    got = _scatter_lookup(wanted, unsorted, values, default=float("nan"))
    np.testing.assert_array_equal(got, expected)


@settings(max_examples=300, deadline=None)
@given(n=st.integers(0, 300), k=st.integers(0, 120), distinct=st.integers(1, 40), seed=st.integers(0, 2**32 - 1))
def test_best_rows_equal_the_full_lexsort_with_ties(n: int, k: int, distinct: int, seed: int) -> None:
    """The co-purchase candidates: the best ``k`` rows by value then campaign-id rank, found by sorting only
    the rows tied with or above the k-th best value, are exactly the full lexsort's first ``k``, in order
    (few distinct values make many ties at the boundary)."""
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(1000, size=n, replace=False)).astype(np.int64)
    values = rng.integers(1, distinct + 1, size=n) / distinct
    rank = rng.permutation(1000).astype(np.int64)
    expected = rows[np.lexsort((rank[rows], -values))[:k]]
    assert _best_rows(rows, values, rank, k).tolist() == expected.tolist()

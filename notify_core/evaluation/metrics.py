"""Ranking metrics over a users x campaigns score matrix, binary relevance, vectorised.

Conventions (the tests compute each by hand):

* A ranking is the campaigns sorted by descending score, ties broken by campaign column (lower first),
  so the same scores always give the same list. ``-inf`` marks "not recommendable" (not a candidate,
  filtered): such campaigns are never in a top-k, so a list may be shorter than k.
* HR@k: share of users with at least one relevant campaign in their top k.
* NDCG@k: DCG = sum over the top k of rel / log2(rank + 1) (rank from 1), divided by the ideal DCG
  of min(k, relevant) ones. Users without any relevant campaign are excluded by the caller.
* Coverage: distinct campaigns appearing in any top k / catalogue size.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
Bool2D = npt.NDArray[np.bool_]


def top_k(scores: F64, k: int) -> I64:
    """Column indices of each row's k best scores, best first; -1 where fewer than k are finite.

    Stable sort on the negated scores gives the lower column first on ties (deterministic).
    """
    if k < 1:
        raise ValueError("k must be >= 1")
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    finite = np.isfinite(np.take_along_axis(scores, order, axis=1))
    return np.where(finite, order, -1).astype(np.int64)


def _hits(ranked: I64, truth: Bool2D) -> Bool2D:
    safe = np.where(ranked >= 0, ranked, 0)
    return np.take_along_axis(truth, safe, axis=1) & (ranked >= 0)


def user_hits(ranked: I64, truth: Bool2D, k: int) -> Bool2D:
    """Per row: a relevant column among the first k ranked columns (what :func:`hit_rate` averages)."""
    return np.asarray(_hits(ranked[:, :k], truth).any(axis=1), dtype=np.bool_)


def hit_rate(ranked: I64, truth: Bool2D, k: int) -> float:
    """Share of rows with a relevant column among their first k ranked columns."""
    if ranked.shape[0] == 0:
        return 0.0
    return float(_hits(ranked[:, :k], truth).any(axis=1).mean())


def ndcg(ranked: I64, truth: Bool2D, k: int) -> float:
    """Mean NDCG@k with binary relevance (rows with no relevant column count 0)."""
    if ranked.shape[0] == 0:
        return 0.0
    hits = _hits(ranked[:, :k], truth).astype(np.float64)
    discounts = 1.0 / np.log2(np.arange(2, hits.shape[1] + 2, dtype=np.float64))
    dcg = hits @ discounts
    ideal_count = np.minimum(truth.sum(axis=1), k)
    ideal = np.concatenate([[0.0], np.cumsum(1.0 / np.log2(np.arange(2, k + 2, dtype=np.float64)))])[ideal_count]
    return float(np.where(ideal > 0, dcg / np.where(ideal > 0, ideal, 1.0), 0.0).mean())


def coverage(ranked: I64, catalogue: int) -> float:
    """Distinct columns recommended to anyone / catalogue size."""
    if catalogue <= 0:
        return 0.0
    return float(np.unique(ranked[ranked >= 0]).size / catalogue)

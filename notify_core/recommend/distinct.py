"""Distinct products in a list: the fourth design's list construction (issue 17), shared by serving and the
evaluation.

A campaign is a hit for a user when the user buys ANY of its promoted products, and several campaigns of
the catalogue promote the same products (on the shipped data about 390 ordered pairs of campaigns have
one's products inside the other's). Two such campaigns in one top 10 are one chance shown twice: if the
first is not bought, the second cannot be either. :func:`distinct_products_order` therefore moves a
campaign whose promoted products are all promoted by campaigns already above it in the list below the
list, and lets the next one up. The rule has no weight or threshold to tune, and for a fixed score order
it can only raise HR@k: the moved campaign's hit implies a hit above it, and its place goes to one that
may add a new one. It was chosen on the development windows only (docs/recommendation-quality.md, Phase 4).

Serving (:meth:`notify_core.recommend.recommender.Recommender._top`) walks its candidates in score order
through :func:`distinct_products_order`; the evaluation applies :func:`distinct_products_scores` to a
users x campaigns score matrix, which calls the same function row by row.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import TypeVar

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
Ref = TypeVar("Ref", int, str)


def distinct_products_order(ranked: Iterable[Ref], products_of: Callable[[Ref], frozenset[Hashable]], *,
                            limit: int) -> list[Ref]:
    """The first ``limit`` of ``ranked`` (best first), a campaign whose products are all promoted by
    campaigns kept above it skipped; skipped ones fill the end, in their order, only when too few remain.

    A campaign promoting nothing is always kept (there is nothing to be redundant with).
    """
    kept: list[Ref] = []
    skipped: list[Ref] = []
    covered: set[Hashable] = set()
    if limit <= 0:
        return kept
    for ref in ranked:
        products = products_of(ref)
        if products and products <= covered:
            skipped.append(ref)
            continue
        covered |= products
        kept.append(ref)
        if len(kept) >= limit:
            return kept
    return kept + skipped[:limit - len(kept)]


def distinct_products_scores(scores: F64, products_of: Sequence[frozenset[Hashable]], *, limit: int) -> F64:
    """users x campaigns scores whose ranking (descending, ties by lower column, ``-inf`` never shown)
    starts with each row's :func:`distinct_products_order` of its ranking, for the first ``limit`` places.

    ``products_of[column]`` is the campaign's promoted products. Rows keep their other scores, so the
    places after ``limit`` are the original order less the ones moved up.
    """
    out = np.array(scores, dtype=np.float64, copy=True)
    for row in range(out.shape[0]):
        values = out[row]
        finite = np.isfinite(values)
        if not finite.any():
            continue
        order = np.argsort(-values, kind="stable")
        order = order[finite[order]]
        chosen = distinct_products_order(order.tolist(), products_of.__getitem__, limit=limit)
        top = float(values[finite].max())
        step = max(1.0, abs(top))
        for place, column in enumerate(chosen):
            values[column] = top + step * (len(chosen) - place)
    return out

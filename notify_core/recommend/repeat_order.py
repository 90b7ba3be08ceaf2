"""Repeat campaigns in summed-orders order (issue 17, fifth design): one function for serving and evaluation.

The learned ranker decides *how many* of a user's top places go to campaigns they bought before (and
where), but its order *among* those campaigns trailed the plain "most summed orders first" order of the
repeat-buy peer: co-purchase and text similarity pulled a rarely bought campaign above a habitual one
(docs/recommendation-quality.md, Phase 4/5). This keeps the places the ranker gives to bought campaigns
and refills them in summed-orders order (ties by the ranker's score), so the repeat order is monotone in
the user's own frequency by construction. New-item places, and so every new-items list, are unchanged.
No parameter is fitted; chosen on the development windows only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]


def repeats_in_frequency_order(score: F64, orders: F64) -> F64:
    """``score`` (one user's candidates, or users x campaigns) with the bought campaigns' scores
    (``orders`` > 0, finite score) reassigned so that more summed orders means a higher score.

    The multiset of scores is unchanged, so non-bought campaigns keep their places; equal ``orders``
    keep the ranker's order. ``-inf`` (not a candidate / not eligible) is never moved.
    """
    out = np.array(score, dtype=np.float64, copy=True)
    freq = np.asarray(orders, dtype=np.float64)
    if out.shape != freq.shape:
        raise ValueError(f"score {out.shape} and orders {freq.shape} differ in shape")
    flat = out.reshape(-1)  # a view of ``out``: reordered in place; a row is a user
    _reorder(flat, freq.reshape(-1), lambda cols: cols // max(out.shape[-1], 1))
    return out


def repeats_in_frequency_order_by_user(score: F64, orders: F64, users: npt.NDArray[np.int64]) -> F64:
    """:func:`repeats_in_frequency_order` of many users' candidates in one flat array: ``users[i]`` is the
    user of candidate ``i``, each user's candidates contiguous (a block of serving's rankings at once)."""
    out = np.array(score, dtype=np.float64, copy=True)
    _reorder(out, np.asarray(orders, dtype=np.float64), users.__getitem__)
    return out


def _reorder(values: F64, counts: F64, user_of: Callable[[npt.NDArray[np.intp]], npt.NDArray[Any]]) -> None:
    """Within each user (``user_of(positions)``, ascending with the position), the bought candidates'
    values refilled highest first in order of most ``counts``, equal counts by the value itself, then by
    position (stable sorts)."""
    cols = np.flatnonzero((counts > 0) & np.isfinite(values))
    if len(cols) < 2:
        return
    user, value = user_of(cols), values[cols]
    places = value[np.lexsort((-value, user))]  # each user's bought values, highest first
    values[cols[np.lexsort((-value, -counts[cols], user))]] = places

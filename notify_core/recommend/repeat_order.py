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
    rows_out = out.reshape(1, -1) if out.ndim == 1 else out
    rows_freq = freq.reshape(1, -1) if freq.ndim == 1 else freq
    for row in range(rows_out.shape[0]):
        values, counts = rows_out[row], rows_freq[row]
        cols = np.flatnonzero((counts > 0) & np.isfinite(values))
        if len(cols) < 2:
            continue
        places = np.sort(values[cols])[::-1]
        by_orders = cols[np.lexsort((-values[cols], -counts[cols]))]
        values[by_orders] = places
    return out

"""Paired bootstrap intervals of a method's difference to Notify, per cut-off and averaged over cut-offs.

Paired: both methods are measured on the same users, so each resample draws users (with replacement)
and takes the difference of the two methods' hit rates on that same draw; the 2.5 and 97.5 percentiles
of the resampled differences are the 95 % interval. Averaged over cut-offs: each cut-off's users are
resampled independently and the per-cut-off differences averaged, so every cut-off weighs the same.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

Hits = npt.NDArray[np.bool_]
RESAMPLES = 2000


def paired_bootstrap(notify: Sequence[Hits], other: Sequence[Hits], *, resamples: int = RESAMPLES,
                     seed: int = 0) -> dict[str, float]:
    """Mean over cut-offs of (notify - other) hit rate, with its 95 % percentile interval.

    ``notify[i]`` and ``other[i]`` are per-user hits of cut-off ``i`` over the same users.
    """
    if len(notify) != len(other) or not notify:
        raise ValueError("one pair of per-user hit vectors per cut-off is needed")
    rng = np.random.default_rng(seed)
    total = np.zeros(resamples)
    point = 0.0
    for a, b in zip(notify, other, strict=True):
        if a.shape != b.shape:
            raise ValueError("paired hit vectors must cover the same users")
        diff = a.astype(np.float64) - b.astype(np.float64)
        point += float(diff.mean()) if diff.size else 0.0
        if diff.size:
            draws = rng.integers(0, diff.size, size=(resamples, diff.size))
            total += diff[draws].mean(axis=1)
    n = len(notify)
    low, high = np.percentile(total / n, [2.5, 97.5])
    return {"diff": round(point / n, 4), "low": round(float(low), 4), "high": round(float(high), 4)}

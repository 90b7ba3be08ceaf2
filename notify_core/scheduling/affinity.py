"""Send-time affinity: when in their own day each user responds, shrunk toward everyone's pattern.

Per user, a 24-bin histogram of engagement events (:data:`models.AFFINITY_TYPES`) by LOCAL hour (the
user's zone at the event's instant, so a user's 20:00 stays 20:00 across a DST change). Empirical-Bayes
shrinkage toward the population histogram ``prior``::

    p_u(h) = (counts_u(h) + k * prior(h)) / (n_u + k)

Before shrinking, each user's counts are smoothed with a circular kernel over neighbouring hours
(:data:`KERNEL`, +-2 h): someone who clicks at 20:05 is likely around at 19:55 and 21:00 too, and the
planner's minimum gap often rules out the exact neighbour hour. The kernel keeps ``n_u``.
``k`` (``PlanOptions.affinity_strength``) is the weight of the prior in pseudo-events: a user with no
history gets exactly the population pattern; with ``n_u >> k`` their own. The planner uses the *lift*
``24 * p_u(h)`` (mean 1 over the day), so affinity scales the expected value without changing its units.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import numpy.typing as npt
import polars as pl

from notify_core.scheduling.models import AFFINITY_TYPES
from notify_core.scheduling.timezones import zone_name_or_utc

HOURS = 24
KERNEL = np.array([0.1, 0.2, 0.4, 0.2, 0.1], dtype=np.float32)  # hours -2..+2, sums to 1
F32 = npt.NDArray[np.float32]


def hour_counts(
    interactions: pl.DataFrame, users: pl.DataFrame, *, as_of: datetime, lookback_days: int,
) -> F32:
    """``(len(users), 24)`` engagement counts by local hour, rows in ``users`` order.

    ``users`` needs ``user_id`` and ``timezone`` (an unknown or missing zone counts as UTC, as the planner
    plans it); ``interactions`` the INTERACTIONS schema.
    Each distinct zone is converted once (polars needs a literal zone per conversion).
    """
    counts = np.zeros((users.height, HOURS), dtype=np.float32)
    if interactions.is_empty() or users.is_empty():
        return counts
    since = as_of - timedelta(days=lookback_days)
    events = (
        interactions.lazy()
        .filter(pl.col("type").is_in(AFFINITY_TYPES) & (pl.col("ts") >= since) & (pl.col("ts") < as_of))
        .join(users.lazy().select("user_id", "timezone").with_row_index("_u"), on="user_id", how="inner")
        .select("_u", "ts", "timezone")
        .collect()
    )
    if events.is_empty():
        return counts
    parts = []
    for (zone,), part in events.partition_by("timezone", as_dict=True).items():
        # unknown -> UTC, as the planner plans them: a zone polars refuses must not fail the whole chunk
        tz = zone_name_or_utc(None if zone is None else str(zone))
        parts.append(part.select("_u", pl.col("ts").dt.convert_time_zone(tz).dt.hour().alias("h")))
    both = pl.concat(parts)
    flat = both["_u"].to_numpy().astype(np.int64) * HOURS + both["h"].to_numpy().astype(np.int64)
    counts += np.bincount(flat, minlength=users.height * HOURS).reshape(users.height, HOURS).astype(np.float32)
    return counts


def smooth(counts: F32) -> F32:
    """Circular convolution of each row with :data:`KERNEL` (row sums unchanged)."""
    half = KERNEL.size // 2
    out = np.zeros_like(counts)
    for shift, weight in zip(range(-half, half + 1), KERNEL, strict=True):
        out += weight * np.roll(counts, shift, axis=1)
    return out


def population_prior(counts: F32, *, smoothing: float = 1.0) -> F32:
    """Everyone's hour distribution (sums to 1); ``smoothing`` events per hour keep empty hours non-zero."""
    total = counts.sum(axis=0, dtype=np.float64) + smoothing
    prior: F32 = (total / total.sum()).astype(np.float32)
    return prior


def shrunk_lift(counts: F32, prior: F32, *, strength: float) -> F32:
    """``24 * (counts + k * prior) / (n + k)`` per user: a lift around 1, population-shaped when n is small."""
    counts = smooth(counts)
    n = counts.sum(axis=1, keepdims=True)
    p = (counts + np.float32(strength) * prior[None, :]) / (n + np.float32(strength))
    lift: F32 = (HOURS * p).astype(np.float32)
    return lift

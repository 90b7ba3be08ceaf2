"""Fatigue: notifications a user ignored lower their cap and their notifications' expected value.

``ignored`` = notifications sent in the lookback window after the user's last engagement (a click or
an open, from the clickstream, or a history row marked ``interacted``) and not interacted with: the
current streak of silence. Each ``ignores_per_cap_step`` ignored notifications lower the day's cap by
one (at most ``max_cap_reduction``) and each adds ``penalty_per_ignore`` to the penalty subtracted from
every candidate's expected value (at most ``max_penalty``), so a fatigued user gets fewer and only
strong candidates. One engagement resets the streak. An ``opt_out`` event (an unsubscribe link used) in
the lookback window sets both to their maximum: the user still gets what their preferences allow, but
only their single best notification and only when it is strong.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import numpy.typing as npt
import polars as pl

from notify_core.scheduling.models import ENGAGEMENT_TYPES, OPT_OUT_TYPE, FatigueOptions


@dataclass(frozen=True, slots=True)
class Fatigue:
    """Per user (in the users frame's order)."""

    ignored: npt.NDArray[np.int32]
    cap_reduction: npt.NDArray[np.int32]
    penalty: npt.NDArray[np.float32]


def fatigue_of(
    users: pl.DataFrame, history: pl.DataFrame, interactions: pl.DataFrame, *, as_of: datetime,
    options: FatigueOptions,
) -> Fatigue:
    n = users.height
    ignored = np.zeros(n, dtype=np.int32)
    if n and not history.is_empty():
        since = as_of - timedelta(hours=options.lookback_hours)
        index = users.lazy().select("user_id").with_row_index("_u")
        engaged_events = (
            interactions.lazy().filter(pl.col("type").is_in(ENGAGEMENT_TYPES) & (pl.col("ts") < as_of))
            .group_by("user_id").agg(pl.col("ts").max().alias("engaged"))
        )
        engaged_sends = (
            history.lazy().filter(pl.col("interacted").fill_null(False) & (pl.col("sent_at") < as_of))
            .group_by("user_id").agg(pl.col("sent_at").max().alias("engaged"))
        )
        last_engaged = pl.concat([engaged_events, engaged_sends]).group_by("user_id").agg(pl.col("engaged").max())
        streak = (
            history.lazy()
            .filter((pl.col("sent_at") >= since) & (pl.col("sent_at") < as_of) & ~pl.col("interacted").fill_null(False))
            .join(last_engaged, on="user_id", how="left")
            .filter(pl.col("engaged").is_null() | (pl.col("sent_at") > pl.col("engaged")))
            .group_by("user_id").agg(pl.len().alias("n"))
            .join(index, on="user_id", how="inner")
            .collect()
        )
        ignored[streak["_u"].to_numpy()] = streak["n"].to_numpy().astype(np.int32)
    reduction = np.minimum(ignored // max(options.ignores_per_cap_step, 1), options.max_cap_reduction).astype(np.int32)
    penalty = np.minimum(ignored * options.penalty_per_ignore, options.max_penalty).astype(np.float32)
    if n and not interactions.is_empty():
        since = as_of - timedelta(hours=options.lookback_hours)
        opted = (
            interactions.lazy().filter((pl.col("type") == OPT_OUT_TYPE) & (pl.col("ts") >= since)
                                       & (pl.col("ts") < as_of))
            .select("user_id").unique()
            .join(users.lazy().select("user_id").with_row_index("_u"), on="user_id", how="inner")
            .collect()
        )
        if opted.height:
            at = opted["_u"].to_numpy()
            reduction[at] = options.max_cap_reduction
            penalty[at] = options.max_penalty
    return Fatigue(ignored=ignored, cap_reduction=reduction, penalty=penalty)

"""The "would-have-converted" replay: what the planner would have sent on the first test day, and how much
of it the user then bought.

For each method, the top ``candidates_per_user`` campaigns of its ranking become the planner's candidate
rows, with a RANK-based relevance ``1 - rank / candidates_per_user`` (identical for every method, so the
planner's own rules - daily cap from the user's preferences, quiet hours, priority weighting, campaign
budgets, opt-outs - decide the same way whatever the method's score scale). The real planner
(:func:`notify_core.scheduling.planner.plan_users`) plans the users' local first test day with no send
history (no cooldown or fatigue is active offline). A planned notification "converts" if the user bought
one of the campaign's products within ``window_days`` of that day (non-return line).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import polars as pl

from notify_core.evaluation.metrics import F64, top_k
from notify_core.evaluation.split import Split, local_midnight_utc
from notify_core.scheduling.planner import plan_users

DEFAULT_WINDOW_DAYS = 7
CANDIDATES_PER_USER = 20


@dataclass(frozen=True, slots=True)
class Replay:
    """Planned notifications and how many converted within the window (and within the whole horizon)."""

    sent: int
    converted: int
    converted_horizon: int
    window_days: int

    @property
    def rate(self) -> float:
        return self.converted / self.sent if self.sent else 0.0

    @property
    def rate_horizon(self) -> float:
        return self.converted_horizon / self.sent if self.sent else 0.0


def bought_within(split: Split, days: int) -> set[tuple[str, str]]:
    """(user_id, campaign_id) pairs where the user bought a promoted product in the first ``days`` test days."""
    end = local_midnight_utc(split.cutoff + timedelta(days=days))
    bought = split.test_purchases.filter(pl.col("ts") < end).select("user_id", "product_id").unique()
    promoted = split.campaigns.select("campaign_id", pl.col("product_ids").alias("product_id")).explode("product_id")
    pairs = bought.join(promoted, on="product_id").select("user_id", "campaign_id").unique()
    return set(pairs.iter_rows())


def replay(split: Split, scores: F64, *, window_days: int = DEFAULT_WINDOW_DAYS,
           candidates_per_user: int = CANDIDATES_PER_USER) -> Replay:
    """Plan the first test day from ``scores`` (users x campaigns) and count conversions."""
    ranked = top_k(scores, candidates_per_user)
    rows, ranks = np.nonzero(ranked >= 0)
    relevance = 1.0 - ranks / candidates_per_user
    ids = np.array(split.campaign_ids, dtype=object)
    users = np.array(split.users, dtype=object)
    candidates = pl.DataFrame({"user_id": users[rows].tolist(), "campaign_id": ids[ranked[rows, ranks]].tolist(),
                               "relevance": relevance.astype(np.float64)},
                              schema={"user_id": pl.String, "campaign_id": pl.String, "relevance": pl.Float64})
    plan = plan_users(candidates, split.enriched_users, split.campaigns, plan_day=split.first_test_day).frame
    sent = list(plan.select("user_id", "campaign_id").iter_rows())
    short, whole = bought_within(split, window_days), bought_within(split, split.horizon_days)
    return Replay(sent=len(sent), converted=sum(p in short for p in sent),
                  converted_horizon=sum(p in whole for p in sent), window_days=window_days)

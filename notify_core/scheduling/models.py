"""Inputs and outputs of the planner: polars frames with documented schemas, and the planner's options.

Every frame the planner reads is a plain polars frame in one of these schemas (extra columns are
ignored), so the same code plans 4k demo users read from the Store and 10M synthetic users in a
benchmark. Times are UTC ``Datetime("us", "UTC")``; local time only exists inside the planner.

* ``CANDIDATES``: what the recommender proposes, one row per (user, campaign); ``relevance`` is a
  similarity (cosine in [-1, 1]); rows with relevance <= 0 are never sent.
* ``USERS``: per-user preferences. ``daily_cap`` null means the platform maximum; quiet hours are local
  hours, start inclusive, end exclusive, wrapping midnight when start > end, none when start == end
  or either is null. Optional ``opted_out_categories`` (list of str) removes campaigns of those
  categories when the campaigns frame has a ``category`` column.
* ``CAMPAIGNS``: ``priority`` 1..5, ``cooldown_hours`` (the same campaign is not sent to a user again
  within it), ``daily_budget`` (sends per plan day across all users; null = unlimited).
* ``HISTORY``: notifications already sent (or claimed for sending) with whether the user interacted
  with them. Drives "already sent today", cooldowns, the gap to earlier sends, and fatigue.
* ``INTERACTIONS``: clickstream events (click, campaign_view, notification_open, notification_click);
  drives send-time affinity and resets fatigue.
* ``PLAN``: the planner's output, one row per planned notification.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl
from polars._typing import PolarsDataType

from notify_core import bounds
from notify_core.campaigns import PLANNING_COLUMNS
from notify_core.campaigns import schema as campaign_schema

Schema = dict[str, PolarsDataType]
UTC_TS = pl.Datetime("us", "UTC")

CANDIDATES: Schema = {"user_id": pl.String, "campaign_id": pl.String, "relevance": pl.Float64}
USERS: Schema = {
    "user_id": pl.String, "timezone": pl.String, "daily_cap": pl.Int32,
    "quiet_start_hour": pl.Int32, "quiet_end_hour": pl.Int32,
}
CAMPAIGNS: Schema = campaign_schema(*PLANNING_COLUMNS)
HISTORY: Schema = {"user_id": pl.String, "campaign_id": pl.String, "sent_at": UTC_TS, "interacted": pl.Boolean}
INTERACTIONS: Schema = {"user_id": pl.String, "ts": UTC_TS, "type": pl.String}
PLAN: Schema = {
    "user_id": pl.String, "campaign_id": pl.String, "notification_id": pl.String, "plan_day": pl.String,
    "slot": pl.Int32, "send_at": UTC_TS, "expected_value": pl.Float64, "relevance": pl.Float64,
    "affinity": pl.Float64,
}

# Interaction types that say "the user was there and engaged": they shape send-time affinity and
# reset fatigue. campaign_view is browsing, not a response to a notification, so it counts for the
# hour histogram but not as an answer to a notification.
AFFINITY_TYPES = ("click", "campaign_view", "notification_open", "notification_click")
ENGAGEMENT_TYPES = ("click", "notification_open", "notification_click")
# A user who used a message's unsubscribe link (notify_core.preferences) in the fatigue window is treated as
# fully fatigued: the strongest signal that notifications are unwelcome, whatever else they still allow.
OPT_OUT_TYPE = "opt_out"

MAX_PER_DAY = bounds.MAX_DAILY_CAP  # the platform's hard ceiling (the requirement's "max 5 notifications/day")
HISTORY_DAYS = 7
"""How far back the planner reads a user's sends: fatigue's "ignored in a row" window
(:attr:`FatigueOptions.lookback_hours`) and :func:`.store.load_state`'s history read both derive from it."""
SENT_PLAN_TTL_DAYS = HISTORY_DAYS + 1
"""How long a sent ``plans`` item lives after its send time (the worker's outcome sets it,
``delivery.outcomes.projections``): the history window and a day of margin, since a plan is made up to a
day before its day and the TTL runs on the Store's clock. It once kept the schedule item's 3 days
(``store.TTL_DAYS``), so fatigue saw 3 of its 7 days and a 4-day-old send no longer held a cooldown."""


def empty(schema: Schema) -> pl.DataFrame:
    return pl.DataFrame(schema=schema)


def conform(frame: pl.DataFrame | None, schema: Schema, *, name: str) -> pl.DataFrame:
    """The frame's schema columns, cast to the schema (extra columns kept after them); None -> empty."""
    from notify_core.errors import ValidationError

    if frame is None:
        return empty(schema)
    missing = [c for c in schema if c not in frame.columns]
    if missing:
        raise ValidationError(f"{name} frame lacks column(s) {missing}")
    extra = [c for c in frame.columns if c not in schema]
    return frame.select([pl.col(c).cast(t) for c, t in schema.items()] + [pl.col(c) for c in extra])


@dataclass(frozen=True, slots=True, kw_only=True)
class FatigueOptions:
    """How ignored notifications lower the cap and raise the penalty (see :mod:`.fatigue`)."""

    lookback_hours: int = HISTORY_DAYS * 24  # sends older than HISTORY_DAYS are not kept (SENT_PLAN_TTL_DAYS)
    ignores_per_cap_step: int = 2  # every 2 ignored notifications in a row lower the cap by one
    max_cap_reduction: int = 4  # a fatigued user still gets their single best notification
    penalty_per_ignore: float = 0.03  # subtracted from the expected value, per ignored notification
    max_penalty: float = 0.3


@dataclass(frozen=True, slots=True, kw_only=True)
class ExplorationOptions:
    """The bandit over campaigns (see :mod:`.exploration`): relevance x a per-campaign CTR lift, learnt from counts.

    ``share`` is the exploration budget: at most this share of the users' slot budget (the sum of their
    effective caps) goes to Thompson draws; 0 (the default) plans exactly as without exploration.
    ``prior_strength`` is the weight, in pseudo-deliveries at the platform's average CTR, of the prior on
    each campaign's CTR: a campaign's own counts outweigh it once it has been delivered more often than this.
    """

    share: float = 0.0
    prior_strength: float = 200.0

    def __post_init__(self) -> None:
        from notify_core.errors import ValidationError

        if not 0.0 <= self.share <= 0.5:
            raise ValidationError(f"exploration share must be 0..0.5, got {self.share}")
        if self.prior_strength <= 0:
            raise ValidationError("exploration prior_strength must be > 0")


# Per-campaign delivery and click counts (over a recent window) for the exploration posterior.
CAMPAIGN_COUNTS: Schema = {"campaign_id": pl.String, "delivered": pl.Int64, "clicked": pl.Int64}


@dataclass(frozen=True, slots=True, kw_only=True)
class PlanOptions:
    """Planner knobs. Defaults are the product's rules; tests and benchmarks override by keyword."""

    max_per_day: int = MAX_PER_DAY
    min_gap_minutes: int = 60
    minute_capacity: int = 20_000  # deliveries one minute can take, across all users
    max_candidates: int = 50  # per user, best first; more is never needed for a cap of 5
    affinity_strength: float = 20.0  # k in (counts + k * prior) / (n + k): pseudo-events of the prior
    affinity_lookback_days: int = 90
    # priority 1..5 -> weight; a priority-5 campaign is worth twice a priority-1 one at equal relevance.
    priority_weights: tuple[float, float, float, float, float] = (0.5, 0.625, 0.75, 0.875, 1.0)
    budget_rounds: int = 6  # re-plan rounds for users who lost a notification to a campaign budget
    fatigue: FatigueOptions = field(default_factory=FatigueOptions)
    exploration: ExplorationOptions = field(default_factory=ExplorationOptions)

    def __post_init__(self) -> None:
        from notify_core.errors import ValidationError

        if not 0 <= self.max_per_day <= MAX_PER_DAY:
            raise ValidationError(f"max_per_day must be 0..{MAX_PER_DAY}, got {self.max_per_day}")
        if self.min_gap_minutes < 0 or self.minute_capacity < 1 or self.max_candidates < 1:
            raise ValidationError("min_gap_minutes >= 0, minute_capacity >= 1 and max_candidates >= 1 are required")
        if self.affinity_strength <= 0:
            raise ValidationError("affinity_strength must be > 0")

"""Independent re-checks of a plan (what the Dagster asset checks report): recomputed from the plan's
rows with polars and zoneinfo, not with the planner's own block tables, so a planner bug shows up here."""

from __future__ import annotations

import polars as pl

from notify_core.scheduling.models import MAX_PER_DAY
from notify_core.scheduling.timezones import zone_name_or_utc


def plan_violations(plan: pl.DataFrame, users: pl.DataFrame, *, capacity: int, sent_today: pl.DataFrame | None = None,
                    ) -> dict[str, int]:
    """Counts of rows breaking each rule: ``over_cap`` (users), ``quiet_hours``, ``outside_day``,
    ``not_minute_aligned``, ``over_capacity`` (minutes within this plan alone)."""
    if plan.is_empty():
        return {"over_cap": 0, "quiet_hours": 0, "outside_day": 0, "not_minute_aligned": 0, "over_capacity": 0}
    joined = plan.join(users.select("user_id", "timezone", "daily_cap", "quiet_start_hour", "quiet_end_hour"),
                       on="user_id", how="left")
    parts = []
    for (zone,), part in joined.partition_by("timezone", as_dict=True).items():
        # the zone the planner planned this user in (unknown -> UTC), so one odd stored profile cannot fail
        # the conversion, and with it every user of the chunk
        local = pl.col("send_at").dt.convert_time_zone(zone_name_or_utc(None if zone is None else str(zone)))
        parts.append(part.with_columns(local.dt.hour().alias("_h"), local.dt.date().alias("_d")))
    rows = pl.concat(parts)
    qs, qe, h = pl.col("quiet_start_hour"), pl.col("quiet_end_hour"), pl.col("_h")
    quiet = (qs.is_not_null() & qe.is_not_null() & (qs != qe)
             & pl.when(qs < qe).then((h >= qs) & (h < qe)).otherwise((h >= qs) | (h < qe)))
    counts = rows.group_by("user_id").agg(pl.len().alias("n"), pl.col("daily_cap").first())
    if sent_today is not None and not sent_today.is_empty():
        counts = counts.join(sent_today, on="user_id", how="left").with_columns(
            pl.col("n") + pl.col("sent").fill_null(0))
    cap = pl.min_horizontal(pl.col("daily_cap").fill_null(MAX_PER_DAY), pl.lit(MAX_PER_DAY))
    return {
        "over_cap": counts.filter(pl.col("n") > cap).height,
        "quiet_hours": rows.filter(quiet.fill_null(False)).height,
        "outside_day": rows.filter(pl.col("_d") != pl.col("plan_day").str.to_date()).height,
        "not_minute_aligned": plan.filter((pl.col("send_at").dt.second() != 0)
                                          | (pl.col("send_at").dt.microsecond() != 0)).height,
        "over_capacity": plan.group_by("send_at").len().filter(pl.col("len") > capacity).height,
    }


REACH_FLOOR = 0.8
"""The share of reachable users a plan must give at least one notification (:func:`reaches_users`). Budgets
and minute capacity may legitimately leave some out; a plan that leaves out a fifth of the users who had a
free slot and an eligible candidate has lost them somewhere (a relevance on the wrong scale once dropped
half of the demo's users while every other check passed)."""


def reaches_users(*, reachable: int, reached: int) -> bool:
    """Whether a plan reached enough of the users it could have (``PlanStats.users_reachable``: a free slot
    left in their day and an eligible candidate). With nobody reachable (a plan made late in the evening,
    every window past) there is nobody to miss, so it passes."""
    return reachable == 0 or reached >= REACH_FLOOR * reachable

"""Campaigns: the one owner of their columns, types and defaults.

The dataset schema itself is :data:`notify_core.schemas.CAMPAIGNS` (what landing files, the lake and the
Store hold). Every stage that needs only some of the columns takes its subset from here, so serving
(the index's side table), planning and the API's defaults cannot drift apart in a type or a default:
before this module a missing priority counted as 1 in serving and as 3 in planning, and the budget was
an Int32 in one copy of the column list and an Int64 in another.
"""

from __future__ import annotations

from typing import Final

from notify_core import bounds
from notify_core.catalog.categories import OTHER
from notify_core.schemas import CAMPAIGNS, Schema

ACTIVE: Final = "active"
PAUSED: Final = "paused"
STATUSES = (ACTIVE, PAUSED)

DEFAULT_CATEGORY = OTHER  # the catalogue's "no category"
DEFAULT_PRIORITY = 3  # 1 (low) .. 5 (high); a campaign without one is ordinary, not the least important
MIN_PRIORITY, MAX_PRIORITY = bounds.MIN_PRIORITY, bounds.MAX_PRIORITY
DEFAULT_COOLDOWN_HOURS = 72
DEFAULT_DAILY_BUDGET = 1000
DEFAULT_DURATION_DAYS = 365  # an open end date: a year after the start

# What deciding whether a campaign may go to a user needs (serving ships these with each index version).
ELIGIBILITY_COLUMNS = ("status", "start_date", "end_date", "target_countries", "category", "cooldown_hours",
                       "priority")
# What the planner needs beyond the candidates.
PLANNING_COLUMNS = ("campaign_id", "priority", "cooldown_hours", "daily_budget")


def schema(*names: str) -> Schema:
    """The dataset's types of ``names``, in that order."""
    return {name: CAMPAIGNS[name] for name in names}

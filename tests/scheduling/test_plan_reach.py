"""The plan's reach: users who had a free slot and an eligible candidate, and how many of them got a
notification. Every other plan check passed on a plan that dropped half of the demo's users (candidates
on the wrong relevance scale); this one names them (``checks.reaches_users``, the asset check
``reaches_users``)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from zoneinfo import ZoneInfo

from notify_core.scheduling import plan_users
from notify_core.scheduling.checks import REACH_FLOOR, reaches_users
from tests.scheduling.conftest import campaigns, candidates, users

DAY = date(2026, 11, 24)
CAMPS = campaigns([(f"c{j}", 3, 24, None) for j in range(3)])
ZONE = "Europe/London"


def _world() -> tuple:
    us = users([("relevant", ZONE, 3, 22, 8), ("below", ZONE, 3, 22, 8), ("none", ZONE, 3, 22, 8),
                ("capped", ZONE, 0, 22, 8)])
    cands = candidates([("relevant", "c0", 0.7), ("relevant", "c1", 0.4),
                        ("below", "c0", -0.3), ("below", "c1", 0.0),   # a logit's scale: nothing above 0
                        ("capped", "c0", 0.9)])                         # a cap of 0: no free slot
    return us, cands


def test_a_user_whose_candidates_are_all_below_the_floor_is_counted_unreached() -> None:
    us, cands = _world()
    stats = plan_users(cands, us, CAMPS, plan_day=DAY).stats
    assert (stats.users, stats.users_planned, stats.users_reachable, stats.users_below_floor) == (4, 1, 2, 1)
    assert not reaches_users(reachable=stats.users_reachable, reached=stats.users_planned)  # 1 of 2 < 80 %


def test_a_plan_made_after_every_window_has_nobody_to_reach_and_passes() -> None:
    us, cands = _world()
    evening = datetime.combine(DAY, time(23, 30), tzinfo=ZoneInfo(ZONE)).astimezone(UTC)  # quiet from 22:00
    stats = plan_users(cands, us, CAMPS, plan_day=DAY, now=evening).stats
    assert stats.notifications == 0 and stats.users_reachable == 0 and stats.users_below_floor == 0
    assert reaches_users(reachable=stats.users_reachable, reached=stats.users_planned)


def test_the_floor() -> None:
    assert reaches_users(reachable=0, reached=0)
    assert reaches_users(reachable=10, reached=round(10 * REACH_FLOOR))
    assert not reaches_users(reachable=10, reached=round(10 * REACH_FLOOR) - 1)

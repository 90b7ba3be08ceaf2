"""The planner's behaviour on named users: evening clickers, fatigue, budgets, quiet hours across DST."""

from __future__ import annotations

from datetime import date, timedelta

import polars as pl
import pytest

from notify_core.scheduling import PlanOptions, plan_users
from tests.scheduling.conftest import at, campaigns, candidates, history, interactions, local, users

DAY = date(2026, 11, 24)
CAMPS = campaigns([(f"c{j}", 3, 24, None) for j in range(6)])


def _cands(uid: str) -> pl.DataFrame:
    return candidates([(uid, f"c{j}", 0.9 - 0.1 * j) for j in range(6)])


def test_user_who_clicks_at_20_gets_evening_slots() -> None:
    zone = "America/New_York"
    us = users([("eve", zone, 2, 23, 7), ("new", zone, 2, 23, 7)])
    clicks = [("eve", at(DAY - timedelta(days=d), 20, 10 + d, zone), "notification_click") for d in range(1, 15)]
    clicks += [("eve", at(DAY - timedelta(days=d), 20, 40, zone), "click") for d in range(1, 15)]
    # everyone else engages through the day, most at 09:00: the population prior alone says "morning"
    clicks += [(f"m{i}", at(DAY - timedelta(days=1 + i % 20), 8 + i % 14, 0, zone), "click") for i in range(280)]
    clicks += [(f"m{i}", at(DAY - timedelta(days=1 + i % 20), 9, 0, zone), "click") for i in range(40)]
    us_all = pl.concat([us, users([(f"m{i}", zone, 3, 23, 7) for i in range(280)])])
    cands = pl.concat([_cands("eve"), _cands("new")])
    plan = plan_users(cands, us_all, CAMPS, plan_day=DAY, interactions=interactions(clicks)).frame
    eve = plan.filter(pl.col("user_id") == "eve")
    hours = sorted(local(t, zone).hour for t in eve["send_at"])
    assert eve.height == 2
    assert hours == [18, 20], hours  # evening (the 60-minute gap rules out the 19:00 and 21:00 blocks)
    top = eve.sort("expected_value", descending=True).row(0, named=True)
    assert top["campaign_id"] == "c0" and local(top["send_at"], zone).hour == 20
    # a user without history follows the population: mornings
    new = plan.filter(pl.col("user_id") == "new").sort("expected_value", descending=True)
    assert local(new["send_at"][0], zone).hour == 9


def test_user_who_ignored_their_last_notifications_gets_fewer() -> None:
    zone = "Europe/London"
    us = users([("tired", zone, 5, 22, 8), ("fresh", zone, 5, 22, 8)])
    sends = [(u, f"c{j}", at(DAY - timedelta(days=1 + j // 3), 10 + 3 * (j % 3), 0, zone), False)
             for u in ("tired",) for j in range(6)]
    sends += [("fresh", f"c{j}", at(DAY - timedelta(days=1 + j // 3), 10 + 3 * (j % 3), 0, zone), True)
              for j in range(6)]
    cands = pl.concat([_cands("tired"), _cands("fresh")]).with_columns(pl.col("campaign_id").str.replace("c", "x"))
    camps = campaigns([(f"x{j}", 3, 24, None) for j in range(6)])
    result = plan_users(cands, us, camps, plan_day=DAY, history=history(sends))
    counts = dict(result.frame.group_by("user_id").len().iter_rows())
    assert counts["fresh"] == 5
    assert counts["tired"] < counts["fresh"]
    assert counts["tired"] == 5 - 6 // 2  # 6 ignored in a row: cap lowered by 3
    # and the penalty lowers every expected value of the tired user
    ev = dict(result.frame.filter(pl.col("campaign_id") == "x0").select("user_id", "expected_value").iter_rows())
    assert ev["tired"] < ev["fresh"]
    assert result.stats.fatigued_users == 1


def test_an_open_resets_fatigue() -> None:
    zone = "Europe/London"
    us = users([("u", zone, 5, 22, 8)])
    sends = [("u", f"c{j}", at(DAY - timedelta(days=2), 9 + 2 * j, 0, zone), False) for j in range(4)]
    opened = interactions([("u", at(DAY - timedelta(days=1), 12, 0, zone), "notification_open")])
    tired = plan_users(_cands("u"), us, CAMPS, plan_day=DAY, history=history(sends)).frame.height
    reset = plan_users(_cands("u"), us, CAMPS, plan_day=DAY, history=history(sends), interactions=opened).frame.height
    assert tired == 3 and reset == 5


def test_already_sent_today_counts_against_the_cap_and_blocks_repeats() -> None:
    zone = "Asia/Kolkata"
    us = users([("u", zone, 4, 22, 8)])
    sent = history([("u", "c0", at(DAY, 9, 0, zone), True), ("u", "c1", at(DAY, 11, 0, zone), True)])
    plan = plan_users(_cands("u"), us, CAMPS, plan_day=DAY, history=sent, now=at(DAY, 12, 0, zone)).frame
    assert plan.height == 2
    assert not set(plan["campaign_id"]) & {"c0", "c1"}
    assert all(local(t, zone).hour >= 12 for t in plan["send_at"])


def test_campaign_budget_keeps_the_highest_expected_values_and_replans_the_rest() -> None:
    us = users([(f"u{i}", "UTC", 1, None, None) for i in range(5)])
    camps = campaigns([("hot", 5, 0, 2), ("other", 3, 0, None)])
    cands = candidates([(f"u{i}", "hot", 0.5 + 0.1 * i) for i in range(5)]
                       + [(f"u{i}", "other", 0.2) for i in range(5)])
    result = plan_users(cands, us, camps, plan_day=DAY)
    got = dict(result.frame.select("user_id", "campaign_id").iter_rows())
    assert sorted(u for u, c in got.items() if c == "hot") == ["u3", "u4"]  # the two highest EV
    assert all(got[u] == "other" for u in ("u0", "u1", "u2"))  # replaced, not dropped
    assert result.stats.budget_replanned_users == 3


def test_two_campaigns_over_budget_each_keep_their_best_and_break_ties_by_user() -> None:
    """Ranks are taken inside each over-budget campaign alone: an unbudgeted campaign's picks and the other
    campaign's do not move them; equal expected values go to the first user id."""
    us = users([(f"u{i}", "UTC", 1, None, None) for i in range(6)])
    camps = campaigns([("a", 5, 0, 2), ("b", 5, 0, 1), ("free", 1, 0, None)])
    cands = candidates([("u0", "a", 0.6), ("u1", "a", 0.6), ("u2", "a", 0.6),
                        ("u3", "b", 0.5), ("u4", "b", 0.7), ("u5", "b", 0.7)]
                       + [(f"u{i}", "free", 0.1) for i in range(6)])
    result = plan_users(cands, us, camps, plan_day=DAY)
    got = dict(result.frame.select("user_id", "campaign_id").iter_rows())
    assert got == {"u0": "a", "u1": "a", "u2": "free", "u3": "free", "u4": "b", "u5": "free"}
    assert result.stats.budget_replanned_users == 3


def test_budget_shared_across_chunks_never_exceeded() -> None:
    from notify_core.scheduling import ChunkInput, plan_chunks

    camps = campaigns([("hot", 5, 0, 5)])
    chunks = [ChunkInput(users=users([(f"u{k}{i}", "UTC", 1, None, None) for i in range(4)]),
                         candidates=candidates([(f"u{k}{i}", "hot", 0.5) for i in range(4)])) for k in range(3)]
    plans = list(plan_chunks(chunks, camps, plan_day=DAY, total_users=12))
    assert sum(p.stats.notifications for p in plans) == 5
    assert [p.stats.notifications for p in plans][0] == 2  # ceil(5 * 4/12): a share, not all of it


def test_quiet_hours_across_spring_forward_london() -> None:
    day = date(2026, 3, 29)  # 01:00 GMT -> 02:00 BST
    us = users([("u", "Europe/London", 5, 8, 1)])  # quiet 08:00-01:00: only 01:00-08:00 allowed (01:xx skipped)
    plan = plan_users(_cands("u"), us, CAMPS, plan_day=day, options=PlanOptions(min_gap_minutes=60)).frame
    hours = sorted(local(t, "Europe/London").hour for t in plan["send_at"])
    assert hours and all(2 <= h < 8 for h in hours)  # 01:xx local does not exist that day
    assert len(hours) == 3  # 02-08 is 6 hours: with whole-hour gaps, 3 fit


def test_fall_back_new_york_has_25_hours() -> None:
    day = date(2026, 11, 1)
    us = users([("u", "America/New_York", 5, 3, 1)])  # quiet 03:00-01:00: only 01:00-03:00 local allowed
    plan = plan_users(_cands("u"), us, CAMPS, plan_day=day, options=PlanOptions(min_gap_minutes=0)).frame
    hours = sorted(local(t, "America/New_York").hour for t in plan["send_at"])
    assert hours == [1, 1, 2]  # 01:00 EDT, 01:00 EST (the repeated hour is its own block), 02:00 EST


def test_fatigue_lowers_the_cap_by_at_most_4_never_below_1_and_the_penalty_by_at_most_0_3() -> None:
    """The README: "lower the cap by 1 per 2 ignored (at most 4, never below 1) and add 0.03 each to the
    penalty (at most 0.3)". 14 ignored in a row (0.42 uncapped, a cap step of 7) against a fresh user."""
    zone = "Europe/London"
    us = users([("tired5", zone, 5, 22, 8), ("tired2", zone, 2, 22, 8), ("eight", zone, 5, 22, 8),
                ("fresh", zone, 5, 22, 8)])
    sends = [(u, f"c{j % 6}", at(DAY - timedelta(days=1 + j // 3), 9 + 4 * (j % 3), 0, zone), False)
             for u, n in (("tired5", 14), ("tired2", 14), ("eight", 8)) for j in range(n)]
    cands = pl.concat([_cands(u) for u in ("tired5", "tired2", "eight", "fresh")]).with_columns(
        pl.col("campaign_id").str.replace("c", "x"))
    camps = campaigns([(f"x{j}", 3, 24, None) for j in range(6)])
    frame = plan_users(cands, us, camps, plan_day=DAY, history=history(sends)).frame
    counts = dict(frame.group_by("user_id").len().iter_rows())
    assert counts == {"fresh": 5, "tired5": 1, "tired2": 1, "eight": 1}  # 5 - min(7, 4); 2 - 7 floored at 1
    ev = {(u, c): v for u, c, v in frame.select("user_id", "campaign_id", "expected_value").iter_rows()}
    assert ev[("fresh", "x0")] - ev[("tired5", "x0")] == pytest.approx(0.3, abs=1e-5)  # not 14 x 0.03
    assert ev[("fresh", "x0")] - ev[("eight", "x0")] == pytest.approx(0.24, abs=1e-5)  # 8 x 0.03


def test_quiet_hours_end_is_exclusive_and_start_inclusive() -> None:
    """Quiet 01:00-22:00 (start < end, no wrap): 22:xx is the first allowed hour, 01:xx the first quiet one."""
    us = users([("u", "UTC", 5, 1, 22)])
    plan = plan_users(_cands("u"), us, CAMPS, plan_day=DAY, options=PlanOptions(min_gap_minutes=0)).frame
    assert sorted(local(t, "UTC").hour for t in plan["send_at"]) == [0, 22, 23]


def test_a_replan_places_nothing_before_now_even_inside_the_current_hour() -> None:
    """At 10:30 the 10:00 block has begun: the earliest a re-plan may use is 11:00 (flat affinity would pick
    the earliest free block, so a block started before ``now`` would be chosen if it were allowed)."""
    us = users([("u", "UTC", 1, None, None)])
    now = at(DAY, 10, 30)
    plan = plan_users(_cands("u"), us, CAMPS, plan_day=DAY, now=now).frame
    assert plan["send_at"].to_list() and all(t >= at(DAY, 11) for t in plan["send_at"])


def test_a_campaign_sent_today_is_not_planned_again_that_day_even_without_a_cooldown() -> None:
    us = users([("u", "UTC", 5, None, None)])
    camps = campaigns([("c0", 5, 0, None), ("c1", 1, 0, None)])
    sent = history([("u", "c0", at(DAY, 9), False)])
    cands = candidates([("u", "c0", 0.9), ("u", "c1", 0.5)])
    plan = plan_users(cands, us, camps, plan_day=DAY, history=sent, now=at(DAY, 12)).frame
    assert plan["campaign_id"].to_list() == ["c1"]


def test_a_kept_notification_still_in_flight_is_charged_to_its_budget_whatever_spent_before_says() -> None:
    """Ledger.charge_kept: a send before ``spent_before`` is already counted, one at or after it and one
    still in flight (no sent time) are not, so both are charged."""
    from notify_core.scheduling.planner import Ledger

    counted = at(DAY, 12)
    ledger = Ledger(DAY, spent_before=counted)
    ledger.charge_kept([("c", at(DAY, 9)), ("c", counted), ("c", None)], {"c": 5})
    assert ledger.left("c", 5) == 3


def test_fatigue_counts_only_the_lookback_window_and_what_happened_before_as_of() -> None:
    """An opt-out older than the lookback does not max the fatigue out; an engagement at or after ``as_of``
    does not reset the streak; a send at the very instant of the last engagement is not ignored."""
    from notify_core.scheduling.fatigue import fatigue_of
    from notify_core.scheduling.models import FatigueOptions

    opts = FatigueOptions()
    as_of = at(DAY, 0)
    us = users([("old_opt_out", "UTC", 5, None, None), ("later_click", "UTC", 5, None, None),
                ("same_instant", "UTC", 5, None, None)])
    sends = [(u, f"c{j}", as_of - timedelta(hours=10 + j), False)
             for u in ("old_opt_out", "later_click") for j in range(4)]
    sends += [("same_instant", "c0", as_of - timedelta(hours=5), False),
              ("same_instant", "c1", as_of - timedelta(hours=3), False)]
    events = interactions([
        ("old_opt_out", as_of - timedelta(hours=opts.lookback_hours + 1), "opt_out"),
        ("later_click", as_of, "notification_click"),
        ("same_instant", as_of - timedelta(hours=5), "click"),
    ])
    fat = fatigue_of(us, history(sends), events, as_of=as_of, options=opts)
    assert fat.ignored.tolist() == [4, 4, 1]  # users in frame order: old_opt_out, later_click, same_instant
    assert fat.cap_reduction.tolist() == [2, 2, 0]
    assert fat.penalty.tolist() == pytest.approx([0.12, 0.12, 0.03])


def test_a_notification_moved_out_of_a_full_hour_keeps_a_positive_expected_value_or_is_dropped() -> None:
    """Minute capacity: when the user's best hour (20:00, where they click) is full, the notification moves
    to another allowed hour only if its expected value there is still > 0 (fatigue's penalty against a
    lower affinity); otherwise it is dropped and counted as ``capacity_dropped``."""
    from notify_core.scheduling.planner import Ledger
    from notify_core.scheduling.timezones import to_minutes

    us = users([("u", "UTC", 5, 22, 19)])  # quiet 22:00-19:00: only 19, 20 and 21 allowed
    clicks = interactions([("u", at(DAY - timedelta(days=d), 20, 5), "notification_click") for d in range(1, 30)])
    ignored = history([("u", "x", at(DAY - timedelta(days=1), 21 + j), False) for j in range(3)])  # penalty 0.09
    camps = campaigns([("c0", 5, 0, None), ("x", 1, 0, None)])

    def plan(relevance: float) -> tuple[pl.DataFrame, int, int]:
        ledger = Ledger(DAY)
        full = to_minutes(at(DAY, 20), ledger.base)
        ledger.loads[full:full + 60] = 1  # every minute of 20:00 already at capacity
        result = plan_users(candidates([("u", "c0", relevance)]), us, camps, plan_day=DAY, interactions=clicks,
                            history=ignored, ledger=ledger, options=PlanOptions(minute_capacity=1))
        return result.frame, result.stats.capacity_rehomed, result.stats.capacity_dropped

    strong, rehomed, dropped = plan(0.05)
    assert (rehomed, dropped) == (1, 0) and local(strong["send_at"][0], "UTC").hour in (19, 21)
    assert strong["expected_value"][0] > 0
    weak, rehomed, dropped = plan(0.02)  # worth sending at 20:00 only
    assert weak.is_empty() and (rehomed, dropped) == (0, 1)


def test_a_candidate_whose_expected_value_is_exactly_zero_is_not_sent() -> None:
    """Kept iff ``base x affinity - penalty > 0``: relevance 0.09 at priority weight 1, a flat affinity of
    1 (no interactions) and 3 ignored sends (penalty 3 x 0.03) give exactly 0, not worth a notification."""
    us = users([("u", "UTC", 5, None, None)])
    ignored = history([("u", "x", at(DAY - timedelta(days=1), 9 + j), False) for j in range(3)])
    camps = campaigns([("c0", 5, 0, None), ("x", 1, 0, None)])
    zero = plan_users(candidates([("u", "c0", 0.09)]), us, camps, plan_day=DAY, history=ignored).frame
    assert zero.is_empty()
    above = plan_users(candidates([("u", "c0", 0.0901)]), us, camps, plan_day=DAY, history=ignored).frame
    assert above["affinity"].to_list() == [1.0] and above["expected_value"][0] > 0


def test_a_credit_never_gives_a_campaign_more_than_its_budget() -> None:
    """Ledger.credit gives back what the budget counted and this run decides again, never past the budget."""
    from notify_core.scheduling.planner import Ledger

    ledger = Ledger(DAY, counts_planned=True)
    ledger.charge("c", 2, budget=5)
    ledger.credit("c", 4, budget=5)
    assert ledger.left("c", 5) == 5


def test_the_options_refuse_a_daily_maximum_above_the_platforms_five() -> None:
    from notify_core.errors import ValidationError

    assert PlanOptions(max_per_day=5).max_per_day == 5
    with pytest.raises(ValidationError, match="max_per_day"):
        PlanOptions(max_per_day=6)

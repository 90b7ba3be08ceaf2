"""Issue 20: one eligibility rule (notify_core/campaigns/eligibility.py) for serving, planning and the
evaluation. A table of campaigns x users with the answer written by hand; each of the three paths must
give exactly that answer, country targeting included (the planner used to ignore it)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import numpy as np
import polars as pl

from notify_core.campaigns.table import CampaignTable
from notify_core.evaluation.split import eligibility
from notify_core.recommend.recommender import UserContext, ineligible_codes
from notify_core.scheduling.candidates import drop_ineligible, eligible_campaigns
from notify_core.scheduling.service import campaigns_from_store, users_from_store
from notify_core.store import tables
from notify_core.store.sqlite import SqliteStore

DAY = date(2031, 5, 14)  # any day: everything below is relative to it

CAMPAIGNS = pl.DataFrame({
    "campaign_id": ["open", "paused", "future", "ended", "fr_only", "de_fr", "toys", "bare"],
    "status": ["active", "paused", "active", "active", "active", "active", "active", None],
    "start_date": [DAY - timedelta(days=10), None, DAY + timedelta(days=1), DAY - timedelta(days=30), None, None, None,
                   None],
    "end_date": [DAY + timedelta(days=10), None, None, DAY - timedelta(days=1), None, None, None, None],
    "target_countries": [[], [], [], [], ["France"], ["Germany", "France"], [], None],
    "category": ["home", "home", "home", "home", "home", "garden", "toys", None],
    "priority": [3, 3, 3, 3, 5, 2, 4, None], "cooldown_hours": [72] * 8, "daily_budget": [1000] * 8,
}, schema_overrides={"priority": pl.Int32, "cooldown_hours": pl.Int32, "daily_budget": pl.Int32})
USERS = pl.DataFrame({
    "user_id": ["fr_toyless", "de", "uk", "nowhere"],
    "country": ["France", "Germany", "United Kingdom", None],
    "opted_out_categories": [["toys"], [], ["garden"], None],
})
# The answer, by hand: rows = USERS, columns = CAMPAIGNS.
EXPECTED = {
    "fr_toyless": {"open", "fr_only", "de_fr", "bare"},
    "de": {"open", "de_fr", "toys", "bare"},
    "uk": {"open", "toys", "bare"},
    "nowhere": {"open", "toys", "bare"},
}


def test_the_evaluation_mask_is_the_rule() -> None:
    mask = eligibility(CAMPAIGNS, USERS, day=DAY)
    ids = CAMPAIGNS["campaign_id"].to_list()
    got = {u: {ids[c] for c in np.flatnonzero(mask[i])} for i, u in enumerate(USERS["user_id"].to_list())}
    assert got == EXPECTED


def test_serving_is_the_rule() -> None:
    table = CampaignTable.from_frame(CAMPAIGNS)
    rows = np.arange(len(table), dtype=np.int64)
    for user in USERS.iter_rows(named=True):
        context = UserContext(user_id=user["user_id"], country=user["country"],
                              opted_out=frozenset(user["opted_out_categories"] or ()), vector=None,
                              orders_by_product={}, last_sent={})
        codes = ineligible_codes(table, rows, context, now=datetime.combine(DAY, datetime.min.time(), UTC))
        assert {table.ids[r] for r in rows[codes == 0]} == EXPECTED[user["user_id"]], user["user_id"]


def test_planning_is_the_rule_country_targeting_included() -> None:
    pairs = pl.DataFrame([{"user_id": u, "campaign_id": c, "relevance": 0.5}
                          for u in USERS["user_id"] for c in CAMPAIGNS["campaign_id"]])
    kept = drop_ineligible(pairs.sample(fraction=1.0, shuffle=True, seed=3), users=USERS, campaigns=CAMPAIGNS,
                           day=DAY)
    got: dict[str, set[str]] = {u: set() for u in EXPECTED}
    for row in kept.iter_rows(named=True):
        got[row["user_id"]].add(row["campaign_id"])
    assert got == EXPECTED
    assert set(eligible_campaigns(CAMPAIGNS, DAY)["campaign_id"]) == {
        "open", "fr_only", "de_fr", "toys", "bare"}  # the user-independent half: status and dates


def test_planning_keeps_the_candidates_order_and_drops_unknown_campaigns() -> None:
    pairs = pl.DataFrame({"user_id": ["de", "de", "de", "uk"], "campaign_id": ["toys", "ghost", "open", "open"],
                          "relevance": [0.9, 0.8, 0.7, 0.6]})
    kept = drop_ineligible(pairs, users=USERS, campaigns=CAMPAIGNS, day=DAY)
    assert kept.rows() == [("de", "toys", 0.9), ("de", "open", 0.7), ("uk", "open", 0.6)]


def test_the_store_readers_carry_what_the_rule_needs(tmp_path) -> None:
    """The planner's Store readers bring country and targeting along (before: neither, so a re-plan from
    the Store could not honour targeting)."""
    store = SqliteStore(tmp_path / "s.sqlite")
    store.table(tables.USERS).put({"pk": "de", "sk": tables.PROFILE_SK, "user_id": "de", "country": "Germany",
                                   "timezone": "Europe/Berlin", "opted_out_categories": ["toys"]})
    store.table(tables.CAMPAIGNS).put({"pk": "fr_only", "sk": "campaign", "campaign_id": "fr_only",
                                       "target_countries": ["France"], "status": "active", "priority": 5})
    users = users_from_store(store, ["de"])
    campaigns = campaigns_from_store(store)
    assert users.row(0, named=True)["country"] == "Germany"
    assert campaigns.row(0, named=True)["target_countries"] == ["France"]
    pairs = pl.DataFrame({"user_id": ["de"], "campaign_id": ["fr_only"], "relevance": [1.0]})
    assert drop_ineligible(pairs, users=users, campaigns=campaigns, day=DAY).is_empty()
    store.close()

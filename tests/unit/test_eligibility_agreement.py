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


def _random_case(rng: np.random.Generator, *, with_profile: bool) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    countries = ["France", "Germany", "Spain", "Italy"]
    n_camps, n_users, n_pairs = int(rng.integers(1, 30)), int(rng.integers(1, 40)), int(rng.integers(1, 300))
    campaigns = pl.DataFrame({
        "campaign_id": [f"c{i}" for i in range(n_camps)],
        "status": rng.choice(["active", "active", "paused"], n_camps).tolist(),
        "start_date": [DAY + timedelta(days=int(d)) if d < 3 else None for d in rng.integers(-5, 6, n_camps)],
        "end_date": [DAY + timedelta(days=int(d)) if d > -2 else None for d in rng.integers(-5, 6, n_camps)],
        "target_countries": [rng.choice(countries, int(k), replace=False).tolist() if k else [] for k in
                             rng.integers(0, 3, n_camps)],
        "category": rng.choice(["home", "toys", "garden"], n_camps).tolist(),
    })
    columns: dict[str, object] = {"user_id": [f"u{i}" for i in rng.permutation(n_users)]}
    schema: dict[str, pl.DataType] = {"user_id": pl.String()}
    if with_profile:
        columns["country"] = [None if c == "none" else c for c in rng.choice([*countries, "none"], n_users).tolist()]
        categories = ["home", "toys", "garden", "other"]
        columns["opted_out_categories"] = [None if k < 0 else rng.choice(categories, int(k)).tolist()
                                           for k in rng.integers(-1, 3, n_users)]
        schema |= {"country": pl.String(), "opted_out_categories": pl.List(pl.String)}
    users = pl.DataFrame(columns, schema=schema)
    if with_profile and n_users > 1:  # a repeated user: the first row is the profile
        users = pl.concat([users, users.head(1).with_columns(pl.lit("Spain").alias("country"))])
    pairs = pl.DataFrame({  # some users and campaigns the frames do not hold
        "user_id": [f"u{i}" for i in rng.integers(0, n_users + 5, n_pairs)],
        "campaign_id": [f"c{i}" for i in rng.integers(0, n_camps + 3, n_pairs)],
        "relevance": rng.random(n_pairs),
    })
    return pairs, users, campaigns


def test_planning_filters_each_pair_exactly_as_the_rule_does_for_its_one_user() -> None:
    """drop_ineligible codes each user's profile once and looks the pairs up; this checks it against the rule
    applied pair by pair through the one-user path serving uses, on random catalogs: targeting, opt-outs,
    dates, paused campaigns, users without a profile, unknown users and campaigns, a repeated user."""
    from notify_core.campaigns.eligibility import ineligible_codes as rule

    rng = np.random.default_rng(20)
    for case in range(60):
        pairs, users, campaigns = _random_case(rng, with_profile=case % 3 != 0)
        table = CampaignTable.from_frame(campaigns)
        profiles: dict[str, dict[str, object]] = {}
        for row in users.iter_rows(named=True):
            profiles.setdefault(row["user_id"], row)
        expected = []
        for row in pairs.iter_rows(named=True):
            if row["campaign_id"] not in table.row_of:
                continue
            profile = profiles.get(row["user_id"], {})
            code = rule(table, np.array([table.row_of[row["campaign_id"]]]), day=DAY,
                        countries=profile.get("country"),  # type: ignore[arg-type]
                        opted_out=frozenset(profile.get("opted_out_categories") or ()))  # type: ignore[arg-type]
            if code[0] == 0:
                expected.append((row["user_id"], row["campaign_id"], row["relevance"]))
        kept = drop_ineligible(pairs, users=users, campaigns=campaigns, day=DAY)
        assert kept.rows() == expected, case


def test_a_campaign_runs_on_its_first_and_its_last_day() -> None:
    """start_date and end_date are both inclusive: a campaign starting or ending on the day is eligible, one
    that ended the day before or starts the day after is not."""
    from notify_core.campaigns.eligibility import available_on

    edges = pl.DataFrame({
        "campaign_id": ["starts", "ends", "ended", "not_yet"], "status": ["active"] * 4,
        "start_date": [DAY, DAY - timedelta(days=10), DAY - timedelta(days=10), DAY + timedelta(days=1)],
        "end_date": [DAY + timedelta(days=10), DAY, DAY - timedelta(days=1), DAY + timedelta(days=10)],
        "target_countries": [[], [], [], []], "category": ["home"] * 4,
        "priority": [3] * 4, "cooldown_hours": [0] * 4, "daily_budget": [None] * 4,
    }, schema_overrides={"priority": pl.Int32, "cooldown_hours": pl.Int32, "daily_budget": pl.Int32,
                         "target_countries": pl.List(pl.String)})
    assert available_on(CampaignTable.from_frame(edges), DAY).tolist() == [True, True, False, False]

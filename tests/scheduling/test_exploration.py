"""The campaign bandit (issue 19, item 6): bounded exploration, posterior-driven EV, determinism."""

from __future__ import annotations

import polars as pl
import pytest

from notify_core.delivery.feedback import add_campaign_counts
from notify_core.errors import ValidationError
from notify_core.scheduling import plan_users
from notify_core.scheduling.exploration import campaign_counts
from notify_core.scheduling.models import CAMPAIGN_COUNTS, ExplorationOptions, PlanOptions
from notify_core.scheduling.service import plan_and_store
from notify_core.store.sqlite import SqliteStore
from tests.scheduling.conftest import STORE_DAY, STORE_NOW, campaigns, candidates, users

OLD = [f"old{i}" for i in range(5)]
NEW = [f"new{i}" for i in range(5)]
N_USERS = 1000


def _world(cap: int = 3) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    ids = [f"u{i:04d}" for i in range(N_USERS)]
    u = users([(uid, "UTC", cap, None, None) for uid in ids])
    c = campaigns([(cid, 3, 0, None) for cid in OLD + NEW])
    rows = [(uid, cid, 0.8 - 0.01 * k) for uid in ids for k, cid in enumerate(OLD)]
    rows += [(uid, cid, 0.6 - 0.01 * k) for uid in ids for k, cid in enumerate(NEW)]
    return u, c, candidates(rows)


def _counts(rows: list[tuple[str, int, int]]) -> pl.DataFrame:
    return pl.DataFrame([dict(zip(CAMPAIGN_COUNTS, r, strict=True)) for r in rows], schema=CAMPAIGN_COUNTS)


def _opts(share: float) -> PlanOptions:
    return PlanOptions(exploration=ExplorationOptions(share=share))


def test_share_zero_reproduces_todays_plan_exactly() -> None:
    u, c, cands = _world()
    today = plan_users(cands, u, c, plan_day=STORE_DAY).frame
    off = plan_users(cands, u, c, plan_day=STORE_DAY, options=_opts(0.0)).frame
    assert off.equals(today)
    assert set(today["campaign_id"]) <= set(OLD)  # without exploration a new campaign never gets a slot


def test_exploration_share_is_bounded_and_reaches_new_campaigns() -> None:
    u, c, cands = _world()
    counts = _counts([(cid, 5000, 600) for cid in OLD])  # incumbents: well known, 12 % CTR
    plan = plan_users(cands, u, c, plan_day=STORE_DAY, options=_opts(0.1), campaign_counts=counts)
    total = plan.frame.height
    budget = int(0.1 * N_USERS * 3)
    assert plan.stats.exploration_slots <= budget
    assert plan.stats.exploration_slots <= 0.1 * total + 1
    on_new = int(plan.frame["campaign_id"].is_in(NEW).sum())
    assert 0 < on_new <= plan.stats.exploration_slots  # new campaigns only through exploration slots
    # the same inputs give the same plan (re-plans stay idempotent)
    again = plan_users(cands, u, c, plan_day=STORE_DAY, options=_opts(0.1), campaign_counts=counts)
    assert again.frame.equals(plan.frame)


def test_a_clicked_campaign_gets_more_slots_than_an_ignored_one() -> None:
    ids = [f"u{i:04d}" for i in range(400)]
    u = users([(uid, "UTC", 1, None, None) for uid in ids])
    c = campaigns([("clicked", 3, 0, None), ("ignored", 3, 0, None)])
    # the ignored one has the higher relevance: without counts it would take every slot
    cands = candidates([(uid, "clicked", 0.6) for uid in ids] + [(uid, "ignored", 0.7) for uid in ids])
    before = plan_users(cands, u, c, plan_day=STORE_DAY).frame
    assert set(before["campaign_id"]) == {"ignored"}
    counts = _counts([("clicked", 2000, 400), ("ignored", 2000, 0)])
    for share in (0.0, 0.1):
        after = plan_users(cands, u, c, plan_day=STORE_DAY, options=_opts(share), campaign_counts=counts).frame
        per = after.group_by("campaign_id").len().rows()
        got = dict(per)
        assert got.get("clicked", 0) > got.get("ignored", 0), (share, got)


def test_bad_counts_are_clipped_not_fatal() -> None:
    u, c, cands = _world(cap=2)
    bad = _counts([("old0", -5, 3), ("old1", 10, 99), ("unknown", 10, 1), ("new0", None, None)])  # type: ignore[list-item]
    plan = plan_users(cands, u, c, plan_day=STORE_DAY, options=_opts(0.05), campaign_counts=bad)
    assert plan.frame.height > 0 and plan.frame["expected_value"].is_finite().all()
    with pytest.raises(ValidationError):
        ExplorationOptions(share=0.9)
    with pytest.raises(ValidationError):
        ExplorationOptions(prior_strength=0)
    # an empty counts frame or one whose campaigns are all unknown changes nothing
    same = plan_users(cands, u, c, plan_day=STORE_DAY, options=_opts(0.0), campaign_counts=_counts([("x", 9, 1)]))
    assert same.frame.equals(plan_users(cands, u, c, plan_day=STORE_DAY).frame)


def test_plan_and_store_reads_the_counts_and_replans_idempotently(store: SqliteStore) -> None:
    u, c, cands = _world(cap=2)
    u, cands = u.head(200), cands.filter(pl.col("user_id").is_in(u.head(200)["user_id"].implode()))
    yesterday = (STORE_NOW.date()).isoformat()
    add_campaign_counts(store, {("new0", yesterday): 1000, ("old0", yesterday): 1000})
    add_campaign_counts(store, {("new0", yesterday): 400, ("old0", yesterday): 20}, field="clicked")
    counts = campaign_counts(store, OLD + NEW, plan_day=STORE_DAY)
    assert sorted(counts.rows()) == [("new0", 1000, 400), ("old0", 1000, 20)]
    opts = _opts(0.1)
    first = plan_and_store(store, users=u, campaigns=c, candidates=cands, plan_day=STORE_DAY, options=opts)
    assert first.writes.inserted == first.stats.notifications > 0
    # new0 clicks 40 % against a 21 % platform average: its lift (1.75) puts it above the incumbents
    items = store.table("plans").query("u0000")
    assert "new0" in {i["campaign_id"] for i in items}
    second = plan_and_store(store, users=u, campaigns=c, candidates=cands, plan_day=STORE_DAY, options=opts)
    assert second.writes.written == 0 and second.writes.unchanged == first.writes.inserted

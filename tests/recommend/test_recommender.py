"""Unit tests of candidate generation, each eligibility filter, the blended score and the fallback."""

from __future__ import annotations

import math
import subprocess
import sys
from datetime import timedelta

import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from notify_core.errors import NotFoundError, ValidationError
from notify_core.recommend import scoring
from notify_core.recommend.index import COPURCHASE_SCHEMA, campaign_key, campaign_keys, load_version
from notify_core.recommend.recommender import ScoreWeights, sent_item
from notify_core.store import tables
from tests.recommend.conftest import NOW, World


def ids(world: World, user: str = "u1", **kwargs: object) -> list[str]:
    return [r.campaign_id for r in world.recommender.recommend(user, **kwargs).items]  # type: ignore[arg-type]


def test_the_nearest_campaign_ranks_first_with_scores_in_order(world: World) -> None:
    result = world.recommender.recommend("u1")
    assert result.strategy == "personalised" and result.index_version == world.versions[-1]
    assert len(result.items) == 10
    assert result.items[0].campaign_id == "c000"
    scores = [r.score for r in result.items]
    assert scores == sorted(scores, reverse=True)


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"status": "paused"}, "inactive"),
        ({"end_date": (NOW - timedelta(days=1)).date()}, "out_of_dates"),
        ({"start_date": (NOW + timedelta(days=1)).date()}, "out_of_dates"),
        ({"target_countries": ["France"]}, "not_targeted"),
        ({"category": "toys"}, "opted_out"),
    ],
    ids=["inactive", "expired", "not-started", "not-targeted", "opted-out"],
)
def test_each_filter_removes_the_top_campaign(world: World, changes: dict[str, object], reason: str) -> None:
    assert ids(world)[0] == "c000"
    world.update_campaign("c000", **changes)
    result = world.recommender.recommend("u1")
    assert "c000" not in [r.campaign_id for r in result.items]
    assert result.filtered.get(reason, 0) >= 1


def test_targeting_keeps_campaigns_for_the_users_country(world: World) -> None:
    world.update_campaign("c000", target_countries=["United Kingdom", "France"])
    assert ids(world)[0] == "c000"


def test_already_sent_within_cooldown_is_filtered_and_after_it_is_back(world: World) -> None:
    sends = world.store.table(tables.SENDS)
    sends.put(sent_item("u1", "c000", NOW - timedelta(hours=1)))
    result = world.recommender.recommend("u1", now=NOW)
    assert "c000" not in [r.campaign_id for r in result.items] and result.filtered["recently_sent"] == 1
    # the campaign's cooldown is 72 h: a send 100 h ago no longer blocks it
    world.store.table(tables.SENDS).delete("u1", tables.send_sk(NOW - timedelta(hours=1), "c000"))
    sends.put(sent_item("u1", "c000", NOW - timedelta(hours=100)))
    assert ids(world)[0] == "c000"


def test_a_cooldown_longer_than_two_weeks_is_honoured_to_its_end(world: World) -> None:
    """The sends were read 14 days back whatever the cooldowns: a 20-day cooldown ended after 14 (fails on
    the code before). Now back to the longest cooldown the served campaigns have."""
    world.update_campaign("c000", cooldown_hours=20 * 24)
    world.store.table(tables.SENDS).put(sent_item("u1", "c000", NOW - timedelta(days=16)))
    result = world.recommender.recommend("u1", now=NOW)
    assert "c000" not in [r.campaign_id for r in result.items] and result.filtered["recently_sent"] == 1
    later = world.recommender.recommend("u1", now=NOW + timedelta(days=5))  # 21 days after the send
    assert later.items[0].campaign_id == "c000" and "recently_sent" not in later.filtered


def test_repeat_purchase_candidates_are_added_and_boosted(world: World) -> None:
    # u1 bought p001 (promoted by c001) once; c001's text is far from u1's vector (cosine ~0.14)
    narrow = world.recommender_with(candidates=3, ranker=None)  # ANN yields just 3 candidates
    items = narrow.recommend("u1", limit=20).items
    c001 = next(r for r in items if r.campaign_id == "c001")  # a candidate only through the matrix row
    assert "repeat_purchase" in c001.reasons and "similar" not in c001.reasons
    w = ScoreWeights()
    assert c001.affinity == pytest.approx(math.log1p(1) / math.log1p(w.affinity_saturation))
    assert c001.score == pytest.approx(w.similarity * c001.similarity + w.affinity * c001.affinity
                                       + w.priority * (2 - 1) / 4)

    def rank(weights: ScoreWeights) -> int:
        ranked = world.recommender_with(weights=weights).recommend("u1", limit=60)
        return [r.campaign_id for r in ranked.items].index("c001")

    assert rank(ScoreWeights()) < rank(ScoreWeights(affinity=0.0))


def test_copurchase_candidates_are_added_and_scored(world: World) -> None:
    # buyers of p001 (u1's product) also buy p050 and, less, p052; c050/c052 promote them, far from u1's text
    neighbours = pl.DataFrame({"product_id": ["p001", "p001"], "neighbour": ["p050", "p052"],
                               "similarity": [0.8, 0.4]}, schema=COPURCHASE_SCHEMA)
    version = world.build_version(copurchase=neighbours)
    world.holder.refresh(force=True)
    assert world.holder.snapshot().version == version
    narrow = world.recommender_with(candidates=3, ranker=None)  # ANN yields just 3 candidates
    items = {r.campaign_id: r for r in narrow.recommend("u1", limit=20).items}
    c050, c052 = items["c050"], items["c052"]  # candidates only through the co-purchase map
    assert "copurchase" in c050.reasons and "similar" not in c050.reasons and "repeat_purchase" not in c050.reasons
    assert c050.copurchase == pytest.approx(1.0) and c052.copurchase == pytest.approx(0.5)  # / the user's best
    w = ScoreWeights()
    assert c050.score == pytest.approx(scoring.blend(similarity=c050.similarity, affinity=0.0, priority=1,
                                                     copurchase=1.0, weights=w.blend()))
    assert c050.score == pytest.approx(c050.similarity + w.copurchase * 1.0 + w.priority * (1 - 1) / 4)
    off = world.recommender_with(candidates=3, weights=ScoreWeights(copurchase=0.0))
    assert "c050" not in {r.campaign_id for r in off.recommend("u1", limit=20).items}
    assert world.recommender.recommend("u1").as_dict()["recommendations"][0]["copurchase"] >= 0.0


def test_the_ranker_scores_copurchase_with_the_raw_bm25_strength(world: World) -> None:
    """The ranker's ``bm25`` feature: distinct orders x neighbour similarity, before the per-user scaling
    (implicit's BM25 ``recommend`` score, as the evaluation's ``Signals.bm25``)."""
    neighbours = pl.DataFrame({"product_id": ["p001", "p001"], "neighbour": ["p050", "p052"],
                               "similarity": [0.8, 0.4]}, schema=COPURCHASE_SCHEMA)
    world.build_version(copurchase=neighbours)
    world.holder.refresh(force=True)
    base = world.holder.snapshot().base
    assert base is not None and base.copurchase_matrix is not None  # built with the version, not per request
    world.store.table(tables.USER_PRODUCT).put({"pk": "u1", "sk": "p001", "user_id": "u1", "product_id": "p001",
                                                "order_count": 3})
    ranker = scoring.LinearRanker(coefficients=(0.0,) * 11 + (2.0, 5.0), intercept=0.0)  # bm25 terms only
    items = {r.campaign_id: r for r in world.recommender_with(candidates=3, ranker=ranker)
             .recommend("u1", limit=60, now=NOW).items}
    assert items["c050"].score == pytest.approx(2.0 * math.log1p(3 * 0.8))  # a new item: no repeat_x_bm25
    assert items["c052"].score == pytest.approx(2.0 * math.log1p(3 * 0.4))
    assert items["c050"].copurchase == pytest.approx(1.0) and items["c052"].copurchase == pytest.approx(0.5)


def test_a_version_without_a_neighbour_map_loads_with_no_copurchase(world: World) -> None:
    loaded = load_version(world.artefacts, world.versions[-1])  # the world's versions ship no copurchase file
    assert loaded.copurchase == {} and loaded.copurchase_matrix is None
    assert all(r.copurchase == 0.0 and "copurchase" not in r.reasons
               for r in world.recommender.recommend("u1", limit=20).items)


def test_priority_breaks_near_ties(world: World) -> None:
    w = ScoreWeights(similarity=0.0, affinity=0.0, priority=1.0)
    items = world.recommender_with(weights=w).recommend("u1").items
    priorities = [int(world.campaigns.filter(world.campaigns["campaign_id"] == r.campaign_id)["priority"][0])
                  for r in items]
    assert priorities == sorted(priorities, reverse=True)


def test_users_without_a_vector_get_popular_campaigns_of_their_country_first(world: World) -> None:
    result = world.recommender.recommend("u_new")
    assert result.strategy == "fallback"
    assert [r.campaign_id for r in result.items] == ["c010", "c020", "c011", "c021"][:len(result.items)] \
        or [r.campaign_id for r in result.items][0] == "c010"
    assert all("popular" in r.reasons for r in result.items)


def test_fallback_still_applies_filters(world: World) -> None:
    world.update_campaign("c010", status="paused")
    assert "c010" not in ids(world, "u_new")


def test_unknown_user_and_bad_limit(world: World) -> None:
    with pytest.raises(NotFoundError):
        world.recommender.recommend("nobody")
    for limit in (0, 101):
        with pytest.raises(ValidationError):
            world.recommender.recommend("u1", limit=limit)
    assert len(ids(world, limit=3)) == 3


def test_batched_recommendations_equal_one_request_per_user(world: World) -> None:
    """recommend_many (batched ANN searches, what scheduling calls) ranks exactly as single requests do;
    unknown users are skipped, a user without a vector gets the fallback."""
    world.store.table(tables.SENDS).put(sent_item("u2", "c001", NOW - timedelta(hours=1)))
    batch = world.recommender.recommend_many(["u1", "nobody", "u_new", "u2", "u1"], limit=7, now=NOW)
    assert [r.user_id for r in batch] == ["u1", "u_new", "u2"]
    for got in batch:
        single = world.recommender.recommend(got.user_id, limit=7, now=NOW)
        assert got.items == single.items and got.filtered == single.filtered
        assert got.strategy == single.strategy and got.candidates == single.candidates
    assert batch[1].strategy == "fallback" and batch[2].filtered.get("recently_sent") == 1


def test_keys_are_stable_across_processes_and_order() -> None:
    code = "from notify_core.recommend.index import campaign_key; print(campaign_key('restock-85123a'))"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert int(other) == campaign_key("restock-85123a")
    forward = campaign_keys(["a", "b", "c"]).tolist()
    assert campaign_keys(["c", "b", "a"]).tolist() == forward[::-1]


@given(st.lists(st.text(min_size=1, max_size=30), min_size=1, max_size=50, unique=True))
def test_keys_fit_63_bits_and_do_not_collide(values: list[str]) -> None:
    keys = [campaign_key(v) for v in values]
    assert all(0 <= k < 2**63 for k in keys)
    assert len(set(keys)) == len(keys)


def test_dates_are_inclusive(world: World) -> None:
    today = NOW.date()
    world.update_campaign("c000", start_date=today, end_date=today)
    assert ids(world)[0] == "c000"


def test_campaign_rows_are_served_from_the_index_version_not_the_store(world: World) -> None:
    """Eligibility data ships with the version: serving works (filters included) with no campaign rows in
    the Store, so a request at 200k campaigns never waits on ~150 campaign reads."""
    before = world.recommender.recommend("u1")
    table = world.store.table(tables.CAMPAIGNS)
    for item in list(table.scan()):
        table.delete(item["pk"], item["sk"])
    after = world.recommender.recommend("u1")
    assert [r.campaign_id for r in after.items] == [r.campaign_id for r in before.items]
    assert after.filtered == before.filtered


def test_the_learned_ranker_scores_with_the_evaluations_functions(world: World) -> None:
    """Serving's ranker path = scoring.ranker_features + ranker_score, the functions the evaluation calls:
    recency from the matrix row's last order, popularity share of the overall list, popular candidates."""
    world.store.table(tables.USER_PRODUCT).put({"pk": "u1", "sk": "p001", "user_id": "u1", "product_id": "p001",
                                                "order_count": 3,
                                                "last_purchase_ts": (NOW - timedelta(days=15)).isoformat()})
    ranker = scoring.LinearRanker(coefficients=(1.0, 2.0, 1.5, 1.0, 3.0, 0.1, 0.4, -0.5, 0.3, -1.0, 0.2, 0.7, -0.2),
                                  intercept=-1.0)
    served = world.recommender_with(candidates=3, ranker=ranker)
    items = {r.campaign_id: r for r in served.recommend("u1", limit=60, now=NOW).items}
    c001 = items["c001"]  # promotes p001: bought 3 times, last 15 days ago
    expected = scoring.ranker_score(ranker, scoring.ranker_features(
        campaign_orders=3, days_since=15.0, copurchase=0.0, similarity=c001.similarity, popularity=0.0, priority=2,
        bm25=0.0))
    assert c001.score == pytest.approx(float(expected))
    c020 = items["c020"]  # the overall list's top: a candidate through popularity alone
    share = scoring.popularity_share(30.0, 30.0)
    assert share == pytest.approx(1.0)
    priority = int(world.campaigns.filter(pl.col("campaign_id") == "c020")["priority"][0])
    assert c020.score == pytest.approx(float(scoring.ranker_score(ranker, scoring.ranker_features(
        campaign_orders=0, days_since=float("inf"), copurchase=0.0, similarity=c020.similarity, popularity=share,
        priority=priority, bm25=0.0))))
    older = world.recommender_with(candidates=3, ranker=ranker)
    world.store.table(tables.USER_PRODUCT).put({"pk": "u1", "sk": "p001", "user_id": "u1", "product_id": "p001",
                                                "order_count": 3,
                                                "last_purchase_ts": (NOW - timedelta(days=90)).isoformat()})
    stale = next(r for r in older.recommend("u1", limit=60, now=NOW).items if r.campaign_id == "c001")
    assert stale.score < c001.score  # recency decays with the last order's age


def test_serving_ranks_with_the_shipped_ranker_by_default(world: World) -> None:
    assert world.recommender_with().ranker == scoring.SERVING_RANKER
    assert world.recommender_with(weights=ScoreWeights()).ranker is None


def test_a_users_batched_answer_does_not_depend_on_the_batch_around_it(world: World) -> None:
    """recommend_many searches fixed blocks of SEARCH_BLOCK asked users on one thread, so a list cut at a
    multiple of the block (the candidate workers' slices) answers bit for bit as the whole list. Searched as
    one batch, faiss scanned a batch of under ~330 queries query by query and a bigger one with BLAS, and the
    two round differently: on the demo 178 of 181 users' relevances moved when their chunk was cut in two.
    The index here is the demo's shape (1,600 campaigns x 384), where the two paths disagree."""
    import numpy as np
    import polars as pl

    from notify_core.embeddings.store import USER, persist, state_schema, vector_series
    from notify_core.recommend.recommender import SEARCH_BLOCK
    from tests.recommend.conftest import T0, campaign_rows

    dim, rng = 384, np.random.default_rng(5)
    centres = rng.normal(size=(40, dim)).astype(np.float32)
    camps = campaign_rows(1600)
    world.build_version(campaigns=camps, vectors=centres[np.arange(1600) % 40]
                        + rng.normal(scale=0.5, size=(1600, dim)).astype(np.float32))
    n = SEARCH_BLOCK + 300  # a full block, then one short enough for faiss to scan query by query
    ids = [f"v{i:05d}" for i in range(n)]
    vectors = centres[rng.integers(0, 40, n)] + rng.normal(scale=0.7, size=(n, dim)).astype(np.float32)
    schema = state_schema(USER, dim)
    persist(world.store, USER, pl.DataFrame({"id": ids, "content_hash": ids, "model": [world.embedder.model_id] * n,
                                             "updated_at": [T0] * n}).with_columns(
        vector_series(vectors)).select(list(schema)).cast(schema))
    world.store.table(tables.USERS).batch_put([{"pk": u, "sk": tables.PROFILE_SK, "user_id": u} for u in ids])

    def answers(users: list[str]) -> list[tuple[str, list[tuple[str, float, float]]]]:
        return [(r.user_id, [(i.campaign_id, i.score, i.similarity) for i in r.items])
                for r in world.recommender.recommend_many(users, limit=10, now=NOW)]

    whole = answers(ids)
    assert len(whole) == n and all(items and items[0][2] > 0 for _, items in whole)  # ranked from the 384-d index
    assert answers(ids[:SEARCH_BLOCK]) + answers(ids[SEARCH_BLOCK:]) == whole

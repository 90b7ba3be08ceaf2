"""The per-worker cache of a user's time-independent ranking work (notify_core/recommend/work_cache.py).

Every test compares a recommender with the cache against one without it (the cold path) on the same
Store, index and clock: the answers must be equal to the last bit, whatever ``now`` the cached work was
computed at, and a change of the user's purchases or vector, or a new snapshot, must be seen at once.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import numpy as np
import polars as pl
import pytest

from notify_core.recommend.index import COPURCHASE_SCHEMA
from notify_core.recommend.recommender import Recommender
from notify_core.recommend.work_cache import WorkCache, WorkInputs
from notify_core.store import tables
from tests.recommend.conftest import NOW, World

USERS = ("u1", "u2", "u_new")


def _with_copurchase(world: World) -> None:
    neighbours = pl.DataFrame({"product_id": ["p001", "p001", "p002", "p050"],
                               "neighbour": ["p050", "p052", "p003", "p004"],
                               "similarity": [0.8, 0.4, 0.6, 0.5]}, schema=COPURCHASE_SCHEMA)
    world.build_version(copurchase=neighbours)
    world.holder.refresh(force=True)


def _answer(rec: Recommender, user: str, now: Any) -> tuple[Any, ...]:
    result = rec.recommend(user, limit=20, now=now)
    # the reply as sent plus the unrounded floats: equal only if the ranking did the same arithmetic
    return (result.as_dict(), [(r.campaign_id, r.score, r.similarity, r.affinity, r.copurchase, r.reasons)
                               for r in result.items])


def _pair(world: World, **options: Any) -> tuple[Recommender, Recommender]:
    return world.recommender_with(cache_users=64, **options), world.recommender_with(**options)


@pytest.mark.parametrize("ranker", ["default", None], ids=["learned-ranker", "blend"])
def test_cached_answers_equal_the_cold_path_at_any_now(world: World, ranker: Any) -> None:
    _with_copurchase(world)
    cached, cold = _pair(world, ranker=ranker)
    for user in USERS:  # the work is computed at NOW (and kept from the second request on) ...
        cached.recommend(user, limit=20, now=NOW)
    assert cached.work_cache is not None and len(cached.work_cache) == 0  # a first request keeps nothing
    for user in USERS:
        cached.recommend(user, limit=20, now=NOW)
    assert len(cached.work_cache) == len(USERS)
    # ... and served at other times: cooldowns, campaign dates and recency move, the cached part does not
    for now in (NOW, NOW + timedelta(days=5), NOW - timedelta(days=400), NOW + timedelta(hours=1)):
        for user in USERS:
            assert _answer(cached, user, now) == _answer(cold, user, now)
    assert cached.work_cache.hits >= 4 * len(USERS)


def test_a_new_purchase_is_seen_at_once(world: World) -> None:
    _with_copurchase(world)
    cached, cold = _pair(world)
    _answer(cached, "u1", NOW)
    before = _answer(cached, "u1", NOW)  # kept
    misses = cached.work_cache.misses if cached.work_cache else 0
    # u1 buys p050 twice (promoted by c050; its co-purchase neighbour p004 by c004): the Store changes
    bought = (NOW - timedelta(days=3)).isoformat()
    world.store.table(tables.USER_PRODUCT).put({"pk": "u1", "sk": "p050", "user_id": "u1", "product_id": "p050",
                                                "order_count": 2, "last_purchase_ts": bought})
    after = _answer(cached, "u1", NOW)
    assert after == _answer(cold, "u1", NOW)
    assert after != before
    assert "repeat_purchase" in next(r for r in after[1] if r[0] == "c050")[5]
    assert cached.work_cache is not None and cached.work_cache.misses == misses + 1
    # one more order of a product already bought changes the key too (the counts are part of it)
    world.store.table(tables.USER_PRODUCT).put({"pk": "u1", "sk": "p050", "user_id": "u1", "product_id": "p050",
                                                "order_count": 3})
    assert _answer(cached, "u1", NOW) == _answer(cold, "u1", NOW)
    assert cached.work_cache.misses == misses + 2


def test_a_new_user_vector_is_seen_at_once(world: World) -> None:
    cached, cold = _pair(world, ranker=None)  # the blend: the nearest campaign first
    _answer(cached, "u1", NOW)
    before = _answer(cached, "u1", NOW)  # kept
    assert before[1][0][0] == "c000"
    world.set_user_vector("u1", world.vectors[2])  # u1 now looks like c002 (a click moved their embedding)
    after = _answer(cached, "u1", NOW)
    assert after == _answer(cold, "u1", NOW) and after != before
    assert after[1][0][0] != "c000" and "c002" in [r[0] for r in after[1][:3]]


def test_a_new_index_version_or_upsert_empties_the_cache(world: World) -> None:
    cached, cold = _pair(world, ranker=None)
    for user in USERS * 2:
        cached.recommend(user, now=NOW)
    assert cached.work_cache is not None and len(cached.work_cache) == len(USERS)
    world.update_campaign("c000", status="paused")  # a new version published and served
    assert _answer(cached, "u1", NOW) == _answer(cold, "u1", NOW)
    assert len(cached.work_cache) == 0  # the old snapshot's entries went with it
    assert "c000" not in [r[0] for r in _answer(cached, "u1", NOW)[1]]
    assert len(cached.work_cache) == 1


def test_the_batch_path_is_unchanged_by_the_cache(world: World) -> None:
    _with_copurchase(world)
    cached, cold = _pair(world)
    many = cached.recommend_many(list(USERS), limit=20, now=NOW)
    assert [m.as_dict() for m in many] == [cold.recommend(u, limit=20, now=NOW).as_dict() for u in USERS]


def test_cached_arrays_are_read_only(world: World) -> None:
    _with_copurchase(world)
    cached = world.recommender_with(cache_users=8)
    cached.recommend("u1", now=NOW)
    cached.recommend("u1", now=NOW)
    assert cached.work_cache is not None
    (work,) = cached.work_cache.values()
    for name in ("ann_rows", "ann_sims", "repeat_rows", "per_product", "repeat_orders", "co_rows", "co_values",
                 "co_raw", "top_co"):
        array = getattr(work, name)
        assert not array.flags.writeable, name
        with pytest.raises(ValueError, match="read-only"):
            array[...] = 0


def test_a_first_request_keeps_nothing_and_one_off_users_never_evict_the_kept(world: World) -> None:
    cache: WorkCache[str] = WorkCache(capacity=2)
    assert not cache.admits("a") and cache.admits("a")  # noted on the first sighting, kept on the second
    snap = object()
    same = WorkInputs.of(None, {"p1": 1})
    cache.get(snap, "a", same)
    cache.put(snap, "a", same, "A")
    for i in range(100):  # a rotation of one-off users: noted, never kept, the kept entry stays
        assert not cache.admits(f"one-off-{i}")
    assert cache.get(snap, "a", same) == "A" and len(cache) == 1
    assert not cache.admits("one-off-0")  # the doorkeeper is bounded (the capacity): long gone
    cached = world.recommender_with(cache_users=8)
    cached.recommend("u1", now=NOW)
    assert cached.work_cache is not None and len(cached.work_cache) == 0 and cached.work_cache.misses == 1


def test_the_cache_is_bounded_least_recently_used_first_and_compares_inputs_in_full() -> None:
    cache: WorkCache[str] = WorkCache(capacity=2)
    snap, other = object(), object()
    same = WorkInputs.of(np.ones(4, dtype=np.float32), {"p1": 1, "p2": 3})
    assert cache.get(snap, "a", same) is None
    cache.put(snap, "a", same, "A")
    cache.put(snap, "b", same, "B")
    assert cache.get(snap, "a", WorkInputs.of(np.ones(4, dtype=np.float32), {"p1": 1, "p2": 3})) == "A"
    cache.put(snap, "c", same, "C")  # b, the least recently used, goes
    assert cache.get(snap, "b", same) is None and cache.get(snap, "a", same) == "A" and len(cache) == 2
    # any change of the inputs is a miss: a count, a product, the order of the products, the vector
    for changed in (WorkInputs.of(np.ones(4, dtype=np.float32), {"p1": 1, "p2": 4}),
                    WorkInputs.of(np.ones(4, dtype=np.float32), {"p1": 1, "p2": 3, "p3": 1}),
                    WorkInputs.of(np.ones(4, dtype=np.float32), {"p2": 3, "p1": 1}),
                    WorkInputs.of(np.full(4, 2.0, dtype=np.float32), {"p1": 1, "p2": 3}),
                    WorkInputs.of(None, {"p1": 1, "p2": 3})):
        assert cache.get(snap, "a", changed) is None
    cache.put(snap, "a", WorkInputs.of(None, {}), "A2")  # the user's newer work replaces the older
    assert cache.get(snap, "a", same) is None and cache.get(snap, "a", WorkInputs.of(None, {})) == "A2"
    assert cache.get(other, "a", same) is None and len(cache) == 0  # another snapshot: emptied
    cache.put(snap, "a", same, "stale")  # a request that ranked on the old snapshot keeps nothing
    assert len(cache) == 0
    with pytest.raises(ValueError, match="capacity"):
        WorkCache(capacity=0)

"""recommend_many ranks a block of users in one set of array operations: each user's answer must be, to the
bit, the one a single request gives (every score, cosine, reason, filter count and the order)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from notify_core.errors import NotifyError
from notify_core.recommend import scoring
from notify_core.recommend.index import COPURCHASE_SCHEMA
from notify_core.recommend.recommender import (
    BLOCK_FROM,
    RankedColumns,
    Recommendations,
    Recommender,
    UserContext,
    _best_of_block,
    _best_rows,
    _days_since_many,
    _sort_key,
    _Timestamps,
    sent_item,
)
from notify_core.recommend.repeat_order import repeats_in_frequency_order, repeats_in_frequency_order_by_user
from notify_core.store import tables
from tests.recommend.conftest import NOW, World, campaign_rows

COUNTRIES = ("United Kingdom", "France", "Germany", None)
OPT_OUTS: tuple[list[str], ...] = ([], ["toys"], ["kitchen", "party"])


def _shop(world: World, *, users: int, seed: int) -> list[str]:
    """A catalogue with targeting and a paused campaign, a co-purchase map over its products, and users with
    every input the ranking reads: orders (some of them recent), sends inside and outside the cooldown,
    countries, opt-outs, and some without a vector."""
    rng = np.random.default_rng(seed)
    camps = campaign_rows(60).with_columns(
        pl.when(pl.col("campaign_id").is_in(["c003", "c017", "c031"])).then(pl.lit(["France"]))
        .otherwise(pl.col("target_countries")).alias("target_countries"),
        pl.when(pl.col("campaign_id") == "c008").then(pl.lit("paused")).otherwise(pl.col("status")).alias("status"),
        # several campaigns promote one product: the distinct-products walk has something to skip
        pl.Series("product_ids", [[f"p{i % 45:03d}", f"p{(i * 7) % 45:03d}"] for i in range(60)]))
    pairs = [(f"p{a:03d}", f"p{b:03d}", float(s)) for a in range(45) for b, s in
             zip(rng.choice(45, size=8, replace=False), rng.integers(1, 9, size=8) / 8, strict=True) if a != b]
    world.campaigns = camps
    world.build_version(campaigns=camps, copurchase=pl.DataFrame(
        {"product_id": [a for a, _, _ in pairs], "neighbour": [b for _, b, _ in pairs],
         "similarity": [s for _, _, s in pairs]}, schema=COPURCHASE_SCHEMA))
    world.holder.refresh(force=True)
    ids = [f"b{i:03d}" for i in range(users)]
    profiles, orders, sends = [], [], []
    for i, user in enumerate(ids):
        profiles.append({"pk": user, "sk": tables.PROFILE_SK, "user_id": user, "country": COUNTRIES[i % 4],
                         "opted_out_categories": OPT_OUTS[i % 3]})
        for p in rng.choice(50, size=int(rng.integers(0, 12)), replace=False).tolist():  # p045..: no campaign
            last = NOW - timedelta(days=float(rng.integers(1, 400)), hours=float(rng.random()))
            orders.append({"pk": user, "sk": f"p{p:03d}", "user_id": user, "product_id": f"p{p:03d}",
                           "order_count": int(rng.integers(1, 6)),
                           **({"last_purchase_ts": last.isoformat()} if i % 5 else {})})
        for c in rng.choice(60, size=int(rng.integers(0, 4)), replace=False).tolist():
            sends.append(sent_item(user, f"c{c:03d}", NOW - timedelta(hours=float(rng.choice([1, 50, 100, 300])))))
        if i % 6:
            world.set_user_vector(user, world.vectors[i % 60] + rng.normal(scale=0.3, size=world.vectors.shape[1]))
    world.store.table(tables.USERS).batch_put(profiles)
    world.store.table(tables.USER_PRODUCT).batch_put(orders)
    world.store.table(tables.SENDS).batch_put(sends)
    return ids


def _answer(r: Any) -> tuple[Any, ...]:
    return r.user_id, r.strategy, r.index_version, r.candidates, dict(r.filtered), r.items


def _columns(ranked: RankedColumns) -> tuple[list[str], list[str], list[float]]:
    return ranked.user_ids, ranked.campaign_ids, ranked.scores.tolist()


@pytest.mark.parametrize(("limit", "sparse_from"), [(5, None), (20, None), (40, None), (20, 1)])
def test_a_block_of_users_ranks_each_as_a_single_request_does(world: World, monkeypatch: pytest.MonkeyPatch,
                                                             limit: int, sparse_from: int | None) -> None:
    """Against single requests, the reference (one ANN query, one user's array operations; on this small index
    faiss answers one query and a batch with the same bits): the same answer for each user. ``limit`` 40
    leaves many users with fewer eligible candidates (the popular fill, which the block hands to the one-user
    ranking); 5 leaves none. A filter, a lookup or a sum that mixed users up, or took another order, fails.
    ``sparse_from`` 1: the block's co-purchase sums by scipy's product, as a planning block of hundreds does."""
    if sparse_from is not None:
        monkeypatch.setattr(scoring, "SPARSE_PRODUCT_CELLS", sparse_from)
    ids = _shop(world, users=60, seed=limit)
    ranker = world.recommender_with()
    assert ranker.ranker is scoring.SERVING_RANKER
    single = [_answer(ranker.recommend(u, limit=limit, now=NOW)) for u in ids]
    calls: list[str] = []
    one_user = Recommender._rank

    def counted(self: Recommender, snapshot: Any, user: Any, work: Any, **kw: Any) -> Any:
        calls.append(user.user_id)
        return one_user(self, snapshot, user, work, **kw)

    monkeypatch.setattr(Recommender, "_rank", counted)
    answers = ranker.recommend_many(ids, limit=limit, now=NOW)
    block = [_answer(r) for r in answers]
    assert block == single
    assert len(calls) < len(ids)  # the block ranked the others itself
    assert _columns(ranker.rank_many(ids, limit=limit, now=NOW)) == _columns(RankedColumns.of(answers))
    assert {a[1] for a in block} == {"personalised", "fallback"}
    assert any(a[4].get("recently_sent") for a in block) and any(a[4].get("not_targeted") for a in block)
    assert any(a[4].get("opted_out") for a in block) and any(a[4].get("inactive") for a in block)
    assert any("copurchase" in i.reasons for a in block for i in a[5])
    assert any("repeat_purchase" in i.reasons for a in block for i in a[5])


def test_coalesced_asks_are_answered_as_each_lone_request(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """``recommend_each`` (the serving batch): each ask's answer is its lone ``recommend``'s, whatever else was
    asked with it: the same user twice, several limits, an unknown user and a bad limit (their errors in their
    own places), and a lone ask. Users first seen are ranked as one block a limit; users whose work is cached
    are ranked on it (no block: session 32 measured a block of 2-3 at 1.5x a cached request's CPU); fewer than
    BLOCK_FROM uncached users of a limit are worked out one by one."""
    ids = _shop(world, users=44, seed=7)
    ranker = world.recommender_with(cache_users=64)
    assert ranker.work_cache is not None
    asks = [(u, 10 if i % 4 else 3) for i, u in enumerate(ids[:40])] + [(ids[0], 10), ("nobody", 10), (ids[1], 0)]
    blocks: list[int] = []
    rank_users = Recommender._rank_users

    def counted(self: Recommender, snapshot: Any, users: Any, **kw: Any) -> Any:
        blocks.append(len(users))
        return rank_users(self, snapshot, users, **kw)

    def check(answers: list[Any], asked: list[tuple[str, int]]) -> None:
        for (user, limit), answer in zip(asked, answers, strict=True):
            try:
                expected: Any = _answer(cold.recommend(user, limit=limit, now=NOW))
            except NotifyError as exc:
                assert type(answer) is type(exc) and str(answer) == str(exc)
                continue
            assert isinstance(answer, Recommendations) and _answer(answer) == expected

    cold = world.recommender_with()  # the reference: no cache, each user alone
    monkeypatch.setattr(Recommender, "_rank_users", counted)
    check(ranker.recommend_each(asks, now=NOW), asks)
    assert sorted(blocks) == [10, 31]  # one block a limit: 30 users and ids[0] again at 10; 10 users at 3
    assert len(ranker.work_cache) == 0  # first sightings: noted, nothing kept
    check(ranker.recommend_each(asks, now=NOW), asks)  # second sightings: each worked out alone and kept
    assert len(blocks) == 2 and len(ranker.work_cache) == 40
    hits = ranker.work_cache.hits
    check(ranker.recommend_each(asks, now=NOW), asks)  # every user cached: ranked on their cached work
    assert len(blocks) == 2 and ranker.work_cache.hits == hits + 40
    mixed = [(u, 10) for u in ids[38:44]]  # 2 cached users and 4 never seen: the 4 as one block
    check(ranker.recommend_each(mixed, now=NOW), mixed)
    assert blocks[2:] == [4] and BLOCK_FROM <= 4
    few = [(u, 5) for u in ids[42:44]] + [(ids[0], 5)]  # 2 uncached (seen once, now kept) and 1 cached
    check(ranker.recommend_each(few, now=NOW), few)
    assert len(blocks) == 3 and len(ranker.work_cache) == 42 and BLOCK_FROM > 2
    lone = ranker.recommend_each([(ids[2], 5)], now=NOW)
    assert len(blocks) == 3 and _answer(lone[0]) == _answer(cold.recommend(ids[2], limit=5, now=NOW))


def test_the_block_answers_the_blend_too(world: World) -> None:
    """Explicit blend weights (no ranker) keep the one-user ranking: the same answers as single requests."""
    ids = _shop(world, users=12, seed=3)
    blend = world.recommender_with(weights=world.recommender.weights)
    assert blend.ranker is None
    singles = [blend.recommend(u, limit=10, now=NOW) for u in ids]
    assert [_answer(r) for r in blend.recommend_many(ids, limit=10, now=NOW)] == [_answer(r) for r in singles]
    assert _columns(blend.rank_many(ids, limit=10, now=NOW)) == _columns(RankedColumns.of(singles))


@pytest.mark.parametrize("sums", ["scatter-add", "sparse product", "sparse product from two users"])
def test_copurchase_of_many_users_equals_each_users_own(world: World, monkeypatch: pytest.MonkeyPatch,
                                                         sums: str) -> None:
    """scoring.copurchase_block against copurchase_campaign_rows user by user, with the users cut into blocks as
    the ranking cuts them (all at once, two at a time, one at a time), the block's sums by the scatter-add, by
    scipy's product, or by the product only for blocks of two users or more (as a planning block's)."""
    ids = _shop(world, users=30, seed=11)
    snapshot = world.holder.snapshot()
    base, promotion = snapshot.base, snapshot.promotion()
    assert base is not None and base.copurchase_matrix is not None and promotion is not None
    assert promotion.restricted is not None
    cells = {"scatter-add": 10**12, "sparse product": 1, "sparse product from two users": 2 * promotion.restricted[3]}
    monkeypatch.setattr(scoring, "SPARSE_PRODUCT_CELLS", cells[sums])
    contexts = world.recommender_with().user_contexts(ids, now=NOW, snapshot=snapshot)
    coded = [snapshot.user_products(contexts[u].orders_by_product).neighbour_rows() for u in ids]
    expected = [scoring.copurchase_campaign_rows(contexts[u].orders_by_product, base.copurchase_matrix, promotion,
                                                 ordered=c) for u, c in zip(ids, coded, strict=True)]
    assert sum(len(e[0]) for e in expected) > len(ids)  # most users have co-purchase rows
    widest = len(promotion.columns)  # (campaign, product) pairs: the widest of the block's dense arrays here
    assert promotion.restricted is not None and widest >= promotion.restricted[3]
    for cells in (scoring.COPURCHASE_BLOCK_CELLS, 2 * widest, 1):
        step = scoring.copurchase_block_users(promotion, cells=cells)
        assert step == max(1, cells // widest)  # 2 x widest: two users a block; 1: one
        for lo in range(0, len(ids), step):
            part = coded[lo:lo + step]
            block = scoring.copurchase_block(
                np.concatenate([c[0] for c in part]), np.concatenate([c[1] for c in part]),
                np.repeat(np.arange(len(part)), [len(c[0]) for c in part]), count=len(part), promotion=promotion)
            for i, want in enumerate(expected[lo:lo + step]):
                for got, wanted in zip(block.user(i, promotion), want, strict=True):
                    np.testing.assert_array_equal(got, wanted)


@settings(max_examples=200, deadline=None)
@given(n=st.integers(0, 3000), users=st.integers(1, 70000), campaigns=st.integers(1, 70000), scores=st.integers(1, 20),
       seed=st.integers(0, 2**32 - 1))
def test_the_blocks_sort_keys_give_the_wide_keys_order(n: int, users: int, campaigns: int, scores: int,
                                                        seed: int) -> None:
    """The block's order by (user, -score, campaign rank) with 16-bit keys where they fit (a radix sort), against
    the same lexsort of the int64 keys: few distinct scores, so most order is decided by the ties' ranks."""
    rng = np.random.default_rng(seed)
    seg = np.sort(rng.integers(0, users, n)).astype(np.int64)
    rank = rng.integers(0, campaigns, n).astype(np.int64)
    score = rng.integers(0, scores, n) / scores
    got = np.lexsort((_sort_key(rank, campaigns), -score, _sort_key(seg, users)))
    assert got.tolist() == np.lexsort((rank, -score, seg)).tolist()


@settings(max_examples=200, deadline=None)
@given(products=st.integers(1, 60), columns=st.integers(1, 80), users=st.integers(1, 12), density=st.floats(0, 1),
       seed=st.integers(0, 2**32 - 1))
def test_the_sparse_product_gives_the_scatter_adds_bits(products: int, columns: int, users: int, density: float,
                                                        seed: int) -> None:
    """``_weighted_sums`` of a block both ways: the same bits, though float sums depend on their order. A
    random CSR (empty rows, negative and tiny similarities that cancel), users with no products, a product
    bought by several users, each user's products in a shuffled order (the order the sums must follow)."""
    rng = np.random.default_rng(seed)
    dense = np.where(rng.random((products, columns)) < density, rng.normal(size=(products, columns)), 0.0)
    dense[rng.random((products, columns)) < 0.05] = 1e-17
    indptr = np.concatenate(([0], np.cumsum((dense != 0).sum(axis=1)))).astype(np.int64)
    indices = np.concatenate([np.flatnonzero(row) for row in dense] + [np.zeros(0, dtype=np.int64)])
    data = dense[dense != 0].astype(np.float64)
    per_user = rng.integers(0, min(products, 9) + 1, size=users)
    rows = np.concatenate([rng.permutation(products)[:n] for n in per_user] + [np.zeros(0, dtype=np.int64)])
    rows = rows.astype(np.int64)
    orders = rng.integers(1, 40, size=len(rows)).astype(np.float64)
    owner = np.repeat(np.arange(users, dtype=np.int64), per_user)
    assert users * columns < scoring.SPARSE_PRODUCT_CELLS  # so _weighted_sums takes the scatter-add
    scatter = scoring._weighted_sums(rows, orders, indptr, indices, data, size=columns, users=owner, count=users)
    product = scoring._weighted_sums_sparse(rows, orders, indptr, indices, data, size=columns, users=owner,
                                            count=users)
    assert product.shape == scatter.shape == (2, users, columns)
    assert product.tobytes() == scatter.tobytes()


_OFFSETS = st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30)), timezone(-timedelta(hours=8))])
_STAMPS = st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2030, 1, 1))
_AWARE = st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2030, 1, 1), timezones=_OFFSETS)


@settings(max_examples=200, deadline=None)
@given(stamps=st.lists(st.lists(st.one_of(st.none(), _STAMPS, _AWARE), max_size=12), max_size=5), text=st.booleans(),
       now_us=st.integers(0, 10**6 - 1))
def test_days_since_of_many_users_is_each_products_total_seconds_over_a_day(
        stamps: list[list[datetime | None]], text: bool, now_us: int) -> None:
    """The block's recency against its definition, product by product: stored as ISO text (naive = UTC) or as
    datetimes, in any offset, missing (inf), a user's products sharing a stamp."""
    now = datetime(2026, 12, 2, 9, 30, tzinfo=UTC) + timedelta(microseconds=now_us)
    asked = []
    expected: list[float] = []
    for i, user_stamps in enumerate(stamps):
        shared = user_stamps + user_stamps[:2]  # repeated values: parsed once, the same days
        if not text:  # a datetime in a context is aware (only stored text may be naive: UTC)
            shared = [t if t is None or t.tzinfo is not None else t.replace(tzinfo=UTC) for t in shared]
        products = [f"p{j}" for j in range(len(shared))] + ["never"]
        raw = {f"p{j}": (t.isoformat() if text else t) for j, t in enumerate(shared) if t is not None}
        user = UserContext(user_id=str(i), country=None, opted_out=frozenset(), vector=None, orders_by_product={},
                           last_sent={}, last_ordered=_Timestamps(raw) if text else raw)
        asked.append((user, products))
        for j in range(len(products)):
            t = shared[j] if j < len(shared) else None
            t = t if t is None or t.tzinfo is not None else t.replace(tzinfo=UTC)
            expected.append((now - t).total_seconds() / 86400.0 if t is not None else np.inf)
    got = _days_since_many(asked, now)
    assert got.dtype == np.float64
    assert got.tolist() == expected


@settings(max_examples=200, deadline=None)
@given(users=st.integers(0, 6), products=st.integers(1, 40), campaigns=st.integers(1, 30),
       seed=st.integers(0, 2**32 - 1))
def test_campaign_maxima_of_a_block_are_the_reduceat_of_its_promoted_columns(users: int, products: int, campaigns: int,
                                                                             seed: int) -> None:
    """``_campaign_columns_max`` against the one-line ``np.maximum.reduceat`` it replaces: campaigns of one to
    many products (repeats of a product in two campaigns), zeros, ties and negative sums."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, min(products, 8) + 1, size=campaigns)
    compact = np.concatenate([np.sort(rng.choice(products, size=n, replace=False)) for n in lengths]).astype(np.int64)
    starts = np.concatenate(([0], np.cumsum(lengths))).astype(np.int64)
    promotion = scoring.PromotionMatrix(rows=np.arange(campaigns, dtype=np.int64), starts=starts, columns=compact,
                                        compact=compact)
    sums = np.where(rng.random((users, products)) < 0.4, 0.0, rng.integers(-3, 6, size=(users, products)) / 4)
    got = scoring._campaign_columns_max(sums, promotion)
    want = np.maximum.reduceat(sums[:, compact], starts[:-1], axis=1)
    assert got.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(got, want)


@settings(max_examples=200, deadline=None)
@given(users=st.integers(1, 8), width=st.integers(0, 150), k=st.integers(0, 60), distinct=st.integers(1, 30),
       seed=st.integers(0, 2**32 - 1))
def test_best_co_purchase_rows_of_a_block_equal_each_users_best_rows(users: int, width: int, k: int, distinct: int,
                                                                     seed: int) -> None:
    """Few distinct values: many ties at each user's k-th place, broken by the campaign-id rank."""
    rng = np.random.default_rng(seed)
    rank = rng.permutation(1000).astype(np.int64)
    rows = np.sort(rng.choice(1000, size=width, replace=False)).astype(np.int64)
    kept = rng.random((users, width)) < rng.random()
    affinity = np.where(kept, rng.integers(1, distinct + 1, size=(users, width)) / distinct, 0.0)
    block = scoring.CopurchaseBlock(affinity=affinity, raw=np.zeros((users, width)), kept=kept)
    got, counts = _best_of_block(block, rows, rank, k)
    expected = [_best_rows(rows[kept[i]], affinity[i][kept[i]], rank, k) for i in range(users)]
    assert counts.tolist() == [len(e) for e in expected]
    assert got.tolist() == np.concatenate([np.zeros(0, dtype=np.int64), *expected]).tolist()


@settings(max_examples=200, deadline=None)
@given(counts=st.lists(st.integers(0, 40), min_size=1, max_size=6), seed=st.integers(0, 2**32 - 1))
def test_repeat_order_of_many_users_equals_each_users(counts: list[int], seed: int) -> None:
    """Ties in orders and in scores, and -inf (ineligible) scores, within and across users."""
    rng = np.random.default_rng(seed)
    scores = [np.where(rng.random(n) < 0.1, -np.inf, rng.integers(-3, 4, size=n) / 2) for n in counts]
    orders = [rng.integers(0, 4, size=n).astype(np.float64) for n in counts]
    expected = np.concatenate([repeats_in_frequency_order(s, o) for s, o in zip(scores, orders, strict=True)])
    users = np.repeat(np.arange(len(counts)), counts)
    got = repeats_in_frequency_order_by_user(np.concatenate(scores), np.concatenate(orders), users)
    np.testing.assert_array_equal(got, expected)

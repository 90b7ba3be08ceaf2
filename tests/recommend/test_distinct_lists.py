"""Serving's lists with the learned ranker have distinct products (fourth design, notify_core/recommend/distinct.py)."""

from __future__ import annotations

import polars as pl

from notify_core.recommend import scoring
from tests.recommend.conftest import NOW, World


def test_serving_lists_with_the_learned_ranker_have_distinct_products(world: World) -> None:
    """Serving walks its score order through the same rule: a campaign whose products are all promoted by
    one above it leaves the top 10 and the next one comes up (the blend path, ranker=None, is unchanged)."""
    ranker = scoring.LinearRanker(coefficients=(0.0, 0.0, 0.0, 1.0) + (0.0,) * 9, intercept=0.0)  # cosine only
    served = world.recommender_with(ranker=ranker)
    before = [r.campaign_id for r in served.recommend("u1", limit=11, now=NOW).items]
    first, second = before[0], before[1]
    first_products = world.campaigns.filter(pl.col("campaign_id") == first)["product_ids"][0].to_list()
    world.campaigns = world.campaigns.with_columns(
        pl.when(pl.col("campaign_id") == second).then(pl.lit(first_products, dtype=pl.List(pl.String)))
        .otherwise(pl.col("product_ids")).alias("product_ids"))
    world.build_version()  # same vectors: only what the second campaign promotes changed
    world.holder.refresh(force=True)
    after = [r.campaign_id for r in served.recommend("u1", limit=10, now=NOW).items]
    assert after == [first, *before[2:11]]
    longer = [r.campaign_id for r in served.recommend("u1", limit=60, now=NOW).items]
    assert second in longer[10:]  # moved below the list, not dropped

"""Serving's fifth design: bought campaigns' places in summed-orders order (recommend/repeat_order.py)."""

from __future__ import annotations

from notify_core.recommend import scoring
from notify_core.store import tables
from tests.recommend.conftest import NOW, World


def test_serving_fills_the_bought_campaigns_places_in_summed_orders_order(world: World) -> None:
    """A ranker that prefers the *least* ordered bought campaign still serves them most-ordered first: the
    places it gives to bought campaigns are kept, who fills them follows the user's summed orders."""
    world.store.table(tables.USER_PRODUCT).batch_put([
        {"pk": "u1", "sk": "p002", "user_id": "u1", "product_id": "p002", "order_count": 5},
        {"pk": "u1", "sk": "p004", "user_id": "u1", "product_id": "p004", "order_count": 2},
    ])  # u1 already bought p001 once; c001 / c002 / c004 promote p001 / p002 / p004
    coefficients = [0.0] * len(scoring.RANKER_FEATURES)
    coefficients[scoring.RANKER_FEATURES.index("frequency")] = -5.0  # fewer orders = higher raw score
    coefficients[scoring.RANKER_FEATURES.index("repeat")] = 100.0  # bought campaigns take the top places
    coefficients[scoring.RANKER_FEATURES.index("similarity")] = 1.0
    served = world.recommender_with(ranker=scoring.LinearRanker(coefficients=tuple(coefficients), intercept=0.0))
    items = served.recommend("u1", limit=10, now=NOW).items
    assert [r.campaign_id for r in items[:3]] == ["c002", "c004", "c001"]
    assert all("repeat_purchase" in r.reasons for r in items[:3])
    assert not any("repeat_purchase" in r.reasons for r in items[3:])  # new items keep the places after them

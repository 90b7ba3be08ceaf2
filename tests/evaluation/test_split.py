"""The time split: nothing from the test window reaches a method; truth, eligibility and sampling."""

from __future__ import annotations

from datetime import date

import numpy as np
import polars as pl
import pytest

from notify_core.errors import ValidationError
from notify_core.evaluation.split import eligibility, local_midnight_utc, make_split
from notify_core.sources.online_retail import map_online_retail
from tests.evaluation.conftest import CUTOFF


def test_train_inputs_hold_no_test_purchase(tiny_export: pl.DataFrame) -> None:
    split = make_split(tiny_export, map_online_retail(tiny_export), cutoff=CUTOFF, horizon_days=60)
    cut = local_midnight_utc(CUTOFF)
    assert split.train.purchases["ts"].max() < cut  # type: ignore[operator]
    assert set(split.train.purchases["order_id"]) == {"1001", "1002", "1003", "1004", "1005"}
    assert "10004" not in split.products  # first sold after the cut-off: unknown to every method
    promoted = set(split.campaigns.explode("product_ids")["product_ids"].drop_nulls())
    assert promoted <= set(split.products)  # the catalogue is generated from train purchases only
    assert split.test_purchases["ts"].min() >= cut  # type: ignore[operator]


def test_users_on_both_sides_and_truth(tiny_export: pl.DataFrame) -> None:
    split = make_split(tiny_export, map_online_retail(tiny_export), cutoff=CUTOFF, horizon_days=60)
    assert split.users == ["100", "200"]  # 300: nothing after; 400: nothing before
    ids = split.campaign_ids
    promotes = {c: set(p) for c, p in split.campaigns.select("campaign_id", "product_ids").iter_rows()}
    for row, bought in enumerate(({"10001"}, {"10003"})):  # 200's 10002 on 1 June is after the horizon
        expected = {c for c in ids if promotes[c] & bought}
        assert {ids[i] for i in np.flatnonzero(split.truth[row])} == expected
    before = ({"10001", "10002"}, {"10002", "10003"})
    for row, bought in enumerate(before):
        assert {ids[i] for i in np.flatnonzero(split.bought_before[row])} == {c for c in ids if promotes[c] & bought}


def test_a_short_horizon_shrinks_the_truth(tiny_export: pl.DataFrame) -> None:
    full = map_online_retail(tiny_export)
    long = make_split(tiny_export, full, cutoff=CUTOFF, horizon_days=60)
    short = make_split(tiny_export, full, cutoff=CUTOFF, horizon_days=3)
    assert short.users == ["100"]  # 200's next purchase is on 20 March
    assert (short.truth <= long.truth[:1]).all()


def test_sampling_is_seeded_and_sorted(tiny_export: pl.DataFrame) -> None:
    full = map_online_retail(tiny_export)
    picks = {tuple(make_split(tiny_export, full, cutoff=CUTOFF, seed=s, sample_users=1).users) for s in range(6)}
    assert picks <= {("100",), ("200",)}
    assert make_split(tiny_export, full, cutoff=CUTOFF, seed=3, sample_users=1).users == \
        make_split(tiny_export, full, cutoff=CUTOFF, seed=3, sample_users=1).users


def test_no_history_is_an_error(tiny_export: pl.DataFrame) -> None:
    with pytest.raises(ValidationError):
        make_split(tiny_export, map_online_retail(tiny_export), cutoff=date(2010, 1, 1))
    with pytest.raises(ValidationError):
        make_split(tiny_export, map_online_retail(tiny_export), cutoff=CUTOFF, horizon_days=0)


def test_eligibility_mirrors_serving_filters() -> None:
    campaigns = pl.DataFrame({
        "campaign_id": ["a", "b", "c", "d", "e"], "status": ["active", "paused", "active", "active", "active"],
        "start_date": [date(2010, 1, 1), date(2010, 1, 1), date(2012, 1, 1), date(2010, 1, 1), date(2010, 1, 1)],
        "end_date": [date(2030, 1, 1)] * 5, "target_countries": [[], [], [], ["France"], []],
        "category": ["home", "home", "home", "home", "toys"],
    })
    users = pl.DataFrame({"user_id": ["u", "v"], "country": ["United Kingdom", "France"],
                          "opted_out_categories": [["toys"], []]})
    mask = eligibility(campaigns, users, day=date(2011, 9, 1))
    assert mask.tolist() == [[True, False, False, False, False], [True, False, False, True, True]]

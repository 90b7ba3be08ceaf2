"""CampaignTable: the columns eligibility and scoring read, with the campaign rows' defaults."""

from __future__ import annotations

from datetime import date

import numpy as np

from notify_core.campaigns import DEFAULT_PRIORITY
from notify_core.campaigns.table import OPEN_END, OPEN_START, CampaignTable, epoch_day


def table() -> CampaignTable:
    return CampaignTable.from_rows([
        {"campaign_id": "b", "product_ids": ["p1", "p2"], "status": "active", "start_date": "2024-01-01",
         "end_date": date(2024, 12, 31), "target_countries": ["France"], "category": "toys",
         "cooldown_hours": 72, "priority": 5},
        {"campaign_id": "a", "product_ids": ["p2"], "status": "paused", "category": "garden"},
        {"campaign_id": "c"},  # nothing but an id: active, open dates, everyone, the default priority, no cooldown
    ])


def test_missing_values_take_the_campaign_rows_defaults() -> None:
    t = table()
    assert t.ids == ("b", "a", "c") and t.row_of == {"b": 0, "a": 1, "c": 2}
    assert t.active.tolist() == [True, False, True]
    assert t.start.tolist() == [epoch_day(date(2024, 1, 1)), OPEN_START, OPEN_START]
    assert t.end.tolist() == [epoch_day(date(2024, 12, 31)), OPEN_END, OPEN_END]
    # issue 20: a missing priority is DEFAULT_PRIORITY (3) in serving as in planning, no longer 1
    assert t.priority.tolist() == [5, DEFAULT_PRIORITY, DEFAULT_PRIORITY] == [5, 3, 3]
    assert t.cooldown_hours.tolist() == [72.0, 0.0, 0.0]
    assert t.category.tolist() == [t.categories["toys"], t.categories["garden"], -1]


def test_targeting_products_ids_and_id_order() -> None:
    t = table()
    assert t.allowed_in("France").tolist() == [True, True, True]
    assert t.allowed_in("Germany").tolist() == [False, True, True]
    assert t.allowed_in(None).tolist() == [False, True, True]
    assert {p: r.tolist() for p, r in t.products.items()} == {"p1": [0], "p2": [0, 1]}
    assert t.rows_of(["c", "zz", "b"]).tolist() == [2, -1, 0]
    assert t.id_rank.tolist() == [1, 0, 2]  # a < b < c
    assert t.category_codes({"toys", "unknown"}).tolist() == [t.categories["toys"]]


def test_concat_renumbers_the_second_table_and_recodes_categories() -> None:
    first = table()
    second = CampaignTable.from_rows([{"campaign_id": "b", "product_ids": ["p9", "p1"], "category": "aaa",
                                       "target_countries": ["Germany"]}])
    both = first.concat(second)
    assert len(both) == 4 and both.ids[3] == "b" and both.row_of["b"] == 3  # the later row wins the id
    names = {code: name for name, code in both.categories.items()}
    assert [names.get(int(c)) for c in both.category] == ["toys", "garden", None, "aaa"]
    assert both.products["p1"].tolist() == [0, 3] and both.products["p9"].tolist() == [3]
    assert both.allowed_in("Germany").tolist() == [False, True, True, True]
    assert np.array_equal(both.active, [True, False, True, True])
    assert first.concat(CampaignTable.empty()) is first


def test_rows_of_a_column_answer_as_rows_of() -> None:
    """The columnar look-up (the planner's, over millions of pairs) and the per-id one agree: known ids,
    unknown ones, nulls, and a table that holds an id twice (the last row, as the dict keeps it)."""
    import polars as pl

    asked = ["b", "zz", None, "a", "c", "a", ""]
    for ids in (["a", "b", "c"], ["a", "b", "a", "c"]):
        table = CampaignTable.from_frame(pl.DataFrame({"campaign_id": ids}))
        got = table.rows_of_column(pl.Series(asked, dtype=pl.String))
        assert got.tolist() == table.rows_of(asked).tolist()  # type: ignore[arg-type]
    assert CampaignTable.from_frame(pl.DataFrame({"campaign_id": ["a", "b"]})).rows_of_column(
        pl.Series(["b", "a", "q"])).tolist() == [1, 0, -1]

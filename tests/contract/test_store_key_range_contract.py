"""A key range that selects no bound reads the whole partition on every adapter (audit finding 4).

``KeyRange()``, ``KeyRange(start="")`` and ``KeyRange(prefix="")`` bound nothing (every sort key is a
non-empty string, so ``>= ""`` and ``begins_with ""`` hold for all of them): SQLite answered the whole
partition, while DynamoDB refused the request ("ExpressionAttributeNames unused": the adapter named ``sk``
with no condition using it). Every query method is checked, since each builds its own request.
"""

from __future__ import annotations

import pytest

from notify_core.store.port import KeyRange, Table
from tests.contract import test_store_contract as contract

store = contract.store  # the adapters' fixtures: SQLite and DynamoDB Local
table = contract.table

SKS = ["a", "ab", "b", "c#1"]
UNBOUNDED = [KeyRange(), KeyRange(start=""), KeyRange(prefix="")]


@pytest.fixture
def filled(table: Table) -> Table:
    table.batch_put([{"pk": pk, "sk": sk, "n": i} for pk in ("r", "s") for i, sk in enumerate(SKS)])
    table.put({"pk": "other", "sk": "a", "n": 9})
    return table


@pytest.mark.parametrize("key_range", UNBOUNDED, ids=repr)
def test_a_key_range_without_bounds_is_the_whole_partition(filled: Table, key_range: KeyRange) -> None:
    assert [i["sk"] for i in filled.query("r", key_range=key_range)] == SKS
    assert [i["sk"] for i in filled.query("r", key_range=key_range, descending=True, limit=2)] == SKS[::-1][:2]
    assert [i["sk"] for i in filled.query("r", key_range=key_range, consistent=True)] == SKS
    assert filled.query("r", key_range=key_range) == filled.query("r")
    assert filled.query("nobody", key_range=key_range) == []
    assert filled.query_columns("r", ("n",), key_range=key_range) == {"n": [0, 1, 2, 3]}
    many = filled.query_many(["r", "s", "nobody"], key_range=key_range)
    assert {pk: [i["sk"] for i in items] for pk, items in many.items()} == {"r": SKS, "s": SKS, "nobody": []}
    assert filled.query_columns_many(["r", "s"], ("n",), key_range=key_range) == {
        "r": {"n": [0, 1, 2, 3]}, "s": {"n": [0, 1, 2, 3]}}


def test_an_empty_start_with_an_end_is_bounded_by_the_end_alone(filled: Table) -> None:
    assert [i["sk"] for i in filled.query("r", key_range=KeyRange(start="", end="ab"))] == ["a", "ab"]
    assert [i["sk"] for i in filled.query_many(["r"], key_range=KeyRange(start="", end="b"))["r"]] == ["a", "ab", "b"]
    assert filled.query("r", key_range=KeyRange(start="", end="")) == []  # no sort key is <= ""

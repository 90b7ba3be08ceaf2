"""One contract suite for every Store adapter: the same tests run on SQLite and on a real DynamoDB Local.

The port (notify_core/store/port.py) promises DynamoDB-shaped semantics; these tests pin down the parts
that differ between backends unless an adapter works at it: TTL (DynamoDB sweeps expired items lazily),
conditions on expired items, batch limits (100 keys per get, 25 per write, no duplicate keys), 1 MB query
pages, number and bytes mapping, and atomic claims under concurrency.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from notify_core.errors import ConditionFailedError, ValidationError
from notify_core.store.port import Condition, Item, KeyRange, Store, Table, Update
from notify_core.store.sqlite import SqliteStore
from tests.servers import scratch_dynamo_store

REGION = "us-east-1"


# fixtures -----------------------------------------------------------------------------------------
@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("dynamodb", id="dynamodb", marks=pytest.mark.dynamodb),
    ]
)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        sqlite_store = SqliteStore(tmp_path / "store.db")
        yield sqlite_store
        sqlite_store.close()
        return
    endpoint: str = request.getfixturevalue("dynamodb_endpoint")
    with scratch_dynamo_store(endpoint, name="contract", region=REGION) as dynamo_store:
        yield dynamo_store


@pytest.fixture
def table(store: Store) -> Table:
    return store.table("contract")


def _past() -> float:
    return time.time() - 3600


def _future() -> float:
    return time.time() + 3600


def _by_key(items: list[Item]) -> dict[tuple[str, str], Item]:
    return {(item["pk"], item["sk"]): item for item in items}


# round trips --------------------------------------------------------------------------------------
def test_store_satisfies_the_port(store: Store, table: Table) -> None:
    assert isinstance(store, Store)
    assert isinstance(table, Table)
    assert table.name == "contract"
    assert store.table("contract") is table  # one handle per table, shared between threads


def test_put_get_round_trips_every_value_type(table: Table) -> None:
    vector = np.linspace(-1, 1, 384, dtype=np.float32)
    item: Item = {
        "pk": "user-ü-1",
        "sk": "profile#\u00e9t\u00e9",
        "text": "héllo, 世界",
        "empty_text": "",
        "int": 42,
        "negative": -7,
        "big_int": 2**53 + 1,  # not representable as a float: must survive exactly
        "zero": 0,
        "float": 3.14,
        "tiny_float": 1.5e-7,
        "awkward_float": 0.1 + 0.2,
        "true": True,
        "false": False,
        "none": None,
        "list": [1, 2.5, "x", None, False, [1, [2]], {"k": "v"}],
        "empty_list": [],
        "map": {"a": {"b": {"c": [1, 2, 3]}}, "bytes": b"\x00\xff", "flag": True},
        "empty_map": {},
        "vector": vector.tobytes(),
        "empty_bytes": b"",
    }
    table.put(item)
    got = table.get("user-ü-1", "profile#\u00e9t\u00e9")
    assert got == item
    assert got is not None
    assert type(got["true"]) is bool and type(got["false"]) is bool  # not 1/0
    assert isinstance(got["big_int"], int)
    assert isinstance(got["float"], float) and isinstance(got["awkward_float"], float)
    assert isinstance(got["vector"], bytes)
    np.testing.assert_array_equal(np.frombuffer(got["vector"], dtype=np.float32), vector)
    assert table.get("user-ü-1", "profile#\u00e9t\u00e9", consistent=True) == item


def test_integral_float_reads_back_equal(table: Table) -> None:
    # DynamoDB has one number type: a stored 2.0 comes back as the int 2 (equal, though not the same type).
    table.put({"pk": "n", "sk": "1", "score": 2.0})
    got = table.get("n", "1")
    assert got is not None and got["score"] == 2.0


def test_put_overwrites_the_whole_item(table: Table) -> None:
    table.put({"pk": "p", "sk": "s", "a": 1, "b": 2})
    table.put({"pk": "p", "sk": "s", "a": 3})
    assert table.get("p", "s") == {"pk": "p", "sk": "s", "a": 3}


def test_get_missing_key_returns_none(table: Table) -> None:
    assert table.get("nobody", "profile") is None
    table.put({"pk": "somebody", "sk": "profile"})
    assert table.get("somebody", "other") is None
    assert table.get("somebody2", "profile") is None


# batches ------------------------------------------------------------------------------------------
def test_batch_get_over_100_keys_with_missing_and_duplicates(table: Table) -> None:
    items = [{"pk": f"u{i:04d}", "sk": "profile", "i": i} for i in range(230)]
    assert table.batch_put(items) == 230
    keys = [(f"u{i:04d}", "profile") for i in range(260)]  # 30 missing
    keys += [("u0001", "profile"), ("u0150", "profile"), ("u0001", "profile")]  # duplicates across chunks
    keys += [("u0002", "other-sk"), ("zzz", "profile")]  # more missing
    random.Random(7).shuffle(keys)
    got = table.batch_get(keys)
    assert len(got) == 230  # each live item once, whatever the duplicates
    assert _by_key(got) == _by_key(items)
    assert table.batch_get([]) == []
    assert table.batch_get([("missing", "x")], consistent=True) == []


def test_batch_put_over_25_items_with_duplicates_and_overwrite(table: Table) -> None:
    table.put({"pk": "b", "sk": "k005", "old": True, "v": -1})
    items: list[Item] = [{"pk": "b", "sk": f"k{i:03d}", "v": i} for i in range(60)]
    # The same key three times, in different 25-item chunks and within one chunk: the last one wins.
    items.insert(3, {"pk": "b", "sk": "k010", "v": "first"})
    items.insert(5, {"pk": "b", "sk": "k010", "v": "second"})
    items.append({"pk": "b", "sk": "k010", "v": "last"})
    items.append({"pk": "b", "sk": "k020", "v": "also last"})
    written = table.batch_put(iter(items))  # any iterable, including a generator
    assert written == len(items)
    got = _by_key(table.query("b"))
    assert len(got) == 60
    assert got[("b", "k010")]["v"] == "last"
    assert got[("b", "k020")]["v"] == "also last"
    assert got[("b", "k005")] == {"pk": "b", "sk": "k005", "v": 5}  # overwritten, not merged
    assert got[("b", "k059")]["v"] == 59
    assert table.batch_put([]) == 0


# queries ------------------------------------------------------------------------------------------
@pytest.fixture
def history(table: Table) -> list[Item]:
    """A small partition with time-like sort keys, plus neighbours that must never leak into it."""
    items: list[Item] = [
        {"pk": "alice", "sk": f"2024-01-{day:02d}T{hour:02d}:00:00#o{day}{hour}", "day": day, "hour": hour}
        for day in (1, 2, 3, 10, 11)
        for hour in (0, 9, 23)
    ]
    neighbours: list[Item] = [
        {"pk": "alicf", "sk": "2024-01-02T00:00:00#x"},
        {"pk": "alic", "sk": "2024-01-02T00:00:00#x"},
        {"pk": "bob", "sk": "2024-01-02T00:00:00#x"},
    ]
    table.batch_put(items + neighbours)
    return sorted(items, key=lambda item: item["sk"])


def test_query_whole_partition_in_order(table: Table, history: list[Item]) -> None:
    assert table.query("alice") == history
    assert table.query("alice", descending=True) == history[::-1]
    assert table.query("alice", consistent=True) == history
    assert table.query("nobody") == []


def test_query_by_prefix(table: Table, history: list[Item]) -> None:
    day2 = [item for item in history if item["sk"].startswith("2024-01-02")]
    assert len(day2) == 3
    assert table.query("alice", key_range=KeyRange(prefix="2024-01-02")) == day2
    assert table.query("alice", key_range=KeyRange(prefix="2024-01-02"), descending=True) == day2[::-1]
    assert table.query("alice", key_range=KeyRange(prefix="2024-01-1")) == history[-6:]
    assert table.query("alice", key_range=KeyRange(prefix="2024-01-02T09:00:00#o29")) == [day2[1]]
    assert table.query("alice", key_range=KeyRange(prefix="2025")) == []


def test_query_by_range_is_inclusive(table: Table, history: list[Item]) -> None:
    start, end = "2024-01-02T09:00:00#o29", "2024-01-10T09:00:00#o109"
    expected = [item for item in history if start <= item["sk"] <= end]
    assert expected[0]["sk"] == start and expected[-1]["sk"] == end
    assert table.query("alice", key_range=KeyRange(start=start, end=end)) == expected
    assert table.query("alice", key_range=KeyRange(start=start, end=end), descending=True) == expected[::-1]
    # Bounds need not be existing keys; one-sided ranges.
    assert table.query("alice", key_range=KeyRange(start="2024-01-03", end="2024-01-04")) == history[6:9]
    assert table.query("alice", key_range=KeyRange(start="2024-01-10")) == history[9:]
    assert table.query("alice", key_range=KeyRange(end="2024-01-02")) == history[:3]
    assert table.query("alice", key_range=KeyRange(end="2024-01-02"), descending=True, limit=2) == history[:3][::-1][:2]
    # An empty or inverted range is empty, not an error.
    assert table.query("alice", key_range=KeyRange(start="2024-02", end="2024-01")) == []
    assert table.query("alice", key_range=KeyRange(start="2024-01-02", end="2024-01-02")) == []


def test_query_limit_and_descending(table: Table, history: list[Item]) -> None:
    assert table.query("alice", limit=4) == history[:4]
    assert table.query("alice", limit=4, descending=True) == history[::-1][:4]
    assert table.query("alice", limit=100) == history
    assert table.query("alice", limit=0) == []
    assert table.query("alice", key_range=KeyRange(prefix="2024-01-1"), limit=2, descending=True) == history[::-1][:2]


def test_query_orders_by_code_point_and_prefix_is_exact(table: Table) -> None:
    # DynamoDB orders sort keys by UTF-8 bytes (= code points); a prefix range must not miss keys that
    # continue with the largest code point, nor catch keys that merely sort next to the prefix.
    sks = ["a", "a\U0010ffff", "a\U0010ffffz", "a\U0001f600", "a\uff5e", "a\u00e9", "az", "a#1", "b", "a\ud7ff"]
    table.batch_put([{"pk": "u", "sk": sk} for sk in sks])
    assert [item["sk"] for item in table.query("u")] == sorted(sks)
    assert [item["sk"] for item in table.query("u", key_range=KeyRange(prefix="a"))] == sorted(sks)[:-1]
    for prefix in ("a\U0010ffff", "a\ud7ff", "a\uff5e", "a#", "c"):
        got = [item["sk"] for item in table.query("u", key_range=KeyRange(prefix=prefix))]
        assert got == sorted(sk for sk in sks if sk.startswith(prefix)), prefix


def _projected(items: list[Item], attributes: tuple[str, ...]) -> dict[str, list[Any]]:
    return {name: [item.get(name) for item in items] for name in dict.fromkeys(attributes)}


def test_query_columns_are_the_queried_items_named_attributes(table: Table, history: list[Item]) -> None:
    """Every query shape (range, prefix, limit, order, expiry), with attributes that are missing, null,
    bytes, nested or repeated: the columns are exactly those of the items :meth:`query` returns."""
    odd: list[Item] = [
        {"pk": "alice", "sk": "2024-01-02T09:00:00#o29", "day": 2, "hour": 9, "blob": b"\x00\xff",
         "nested": {"a": [1, {"b": b"x"}], "t": "é"}, "none": None, "float": 0.1 + 0.2, "big": 2**53 + 1},
        {"pk": "alice", "sk": "2024-01-03T00:00:00#gone", "day": 3, "hour": 0, "ttl": _past()},
        {"pk": "alice", "sk": "2024-01-10T23:00:00#o1023", "day": 10, "hour": 23, "text": "{\"__b64__\": 1}"},
    ]
    table.batch_put(odd)
    for item in odd[::2]:  # the live ones replace their history rows
        history = [item if old["sk"] == item["sk"] else old for old in history]
    shapes: list[dict[str, Any]] = [
        {}, {"descending": True}, {"limit": 4}, {"limit": 0}, {"limit": 5, "descending": True},
        {"key_range": KeyRange(prefix="2024-01-0")}, {"key_range": KeyRange(start="2024-01-02", end="2024-01-10")},
        {"key_range": KeyRange(end="2024-01-03"), "descending": True, "limit": 2}, {"consistent": True},
    ]
    projections = [("sk",), ("day", "hour"), ("sk", "blob", "nested", "none", "float", "big", "text", "missing"),
                   ("hour", "sk", "hour"), ("pk", "ttl")]
    for shape in shapes:
        items = table.query("alice", **shape)
        for attributes in projections:
            got = table.query_columns("alice", attributes, **shape)
            assert got == _projected(items, attributes), (shape, attributes)
            assert list(got) == list(dict.fromkeys(attributes))
    blob = table.query_columns("alice", ("blob",), key_range=KeyRange(prefix="2024-01-02T09"))["blob"]
    assert blob == [b"\x00\xff"] and type(blob[0]) is bytes
    assert table.query_columns("alice", ("sk",), key_range=KeyRange(prefix="2024-01-03"))["sk"] == [
        item["sk"] for item in history if item["sk"].startswith("2024-01-03")]  # the expired row is not there
    assert table.query_columns("nobody", ("sk", "day")) == {"sk": [], "day": []}
    for bad in ((), "sk", ("sk", "")):
        with pytest.raises(ValidationError):
            table.query_columns("alice", bad)  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        table.query_columns("", ("sk",))


def test_query_paginates_over_one_megabyte(table: Table) -> None:
    # 1,500 items of ~1 KB: DynamoDB returns at most 1 MB per page, so these queries need several pages.
    padding = "x" * 1000
    items: list[Item] = [{"pk": "big", "sk": f"item#{i:05d}", "i": i, "padding": padding} for i in range(1500)]
    table.batch_put(items)
    table.batch_put([{"pk": "big2", "sk": f"item#{i:05d}", "padding": padding} for i in range(5)])
    everything = table.query("big")
    assert [item["i"] for item in everything] == list(range(1500))
    assert [item["i"] for item in table.query("big", limit=1200, descending=True)] == list(range(1499, 299, -1))
    assert [item["i"] for item in table.query("big", key_range=KeyRange(prefix="item#01"))] == list(range(1000, 1500))
    ranged = table.query("big", key_range=KeyRange(start="item#00100", end="item#01399"), limit=1250)
    assert [item["i"] for item in ranged] == list(range(100, 1350))


# conditional writes -------------------------------------------------------------------------------
def test_conditional_put_absent_claims_once(table: Table) -> None:
    table.put({"pk": "job", "sk": "1", "owner": "a"}, condition=Condition.absent())
    with pytest.raises(ConditionFailedError):
        table.put({"pk": "job", "sk": "1", "owner": "b"}, condition=Condition.absent())
    assert table.get("job", "1") == {"pk": "job", "sk": "1", "owner": "a"}
    # The condition is per key: another sort key in the same partition is still free.
    table.put({"pk": "job", "sk": "2", "owner": "b"}, condition=Condition.absent())


def test_conditional_put_matches(table: Table) -> None:
    table.put({"pk": "job", "sk": "1", "state": "queued", "tries": 0})
    with pytest.raises(ConditionFailedError):
        table.put({"pk": "job", "sk": "1", "state": "sent"}, condition=Condition.matches(state="running"))
    table.put({"pk": "job", "sk": "1", "state": "sent"}, condition=Condition.matches(state="queued", tries=0))
    assert table.get("job", "1") == {"pk": "job", "sk": "1", "state": "sent"}
    with pytest.raises(ConditionFailedError):
        table.put({"pk": "job", "sk": "missing"}, condition=Condition.matches(state="sent"))
    assert table.get("job", "missing") is None


def test_conditional_update_matches(table: Table) -> None:
    original: Item = {"pk": "job", "sk": "1", "state": "queued", "tries": 0, "tags": ["a", "b"], "note": "keep"}
    table.put(original)
    with pytest.raises(ConditionFailedError):
        table.update("job", "1", set={"state": "running"}, condition=Condition.matches(state="sent"))
    with pytest.raises(ConditionFailedError):
        table.update("job", "1", set={"state": "running"}, condition=Condition.matches(state="queued", tries=1))
    with pytest.raises(ConditionFailedError):  # an attribute that is not there does not equal a value
        table.update("job", "1", set={"state": "running"}, condition=Condition.matches(owner="me"))
    assert table.get("job", "1") == original  # unchanged by the failed attempts

    new = table.update(
        "job",
        "1",
        set={"state": "running", "tries": 1, "owner": "w1"},
        condition=Condition.matches(state="queued", tries=0, tags=["a", "b"]),
    )
    expected = {**original, "state": "running", "tries": 1, "owner": "w1"}
    assert new == expected  # the whole new item, untouched attributes included
    assert table.get("job", "1") == expected
    # A None expectation matches a missing attribute, as Condition.holds_for says.
    table.update("job", "1", set={"done": True}, condition=Condition.matches(finished_at=None, owner="w1"))
    with pytest.raises(ConditionFailedError):  # a condition on a missing item fails
        table.update("job", "2", set={"state": "running"}, condition=Condition.matches(state="queued"))
    assert table.get("job", "2") is None


def test_update_creates_missing_item(table: Table) -> None:
    created = table.update("u", "features", set={"score": 0.5, "name": "n", "status": "ok", "ttl": _future()})
    assert created["pk"] == "u" and created["sk"] == "features" and created["score"] == 0.5
    assert table.get("u", "features") == created
    # No attributes to set still creates the bare item (and returns the existing one untouched).
    assert table.update("u", "bare", set={}) == {"pk": "u", "sk": "bare"}
    assert table.update("u", "features", set={}) == created
    # Condition.absent() on update: create only if missing.
    assert table.update("u", "claim", set={"owner": "a"}, condition=Condition.absent()) == {
        "pk": "u",
        "sk": "claim",
        "owner": "a",
    }
    with pytest.raises(ConditionFailedError):
        table.update("u", "claim", set={"owner": "b"}, condition=Condition.absent())
    assert table.get("u", "claim") == {"pk": "u", "sk": "claim", "owner": "a"}


def test_update_many_applies_each_update_whose_condition_holds(table: Table) -> None:
    table.batch_put([{"pk": "job", "sk": str(i), "state": "queued"} for i in range(4)])
    table.put({"pk": "job", "sk": "old", "state": "queued", "ttl": _past()})  # expired: absent
    results = table.update_many([
        Update("job", "0", {"state": "claimed", "by": "w1"}, Condition.matches(state="queued")),
        Update("job", "1", {"state": "claimed"}, Condition.matches(state="sent")),  # loses
        Update("job", "2", {"state": "claimed"}),  # unconditional
        Update("job", "9", {"state": "new"}, Condition.absent()),  # creates
        Update("job", "3", {"state": "x"}, Condition.absent()),  # exists: loses
        Update("job", "old", {"state": "fresh"}, Condition.absent()),  # expired counts as absent
        Update("job", "0", {"state": "again"}, Condition.matches(state="queued")),  # sees the first update
    ])
    assert results == [
        {"pk": "job", "sk": "0", "state": "claimed", "by": "w1"}, None,
        {"pk": "job", "sk": "2", "state": "claimed"}, {"pk": "job", "sk": "9", "state": "new"}, None,
        {"pk": "job", "sk": "old", "state": "fresh"}, None,
    ]
    assert table.get("job", "1") == {"pk": "job", "sk": "1", "state": "queued"}
    assert table.get("job", "3") == {"pk": "job", "sk": "3", "state": "queued"}
    assert table.get("job", "0")["state"] == "claimed"
    assert table.update_many([]) == []
    with pytest.raises(ValidationError):
        table.update_many([Update("", "1", {"state": "x"})])


def test_update_many_keeps_values_ttl_and_order_over_a_large_batch(table: Table) -> None:
    """A batch of hundreds (SQLite reads and writes it in one statement each): bytes and nested values
    survive, the ttl follows the item, and repeated keys see the batch's own earlier updates in order."""
    n = 600
    table.batch_put([{"pk": "big", "sk": f"{i:05d}", "n": i, "blob": b"\x00\xff", "nested": {"a": [1, 2]}}
                     for i in range(n)])
    updates = [Update("big", f"{i:05d}", {"n": i + 1, "ttl": _future()}, Condition.matches(n=i)) for i in range(n)]
    updates += [Update("big", "00007", {"n": 100}, Condition.matches(n=8)),  # sees the first update
                Update("big", "00007", {"n": 200}, Condition.matches(n=8))]  # no longer holds
    results = table.update_many(updates)
    assert sum(1 for r in results if r is not None) == n + 1 and results[-1] is None
    item = table.get("big", "00007")
    assert item is not None and item["n"] == 100 and item["blob"] == b"\x00\xff" and item["nested"] == {"a": [1, 2]}
    assert table.get("big", "00599")["n"] == 600


def test_update_many_claims_are_exclusive_across_threads(table: Table) -> None:
    """Racing batches of claims on the same keys: each key is won exactly once."""
    keys = [str(i) for i in range(60)]
    table.batch_put([{"pk": "race", "sk": k, "state": "pending"} for k in keys])

    def claim(worker: int) -> int:
        won = table.update_many([Update("race", k, {"state": "claimed", "by": worker},
                                        Condition.matches(state="pending")) for k in keys])
        return sum(1 for r in won if r is not None)

    with ThreadPoolExecutor(4) as pool:
        wins = list(pool.map(claim, range(4)))
    assert sum(wins) == len(keys)


def test_update_cannot_change_the_key(table: Table) -> None:
    table.put({"pk": "u", "sk": "s"})
    for attributes in ({"pk": "other"}, {"sk": "other"}):
        with pytest.raises(ValidationError):
            table.update("u", "s", set=attributes)
    assert table.get("u", "s") == {"pk": "u", "sk": "s"}


def test_delete_with_and_without_condition(table: Table) -> None:
    table.batch_put([{"pk": "d", "sk": str(i), "state": "done" if i % 2 else "open"} for i in range(4)])
    table.delete("d", "0")
    assert table.get("d", "0") is None
    table.delete("d", "0")  # deleting a missing item is not an error
    table.delete("never", "existed")
    with pytest.raises(ConditionFailedError):
        table.delete("d", "2", condition=Condition.matches(state="done"))
    assert table.get("d", "2") == {"pk": "d", "sk": "2", "state": "open"}
    table.delete("d", "1", condition=Condition.matches(state="done"))
    assert table.get("d", "1") is None
    with pytest.raises(ConditionFailedError):
        table.delete("d", "3", condition=Condition.absent())
    with pytest.raises(ConditionFailedError):
        table.delete("d", "missing", condition=Condition.matches(state="done"))
    assert [item["sk"] for item in table.query("d")] == ["2", "3"]


# TTL ----------------------------------------------------------------------------------------------
def test_expired_items_are_invisible_to_every_read(table: Table) -> None:
    live: list[Item] = [
        {"pk": "t", "sk": "live-no-ttl", "v": 1},
        {"pk": "t", "sk": "live-future", "v": 2, "ttl": int(_future())},
        {"pk": "t", "sk": "live-null-ttl", "v": 3, "ttl": None},
    ]
    expired: list[Item] = [
        {"pk": "t", "sk": "expired-int", "v": 4, "ttl": int(_past())},
        {"pk": "t", "sk": "expired-float", "v": 5, "ttl": _past() + 0.5},
    ]
    table.batch_put(live + expired[:1])
    table.put(expired[1])
    keys = [(item["pk"], item["sk"]) for item in live + expired]
    for item in expired:
        assert table.get(item["pk"], item["sk"]) is None
        assert table.get(item["pk"], item["sk"], consistent=True) is None
    for item in live:
        assert table.get(item["pk"], item["sk"]) == item
    assert _by_key(table.batch_get(keys)) == _by_key(live)
    assert _by_key(table.query("t")) == _by_key(live)
    assert _by_key(table.query("t", key_range=KeyRange(prefix="expired"))) == {}
    # The limit counts live items only: expired ones do not use it up.
    assert [item["sk"] for item in table.query("t", limit=1)] == ["live-future"]
    assert [item["sk"] for item in table.query("t", limit=2, descending=True)] == ["live-null-ttl", "live-no-ttl"]
    assert _by_key(list(table.scan())) == _by_key(live)


def test_expired_item_counts_as_absent_for_conditions(table: Table) -> None:
    table.put({"pk": "c", "sk": "1", "owner": "old", "ttl": _past()})
    with pytest.raises(ConditionFailedError):  # an expired item matches nothing
        table.update("c", "1", set={"owner": "x"}, condition=Condition.matches(owner="old"))
    with pytest.raises(ConditionFailedError):
        table.delete("c", "1", condition=Condition.matches(owner="old"))
    # It does not block a claim.
    table.put({"pk": "c", "sk": "1", "owner": "new"}, condition=Condition.absent())
    assert table.get("c", "1") == {"pk": "c", "sk": "1", "owner": "new"}

    # Nor a create-if-absent update, whose result does not inherit the expired item's attributes.
    table.put({"pk": "c", "sk": "2", "owner": "old", "stale": True, "ttl": _past()})
    assert table.update("c", "2", set={"owner": "new"}, condition=Condition.absent()) == {
        "pk": "c",
        "sk": "2",
        "owner": "new",
    }
    assert table.get("c", "2") == {"pk": "c", "sk": "2", "owner": "new"}

    # An unconditional update of an expired item starts from scratch too (no stale attributes, no stale ttl).
    table.put({"pk": "c", "sk": "3", "owner": "old", "stale": True, "ttl": _past()})
    assert table.update("c", "3", set={"owner": "new"}) == {"pk": "c", "sk": "3", "owner": "new"}
    assert table.get("c", "3") == {"pk": "c", "sk": "3", "owner": "new"}

    # An absent-conditional delete of an expired item is allowed (it is absent).
    table.put({"pk": "c", "sk": "4", "ttl": _past()})
    table.delete("c", "4", condition=Condition.absent())


def test_ttl_can_be_set_by_update_and_expires_the_item(table: Table) -> None:
    table.put({"pk": "e", "sk": "1", "v": 1})
    table.update("e", "1", set={"ttl": _past()})
    assert table.get("e", "1") is None
    assert table.query("e") == []


# scan ---------------------------------------------------------------------------------------------
def test_scan_returns_every_live_item(table: Table, store: Store) -> None:
    items: list[Item] = [{"pk": f"p{i % 37}", "sk": f"s{i:05d}", "i": i} for i in range(1100)]
    table.batch_put(items)
    table.batch_put([{"pk": f"p{i}", "sk": "expired", "ttl": _past()} for i in range(50)])
    store.table("contract_other").put({"pk": "p1", "sk": "elsewhere"})  # other tables stay out
    scanned = list(table.scan(segment_size=250))
    assert len(scanned) == 1100
    assert _by_key(scanned) == _by_key(items)
    assert len(list(table.scan())) == 1100
    assert list(store.table("contract_empty").scan()) == []


# concurrency --------------------------------------------------------------------------------------
def test_concurrent_claims_have_exactly_one_winner_per_key(table: Table) -> None:
    keys = [f"delivery-{i:03d}" for i in range(200)]
    workers = 8
    barrier = threading.Barrier(workers)

    def claim(worker: int) -> list[str]:
        order = keys[:]
        random.Random(worker).shuffle(order)
        won: list[str] = []
        barrier.wait()
        for key in order:
            try:
                table.put({"pk": key, "sk": "claim", "worker": worker}, condition=Condition.absent())
                won.append(key)
            except ConditionFailedError:
                pass
        return won

    with ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(claim, range(workers)))
    assert sum(len(won) for won in results) == 200
    winners = {key: worker for worker, won in enumerate(results) for key in won}
    assert sorted(winners) == keys
    stored = table.batch_get([(key, "claim") for key in keys], consistent=True)
    assert {item["pk"]: item["worker"] for item in stored} == winners


def test_concurrent_unconditional_writes_all_succeed(table: Table) -> None:
    workers = 8
    barrier = threading.Barrier(workers)

    def write(worker: int) -> None:
        barrier.wait()
        for i in range(25):
            table.put({"pk": f"w{worker}", "sk": f"{i:03d}", "v": i})
            table.update(f"w{worker}", f"{i:03d}", set={"seen": True})
        table.batch_put({"pk": f"w{worker}", "sk": f"b{i:03d}"} for i in range(30))

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(write, range(workers)))
    assert len(list(table.scan())) == workers * 55


# validation ---------------------------------------------------------------------------------------
_BAD_KEYS: list[tuple[Any, Any]] = [("", "sk"), ("pk", ""), (None, "sk"), ("pk", None), (123, "sk"), ("pk", 4.5)]

_OPERATIONS: dict[str, Callable[[Table, Any, Any], object]] = {
    "put": lambda t, pk, sk: t.put({"pk": pk, "sk": sk}),
    "put-conditional": lambda t, pk, sk: t.put({"pk": pk, "sk": sk}, condition=Condition.absent()),
    "batch_put": lambda t, pk, sk: t.batch_put([{"pk": "ok", "sk": "ok"}, {"pk": pk, "sk": sk}]),
    "update": lambda t, pk, sk: t.update(pk, sk, set={"a": 1}),
    "get": lambda t, pk, sk: t.get(pk, sk),
    "batch_get": lambda t, pk, sk: t.batch_get([("ok", "ok"), (pk, sk)]),
    "delete": lambda t, pk, sk: t.delete(pk, sk),
}


@pytest.mark.parametrize("operation", list(_OPERATIONS))
def test_invalid_keys_are_rejected(table: Table, operation: str) -> None:
    for pk, sk in _BAD_KEYS:
        with pytest.raises(ValidationError):
            _OPERATIONS[operation](table, pk, sk)


def test_invalid_query_arguments_are_rejected(table: Table) -> None:
    for pk in ("", None, 7):
        with pytest.raises(ValidationError):
            table.query(pk)  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        table.query("p", limit=-1)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), {1, 2}, object()], ids=["nan", "inf", "set", "object"])
def test_unstorable_values_are_rejected(table: Table, value: object) -> None:
    with pytest.raises(ValidationError):
        table.put({"pk": "v", "sk": "1", "value": value})
    with pytest.raises(ValidationError):
        table.batch_put([{"pk": "v", "sk": "2", "value": [value]}])
    table.put({"pk": "v", "sk": "3"})
    with pytest.raises(ValidationError):
        table.update("v", "3", set={"value": {"nested": value}})
    assert table.get("v", "1") is None and table.get("v", "3") == {"pk": "v", "sk": "3"}


def test_null_values_and_null_text_round_trip_and_do_not_hide_a_nan(table: Table) -> None:
    """The SQLite codec skips its NaN check when the JSON has no ``null``: these items must still work."""
    items = [{"pk": "n", "sk": "1", "note": None, "text": "null", "price": 1.5},
             {"pk": "n", "sk": "2", "list": [None, 2.5], "nested": {"a": None}}]
    table.batch_put(items)
    assert sorted(table.query("n"), key=lambda i: i["sk"]) == items
    with pytest.raises(ValidationError):
        table.batch_put([{"pk": "n", "sk": "3", "note": None, "price": float("nan")}])
    assert table.get("n", "3") is None


def test_missing_key_attribute_is_rejected(table: Table) -> None:
    with pytest.raises(ValidationError):
        table.put({"pk": "only-pk"})
    with pytest.raises(ValidationError):
        table.batch_put([{"sk": "only-sk"}])


def test_update_many_small_batches_match_one_large_batch(store: Store) -> None:
    """Batches of one to four (SQLite writes them statement by statement, larger ones in bulk) give the
    same results and items as the same updates in one batch: conditions, creation, expiry, repeated keys."""
    seed = [{"pk": "s", "sk": str(i), "state": "queued", "blob": b"\x01", "nested": {"a": [i]}} for i in range(5)]
    seed.append({"pk": "s", "sk": "old", "state": "queued", "ttl": _past()})  # expired: absent
    updates = [
        Update("s", "0", {"state": "claimed", "by": "w1", "ttl": _future()}, Condition.matches(state="queued")),
        Update("s", "1", {"state": "claimed"}, Condition.matches(state="sent")),  # loses
        Update("s", "2", {"state": "claimed", "detail": None}),  # unconditional
        Update("s", "9", {"state": "new"}, Condition.absent()),  # creates
        Update("s", "3", {"state": "x"}, Condition.absent()),  # exists: loses
        Update("s", "old", {"state": "fresh"}, Condition.absent()),  # expired counts as absent
        Update("s", "0", {"state": "again"}, Condition.matches(state="claimed")),  # sees the first update
        Update("s", "0", {"state": "twice"}, Condition.matches(state="claimed")),  # no longer holds
    ]
    whole, pieces = store.table("whole"), store.table("pieces")
    whole.batch_put(seed)
    pieces.batch_put(seed)
    expected = whole.update_many(updates)
    got: list[Item | None] = []
    for size, start in ((1, 0), (2, 1), (4, 3), (1, 7)):
        got += pieces.update_many(updates[start : start + size])
    assert got == expected
    assert expected[1] is None and expected[4] is None and expected[-1] is None and expected[6] is not None
    ordered = sorted(whole.scan(), key=lambda i: i["sk"])
    assert sorted(pieces.scan(), key=lambda i: i["sk"]) == ordered
    assert [i["sk"] for i in ordered] == ["0", "1", "2", "3", "4", "9", "old"]

"""The port's bulk methods (issue 21) on both adapters: batch_put_frame writes what batch_put writes,
query_many answers what query answers per partition, query_columns_many what query_columns answers."""

from __future__ import annotations

import polars as pl
import pytest

from notify_core.errors import ValidationError
from notify_core.store.port import KeyRange, Table
from tests.contract import test_store_contract as contract

store = contract.store  # the adapters' fixtures: SQLite and DynamoDB Local
table = contract.table
_future = contract._future


def test_batch_put_frame_reads_back_as_batch_put_items(table: Table) -> None:
    ttl = int(_future())
    frame = pl.DataFrame({
        "pk": ["u1", "u1", "u2", "u1"], "sk": ["a", "b", "a", "a"], "n": [1, 2, 3, 4],
        "x": [0.1, 2.5e-6, None, 1.0], "s": ["é\"q", "", None, "z"], "ok": [True, False, None, True],
        "ttl": [ttl] * 4,
    })
    assert table.batch_put_frame(frame) == 3  # ("u1", "a") twice: the last row wins
    got = {(i["pk"], i["sk"]): i for i in table.query_many(["u1", "u2"]).get("u1", [])}
    assert got[("u1", "a")] == {"pk": "u1", "sk": "a", "n": 4, "x": 1.0, "s": "z", "ok": True, "ttl": ttl}
    assert got[("u1", "b")]["x"] == 2.5e-6 and got[("u1", "b")]["s"] == ""
    assert table.get("u2", "a") == {"pk": "u2", "sk": "a", "n": 3, "x": None, "s": None, "ok": None,
                                    "ttl": ttl}
    assert table.batch_put_frame(frame.clear()) == 0


def test_a_frame_of_hundreds_of_rows_stores_what_batch_put_stores(table: Table) -> None:
    """Rows past one statement's worth (SQLite inserts a frame 100 rows a statement, the rest one by one),
    with three keys repeated far apart (the last row wins): the same items as batch_put of the same rows."""
    ttl = int(_future())
    keys = [(f"p{i % 7}", f"s{i:04d}") for i in range(257)] + [("p1", "s0008"), ("p3", "s0150"), ("p4", "s0256")]
    frame = pl.DataFrame({"pk": [k[0] for k in keys], "sk": [k[1] for k in keys], "n": list(range(len(keys))),
                          "x": [i / 7 for i in range(len(keys))], "ttl": [ttl] * len(keys)})
    assert table.batch_put_frame(frame.with_columns(pl.format("f{}", "pk").alias("pk"))) == 257
    table.batch_put({**row, "pk": f"i{row['pk']}"} for row in frame.to_dicts())
    for p in range(7):
        framed, items = table.query(f"fp{p}", consistent=True), table.query(f"ip{p}", consistent=True)
        assert [{**i, "pk": f"p{p}"} for i in framed] == [{**i, "pk": f"p{p}"} for i in items] != []
    assert table.get("fp1", "s0008")["n"] == 257  # type: ignore[index]  # the last row of a repeated key


@pytest.mark.parametrize("bad", [
    pl.DataFrame({"pk": ["u1"], "sk": [""]}),
    pl.DataFrame({"pk": [None], "sk": ["a"]}, schema={"pk": pl.String, "sk": pl.String}),
    pl.DataFrame({"pk": ["u1"], "sk": ["a"], "x": [float("nan")]}),
    pl.DataFrame({"pk": ["u1"], "sk": ["a"], "x": [float("inf")]}),
    pl.DataFrame({"pk": [1], "sk": ["a"]}),
    pl.DataFrame({"pk": ["u1"], "sk": ["a"], "when": [pl.date(2026, 1, 1)]}).with_columns(pl.lit(None).alias("z")),
])
def test_batch_put_frame_rejects_what_no_backend_stores(table: Table, bad: pl.DataFrame) -> None:
    with pytest.raises(ValidationError):
        table.batch_put_frame(bad)
    assert table.get("u1", "a") is None  # nothing written


def test_query_many_is_query_per_partition(table: Table) -> None:
    table.batch_put([{"pk": f"p{i}", "sk": f"2026-01-0{d}#{k}", "v": i * 10 + d}
                     for i in range(5) for d in (1, 2, 3) for k in ("x", "y")])
    pks = ["p3", "p0", "missing", "p3", "p4"]
    for key_range in (None, KeyRange(prefix="2026-01-02#"), KeyRange(start="2026-01-02", end="2026-01-03#\uffff")):
        many = table.query_many(pks, key_range=key_range, consistent=True)
        assert list(many) == ["p3", "p0", "missing", "p4"]
        for pk in many:
            assert many[pk] == table.query(pk, key_range=key_range, consistent=True)
    assert table.query_many([]) == {}
    assert table.query_many(["p3", "p3"], key_range=KeyRange(prefix="2026-01-02#")) == {
        "p3": table.query("p3", key_range=KeyRange(prefix="2026-01-02#"))}  # one partition (the plain query)
    with pytest.raises(ValidationError):
        table.query_many(["p1", ""])


def test_query_many_of_hundreds_of_partitions_keeps_each_answer_with_its_key(table: Table) -> None:
    """More partitions than DynamoDB's queries in flight (16), in an order that is not the keys' own: each
    pk still maps to its own items (the report reads a day's schedules 960 partitions at a time)."""
    table.batch_put([{"pk": f"m{i:03d}", "sk": f"s{k}", "v": i} for i in range(0, 300, 3) for k in range(i % 4)])
    pks = [f"m{i:03d}" for i in reversed(range(300))]
    many = table.query_many(pks)
    assert list(many) == pks
    assert {pk: [item["v"] for item in items] for pk, items in many.items()} == \
        {f"m{i:03d}": [i] * (i % 4 if i % 3 == 0 else 0) for i in reversed(range(300))}


def test_query_columns_many_is_query_columns_per_partition(table: Table) -> None:
    """Each partition's columns as its own ``query_columns`` gives them, for partitions with several, one and no
    items, a repeated pk, more partitions than DynamoDB's queries in flight, key ranges and a repeated name."""
    table.batch_put([{"pk": f"q{i:03d}", "sk": f"2026-01-0{d}#{k}", "n": i * 10 + d, "s": f"v{i}",
                      **({"b": b"\x00\x01"} if d == 2 else {})}
                     for i in range(0, 60, 2) for d in range(1, 1 + i % 4) for k in ("x", "y")])
    pks = [f"q{i:03d}" for i in reversed(range(60))] + ["q004", "missing"]
    for key_range in (None, KeyRange(prefix="2026-01-02#"), KeyRange(start="2026-01-02", end="2026-01-03#\uffff")):
        for attributes in (("sk", "n"), ("s", "b", "sk", "s"), ("absent",)):
            many = table.query_columns_many(pks, attributes, key_range=key_range, consistent=True)
            assert list(many) == list(dict.fromkeys(pks))
            for pk, columns in many.items():
                assert columns == table.query_columns(pk, attributes, key_range=key_range, consistent=True), pk
    assert sum(len(c["sk"]) for c in table.query_columns_many(pks, ("sk",)).values()) == 2 * sum(
        i % 4 for i in range(0, 60, 2))
    assert table.query_columns_many([], ("sk",)) == {}
    with pytest.raises(ValidationError):
        table.query_columns_many(["q002", ""], ("sk",))
    with pytest.raises(ValidationError):
        table.query_columns_many(["q002"], ())

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl

from notify_core.lake import Lake
from notify_core.schemas import PURCHASES, SCHEMAS


def _purchases(rows: list[tuple[str, str, int, datetime]]) -> pl.DataFrame:
    return pl.DataFrame(
        [{"order_id": o, "user_id": "u1", "product_id": p, "quantity": q, "unit_price": 1.0, "ts": ts,
          "country": "UK", "is_return": False} for o, p, q, ts in rows],
        schema=PURCHASES,
    )


JAN = datetime(2011, 1, 5, tzinfo=UTC)
FEB = datetime(2011, 2, 5, tzinfo=UTC)


def test_merge_counts_and_is_idempotent(tmp_path) -> None:
    lake = Lake(tmp_path)
    first = lake.merge("purchases", _purchases([("o1", "p1", 1, JAN), ("o2", "p1", 2, FEB)]))
    assert (first.inserted, first.updated, first.unchanged) == (2, 0, 0)
    assert first.partitions_written == ("month=2011-01", "month=2011-02")
    again = lake.merge("purchases", _purchases([("o1", "p1", 1, JAN), ("o2", "p1", 2, FEB)]))
    assert (again.inserted, again.updated, again.unchanged, again.partitions_written) == (0, 0, 2, ())


def test_changed_row_updates_in_place_and_only_its_partition_is_rewritten(tmp_path) -> None:
    lake = Lake(tmp_path)
    lake.merge("purchases", _purchases([("o1", "p1", 1, JAN), ("o2", "p1", 2, FEB)]))
    result = lake.merge("purchases", _purchases([("o2", "p1", 5, FEB)]))
    assert (result.inserted, result.updated) == (0, 1)
    assert result.partitions_written == ("month=2011-02",)
    assert result.previous["quantity"].to_list() == [2]
    data = lake.read("purchases").sort("order_id")
    assert data["quantity"].to_list() == [1, 5]


def test_a_row_moving_partition_leaves_no_copy_behind(tmp_path) -> None:
    lake = Lake(tmp_path)
    lake.merge("purchases", _purchases([("o1", "p1", 1, JAN)]))
    result = lake.merge("purchases", _purchases([("o1", "p1", 1, FEB)]))
    assert set(result.partitions_written) == {"month=2011-01", "month=2011-02"}
    assert lake.read("purchases")["ts"].to_list() == [FEB]


def test_empty_lake_scans_with_schema(tmp_path) -> None:
    frame = Lake(tmp_path).read("users")
    assert frame.is_empty() and list(frame.schema) == list(SCHEMAS["users"])

"""last_of_each_key (the rows batch_put_frame writes) against its definition: key order, the last row of a
repeated key kept, on frames with unique keys (the unstable sort's fast path) and with repeats (the
stable re-sort), including repeats far apart and keys equal in pk only."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from notify_core.store.port import last_of_each_key


def _reference(frame: pl.DataFrame) -> pl.DataFrame:
    """Definition: for each (pk, sk) the row that came last, in (pk, sk) order."""
    return frame.with_row_index("_i").unique(["pk", "sk"], keep="last").sort("pk", "sk").drop("_i")


@pytest.mark.parametrize(("rows", "keys"), [(2_000, 10**9), (2_000, 300), (2_000, 3), (1, 1), (0, 1)])
def test_last_of_each_key_is_key_order_with_the_last_row_of_a_key(rows: int, keys: int) -> None:
    rng = np.random.default_rng(rows + keys)
    k = rng.integers(0, keys, rows)
    frame = pl.DataFrame({"pk": [f"p{v % 7}" for v in k], "sk": [f"s{v}" for v in k],
                          "n": np.arange(rows, dtype=np.int64)}, schema={"pk": pl.String, "sk": pl.String,
                                                                            "n": pl.Int64})
    got = last_of_each_key(frame)
    assert got.equals(_reference(frame))
    assert got.select(pl.struct("pk", "sk").is_unique().all()).item() in (True, None)

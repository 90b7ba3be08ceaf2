"""notification_ids_of (columns, joined in polars) gives exactly the ids notification_id gives: the ids
are the delivery path's idempotency keys, so a faster path must not change a single one."""

from __future__ import annotations

import numpy as np
import polars as pl

from notify_core.scheduling.ids import notification_id, notification_ids, notification_ids_of


def test_ids_of_columns_equal_the_one_by_one_ids() -> None:
    rng = np.random.default_rng(3)
    users = [f"u{i:05d}" for i in rng.integers(0, 500, 2_000)] + ["ünï©ødé", "a#b", "x\u2028y"]
    camps = [f"c{i:03d}" for i in rng.integers(0, 50, 2_000)] + ["c-é", "c#1", "c"]
    slots = np.concatenate([rng.integers(0, 48, 2_000), [0, 47, 5]]).astype(np.int32)
    got = notification_ids_of(pl.Series(users), pl.Series(camps), "2031-02-03", pl.Series(slots))
    assert got == notification_ids(users, camps, "2031-02-03", slots.tolist())
    assert got[-3:] == [notification_id(u, c, "2031-02-03", int(s)) for u, c, s in zip(users[-3:], camps[-3:],
                                                                                       slots[-3:], strict=True)]


def test_ids_of_empty_columns() -> None:
    assert notification_ids_of(pl.Series([], dtype=pl.String), pl.Series([], dtype=pl.String), "2031-02-03",
                               pl.Series([], dtype=pl.Int32)) == []


def test_user_hashes_are_the_blake2b_definition_whatever_the_input() -> None:
    """Shards and minute offsets of stored schedules come from these hashes: the bulk read of the joined
    digests must give exactly blake2b-64 of each id read little-endian, as the per-id form did."""
    import hashlib

    from notify_core.scheduling.ids import user_hashes

    ids = ["u000000001", "é-ü", "", "x" * 300, "日本", "u000000001"]
    expected = [int.from_bytes(hashlib.blake2b(u.encode(), digest_size=8).digest(), "little") for u in ids]
    assert user_hashes(ids).tolist() == expected
    assert user_hashes(pl.Series(ids)).tolist() == expected
    assert user_hashes(ids).dtype == user_hashes([]).dtype == "uint64"

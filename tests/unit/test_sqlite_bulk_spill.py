"""A bulk writer's transaction stays in memory until its commit, up to a bound (``BULK_SPILL_BYTES``).

Why it matters: a plan chunk's table dirties ~0.7 GB of pages in one transaction. Spilled once the page
cache is full, those pages went to the WAL early and again at the commit (a third more ``pwrite`` calls,
9 % of the 10M run's writer CPU). The bound keeps memory finite for a larger transaction. Shown here with
the cache shrunk to 100 pages and a ~2 MB transaction (500 pages), so no test writes a gigabyte.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from notify_core.store import sqlite as sqlite_store
from notify_core.store.sqlite import BULK_SPILL_BYTES, SqliteStore


def _wal_bytes_mid_transaction(store: SqliteStore) -> int:
    """The WAL's size after ~2 MB of new pages in one open transaction (rolled back after)."""
    conn = store.connection()
    conn.execute("CREATE TABLE IF NOT EXISTS blobs (b BLOB)")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.execute("PRAGMA cache_size=100")  # pages: the transaction below is five times the cache
    conn.execute("BEGIN")
    try:
        conn.execute("WITH s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 500) "
                     "INSERT INTO blobs SELECT randomblob(3900) FROM s")
        wal = store.path.with_name(store.path.name + "-wal")
        return wal.stat().st_size if wal.exists() else 0
    finally:
        conn.execute("ROLLBACK")


def test_a_bulk_transaction_is_not_spilled_to_the_wal_before_its_commit(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "store.sqlite")
    try:
        store.tune_for_bulk_writes()
        page = store.connection().execute("PRAGMA page_size").fetchone()[0]
        # the bound itself, not "off": SQLite takes a multiple of 256 pages as off (no bound at all)
        assert store.connection().execute("PRAGMA cache_spill").fetchone()[0] == BULK_SPILL_BYTES // page | 1
        assert _wal_bytes_mid_transaction(store) < 100 * page  # nothing of the ~2 MB written before the commit
    finally:
        store.close()


def test_other_connections_still_spill_and_so_does_a_transaction_past_the_bound(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = SqliteStore(tmp_path / "store.sqlite")
    try:
        assert _wal_bytes_mid_transaction(store) > 1_000_000  # not tuned: SQLite's default spills
        monkeypatch.setattr(sqlite_store, "BULK_SPILL_BYTES", 256 * 4096)  # a bound under the transaction
        # (256 pages exactly: the multiple of 256 SQLite would read as "off" if it were passed as it is)
        store.tune_for_bulk_writes()
        assert _wal_bytes_mid_transaction(store) > 1_000_000  # past the bound it spills: memory stays bounded
    finally:
        store.close()

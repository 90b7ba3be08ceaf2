"""The SQLite Store's physical layout: rowid tables with a unique (pk, sk) index, and files written with
the earlier clustered (WITHOUT ROWID) layout still read and write correctly."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from notify_core.store.port import KeyRange
from notify_core.store.sqlite import SqliteStore


def _exercise(store: SqliteStore) -> None:
    table = store.table("user_events")
    table.batch_put([{"pk": "u1", "sk": f"2024-01-0{d}#e{d}", "n": d} for d in (3, 1, 2)])
    table.batch_put([{"pk": "u1", "sk": "2024-01-02#e2", "n": 20}, {"pk": "u2", "sk": "x", "n": 0}])  # upsert
    assert [i["n"] for i in table.query("u1")] == [1, 20, 3]
    assert [i["sk"] for i in table.query("u1", key_range=KeyRange(start="2024-01-02"))] == [
        "2024-01-02#e2", "2024-01-03#e3"]
    assert table.get("u2", "x") == {"pk": "u2", "sk": "x", "n": 0}
    table.delete("u1", "2024-01-01#e1")
    assert len(list(table.scan())) == 3


def test_tables_are_rowid_tables_with_a_unique_key_index(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "store.sqlite")
    _exercise(store)
    store.close()
    with sqlite3.connect(tmp_path / "store.sqlite") as conn:
        ddl = conn.execute("SELECT sql FROM sqlite_master WHERE name='user_events'").fetchone()[0]
        index = conn.execute("SELECT sql FROM sqlite_master WHERE name='user_events__key'").fetchone()[0]
    assert "WITHOUT ROWID" not in ddl and "UNIQUE INDEX" in index and "(pk, sk)" in index


def test_a_file_with_the_clustered_layout_keeps_working(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "store.sqlite") as conn:
        conn.execute('CREATE TABLE "user_events" (pk TEXT NOT NULL, sk TEXT NOT NULL, ttl REAL, body TEXT NOT NULL, '
                     "PRIMARY KEY (pk, sk)) WITHOUT ROWID")
    store = SqliteStore(tmp_path / "store.sqlite")
    _exercise(store)
    store.close()


def test_a_batch_bigger_than_one_json_statement_lands_whole(tmp_path: Path) -> None:
    """batch_put sends rows as JSON arrays of at most _JSON_CHUNK rows (SQLite caps one value at 1 GB; a
    1M-user plan write passed it), all in the batch's one transaction; a repeated key: the later item wins."""
    from notify_core.store import sqlite as sqlite_store

    store = SqliteStore(tmp_path / "store.sqlite")
    table = store.table("plans")
    n = 2 * sqlite_store._JSON_CHUNK + 5
    items = [{"pk": f"u{i % 1000:04d}", "sk": f"{i:08d}", "n": i} for i in range(n)]
    items.append({"pk": "u0000", "sk": "00000000", "n": -1})  # sorts into the first chunk, written last
    assert table.batch_put(items) == n + 1
    assert len(list(table.scan())) == n
    assert table.get("u0000", "00000000") == {"pk": "u0000", "sk": "00000000", "n": -1}
    store.close()

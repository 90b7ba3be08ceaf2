"""Embeddings converge to the lake state: a Store that lost its vectors (wiped or restored) gets them back
on the next run, although the lake says nothing needs embedding."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from notify_core.convergence import table_digest
from notify_core.embeddings.embedder import HashingEmbedder
from notify_core.embeddings.pipeline import (
    refresh_order_embeddings,
    refresh_product_embeddings,
    refresh_user_embeddings,
)
from notify_core.lake import Lake
from notify_core.store import tables
from notify_core.store.sqlite import SqliteStore


def _refresh_all(lake: Lake, store: SqliteStore) -> list[int]:
    embedder = HashingEmbedder()
    now = datetime(2026, 11, 24, 12, tzinfo=UTC)  # the test's own now (vector timestamps)
    runs = [refresh_product_embeddings(lake, store, embedder, now=now), refresh_order_embeddings(lake, store, now=now),
            refresh_user_embeddings(lake, store, now=now)]
    return [r.embedded for r in runs]


def test_a_wiped_store_gets_every_vector_back_without_re_embedding(sample_lake: Lake, tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "store.sqlite")
    first = _refresh_all(sample_lake, store)
    assert all(n > 0 for n in first)
    reference = table_digest(store, tables.EMBEDDINGS)
    store.close()
    for path in tmp_path.glob("store.sqlite*"):
        path.unlink()

    store = SqliteStore(tmp_path / "store.sqlite")
    try:
        again = _refresh_all(sample_lake, store)
        assert again == [0, 0, 0]  # nothing to embed: the lake state is current
        assert table_digest(store, tables.EMBEDDINGS) == reference  # ... and the Store holds it all again
        _refresh_all(sample_lake, store)
        assert table_digest(store, tables.EMBEDDINGS) == reference
    finally:
        store.close()

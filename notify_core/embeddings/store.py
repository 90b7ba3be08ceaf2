"""Where embeddings live: the Store for serving, the lake for bulk reads and deltas.

Store table ``embeddings``: pk ``"<entity_type>#<id>"``, sk ``"vector"``; attributes ``vector``
(float32 little-endian bytes), ``dim``, ``model``, ``content_hash``, ``updated_at``. Serving reads by
key with strong consistency (``consistent=True``), so a vector written by a run is what the next
request sees. The model id travels with every vector: a reader can refuse a vector from another model.

The lake keeps one Parquet table per entity type (``embeddings_<type>``: id, content_hash, model,
updated_at, vector, plus per-type columns). Deltas diff against these tables, never by scanning the
Store. Both copies are written by the same run, Store first: a crash between the two only makes the
next run redo (idempotently) what it already wrote. A Store that lost vectors the lake says it holds
(wiped, restored, a failed write the lake never saw) is repaired by :func:`converge_state` at the start
of each run, through the convergence ledger: free when the ledger's digest matches the lake state.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import polars as pl

from notify_core.convergence import Ledger, frame_digest
from notify_core.embeddings.embedder import Vectors
from notify_core.lake import WHOLE, Lake
from notify_core.store import tables
from notify_core.store.port import Item, Store

EMBEDDINGS_TABLE = tables.EMBEDDINGS
VECTOR_SK = tables.VECTOR_SK

PRODUCT = "product"
ORDER = "order"
USER = "user"
CAMPAIGN = "campaign"
ENTITY_TYPES = (PRODUCT, ORDER, USER, CAMPAIGN)

BASE_SCHEMA: dict[str, Any] = {
    "id": pl.String, "content_hash": pl.String, "model": pl.String, "updated_at": pl.Datetime("us", "UTC"),
}
EXTRA_SCHEMAS: dict[str, dict[str, Any]] = {
    ORDER: {"user_id": pl.String, "ts": pl.Datetime("us", "UTC"), "partition": pl.String,
            "product_ids": pl.List(pl.String)},
}


def state_table(entity_type: str) -> str:
    return f"embeddings_{entity_type}"


def state_schema(entity_type: str, dim: int) -> dict[str, Any]:
    return {**BASE_SCHEMA, **EXTRA_SCHEMAS.get(entity_type, {}), "vector": pl.Array(pl.Float32, dim)}


def empty_state(entity_type: str, dim: int) -> pl.DataFrame:
    return pl.DataFrame(schema=state_schema(entity_type, dim))


def vectors_of(state: pl.DataFrame) -> Vectors:
    """The ``vector`` column as an ``(n, dim)`` float32 array."""
    if state.is_empty():
        dim = state.schema["vector"].size if isinstance(state.schema["vector"], pl.Array) else 0
        return np.zeros((0, dim), dtype=np.float32)
    return np.ascontiguousarray(state["vector"].to_numpy(), dtype=np.float32)


def vector_series(vectors: Vectors) -> pl.Series:
    dim = vectors.shape[1]
    return pl.Series("vector", np.ascontiguousarray(vectors, dtype=np.float32), dtype=pl.Array(pl.Float32, dim))


# lake ------------------------------------------------------------------------------------------------
def read_lake_table(lake: Lake, name: str) -> pl.DataFrame | None:
    """A derived lake table, or None when it was never written."""
    try:
        return lake.read_table(name)
    except (FileNotFoundError, OSError, pl.exceptions.ComputeError):
        return None


def load_state(lake: Lake, entity_type: str, *, dim: int) -> pl.DataFrame:
    """What the last successful run embedded; empty if none, or if it was another dimension."""
    frame = read_lake_table(lake, state_table(entity_type))
    schema = state_schema(entity_type, dim)
    if frame is None or frame.schema.get("vector") != schema["vector"]:
        return empty_state(entity_type, dim)
    return frame.select(list(schema)).cast(schema)  # type: ignore[arg-type]


def save_state(lake: Lake, entity_type: str, state: pl.DataFrame) -> bool:
    return lake.write_table(state_table(entity_type), state.sort("id"))


# Store -----------------------------------------------------------------------------------------------
def store_key(entity_type: str, entity_id: str) -> tuple[str, str]:
    return f"{entity_type}#{entity_id}", VECTOR_SK


def _item(entity_type: str, row: dict[str, Any], vector: Vectors) -> Item:
    pk, sk = store_key(entity_type, row["id"])
    updated: datetime = row["updated_at"]
    return {
        "pk": pk, "sk": sk, "entity_type": entity_type, "id": row["id"],
        "vector": np.asarray(vector, dtype="<f4").tobytes(), "dim": int(vector.shape[0]),
        "model": row["model"], "content_hash": row["content_hash"], "updated_at": updated.isoformat(),
    }


def persist(store: Store, entity_type: str, rows: pl.DataFrame, *, removed: Sequence[str] = ()) -> int:
    """Write the given state rows to the Store and delete the removed ids; returns the items written."""
    table = store.table(EMBEDDINGS_TABLE)
    vectors = vectors_of(rows)
    meta = rows.select("id", "content_hash", "model", "updated_at").to_dicts()
    written = 0
    for start in range(0, len(meta), 500):
        written += table.batch_put(
            _item(entity_type, meta[i], vectors[i]) for i in range(start, min(start + 500, len(meta))))
    for entity_id in removed:
        table.delete(*store_key(entity_type, entity_id))
    return written


def _ledger(store: Store, entity_type: str) -> Ledger:
    return Ledger(store, f"{EMBEDDINGS_TABLE}#{entity_type}")


def state_digest(state: pl.DataFrame) -> str:
    """What the Store must hold for a state: one vector per id, of this content hash and model."""
    return frame_digest(state.select("id", "content_hash", "model"))


def record_state(store: Store, entity_type: str, state: pl.DataFrame) -> None:
    """Note in the ledger that the Store holds every vector of ``state`` (call after persisting it)."""
    _ledger(store, entity_type).record(WHOLE, state_digest(state), rows=state.height)


def converge_state(store: Store, entity_type: str, state: pl.DataFrame) -> int:
    """Re-write the vectors of ``state`` the Store lacks or holds in another version; returns how many.

    Reads nothing but the ledger entry when it matches the state's digest (the usual case).
    """
    digest = state_digest(state)
    if _ledger(store, entity_type).recorded().get(WHOLE) == digest:
        return 0
    found = load_embeddings(store, entity_type, state["id"].to_list())
    held = pl.DataFrame({"id": list(found), "_hash": [e.content_hash for e in found.values()],
                         "_model": [e.model for e in found.values()]}, schema={"id": pl.String, "_hash": pl.String,
                                                                                "_model": pl.String})
    missing = state.join(held, on="id", how="left").filter(
        pl.col("_hash").is_null() | (pl.col("_hash") != pl.col("content_hash")) | (pl.col("_model") != pl.col("model"))
    ).drop("_hash", "_model")
    written = persist(store, entity_type, missing) if missing.height else 0
    _ledger(store, entity_type).record(WHOLE, digest, rows=state.height)
    return written


@dataclass(frozen=True, slots=True)
class StoredEmbedding:
    vector: Vectors
    model: str
    content_hash: str
    updated_at: str


def load_embeddings(
    store: Store, entity_type: str, ids: Sequence[str], *, model: str | None = None, consistent: bool = True,
) -> dict[str, StoredEmbedding]:
    """Vectors by id from the Store (strongly consistent by default: what serving uses).

    With ``model`` given, vectors from any other model are left out: mixing two models' vectors in one
    cosine comparison is meaningless, so a caller would rather see them missing.
    """
    keys = [store_key(entity_type, i) for i in dict.fromkeys(ids)]
    found: dict[str, StoredEmbedding] = {}
    for start in range(0, len(keys), 1000):
        for item in store.table(EMBEDDINGS_TABLE).batch_get(keys[start : start + 1000], consistent=consistent):
            if model is not None and item.get("model") != model:
                continue
            vector = np.frombuffer(bytes(item["vector"]), dtype="<f4").astype(np.float32)
            found[str(item["id"])] = StoredEmbedding(vector=vector, model=str(item["model"]),
                                                     content_hash=str(item["content_hash"]),
                                                     updated_at=str(item["updated_at"]))
    return found


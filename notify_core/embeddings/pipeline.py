"""The four embedding refreshes, as plain functions over the lake, the Store and an Embedder.

Each refresh: hash every current entity, diff against what the last successful run embedded (the
lake's ``embeddings_<type>`` table), embed or combine only the new and changed ones, check the full
resulting set, and only if the checks pass write the changes to the Store (the serving copy) and the
lake. A failed run therefore changes nothing that is served, and the next run retries the same delta.

Reads are limited to what can have changed: purchases are read partition by partition (the lake's
monthly partitions), only where a partition file changed since the last run or where an order contains
a product whose embedding changed. Users are computed from the order embeddings alone.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import polars as pl

from notify_core.embeddings import store as emb_store
from notify_core.embeddings.checks import STORE_ROUND_TRIP, CheckOutcome, round_trip_check, vector_checks
from notify_core.embeddings.combine import DEFAULT_HALF_LIFE_DAYS, Interactions, order_vectors, user_vectors
from notify_core.embeddings.delta import Delta, diff, order_hashes, text_hashes, user_hashes
from notify_core.embeddings.embedder import Embedder, Progress, Vectors
from notify_core.embeddings.partitions import partition_fingerprints
from notify_core.embeddings.store import CAMPAIGN, ORDER, PRODUCT, USER
from notify_core.embeddings.texts import campaign_texts, product_texts
from notify_core.lake import Lake
from notify_core.store.port import Store

ROUND_TRIP_SAMPLE = 256
"""Unchanged vectors re-read from the Store per run, besides every vector written (catches drift)."""
ORDER_INPUT_PRODUCTS = "embeddings_order_inputs_products"
ORDER_INPUT_PARTITIONS = "embeddings_order_inputs_partitions"


@dataclass(frozen=True, slots=True)
class EmbeddingRun:
    """What one refresh did, and its checks (persisted is False when a check failed)."""

    entity_type: str
    rows: int
    embedded: int
    inserted: int
    skipped: int
    removed: int
    persisted: bool
    model: str
    checks: list[CheckOutcome]
    details: dict[str, Any] = field(default_factory=dict)
    # the ids re-embedded or removed and persisted: who a downstream re-plan needs to look at again
    changed_ids: tuple[str, ...] = ()
    # digests (``store.state_digest``) of the persisted state this run started from and of the one it leaves
    # (the same when nothing was persisted): the asset's data version follows ``digest``, not ``embedded``,
    # so vectors persisted by an attempt that then failed still count as a change on the next run
    base_digest: str = ""
    digest: str = ""

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    def metadata(self) -> dict[str, Any]:
        """Materialisation metadata; the keys the CLI summary reads ("rows", "embedded", "skipped", ...)."""
        written = self.embedded if self.persisted else 0
        return {
            "rows": self.rows, "embedded": self.embedded, "skipped": self.skipped, "removed": self.removed,
            "store_inserted": self.inserted if self.persisted else 0,
            "store_updated": written - (self.inserted if self.persisted else 0),
            "persisted": self.persisted, "model": self.model, **self.details,
        }


def _is_in(ids: Collection[str]) -> pl.Expr:
    return pl.col("id").is_in(pl.Series(list(ids), dtype=pl.String))


def _new_rows(base: pl.DataFrame, vectors: Vectors, *, model: str, now: datetime, entity_type: str) -> pl.DataFrame:
    """State rows for freshly embedded entities: ``base`` carries id, content_hash and per-type columns."""
    schema = emb_store.state_schema(entity_type, vectors.shape[1])
    frame = base.with_columns(pl.lit(model).alias("model"), pl.lit(now, dtype=schema["updated_at"]).alias("updated_at"))
    return frame.with_columns(emb_store.vector_series(vectors)).select(list(schema)).cast(schema)  # type: ignore[arg-type]


def _finish(
    entity_type: str, *, lake: Lake, store: Store, state: pl.DataFrame, delta: Delta, dim: int, model: str,
    expected_ids: Collection[str], stored: pl.DataFrame, skipped: int, details: dict[str, Any],
) -> EmbeddingRun:
    """Check the full new state; persist the delta only if the checks pass; verify the Store round trip.

    ``stored`` is the persisted state the run started from (its ids and digest)."""
    previous_ids = stored["id"].to_list()
    base_digest = emb_store.state_digest(stored)
    state = state.sort("id")
    ids = state["id"].to_list()
    vectors = emb_store.vectors_of(state)
    checks = vector_checks(ids, vectors, dim=dim, expected_ids=expected_ids)
    inserted = len(set(delta.to_embed) - set(previous_ids))
    persisted = all(c.passed for c in checks)
    if persisted:
        if not delta.is_empty:
            emb_store.persist(store, entity_type, state.filter(_is_in(delta.to_embed)), removed=delta.removed)
            emb_store.save_state(lake, entity_type, state)
            emb_store.record_state(store, entity_type, state)
        written = set(delta.to_embed)
        others = state.filter(~_is_in(written)).sort("content_hash").head(ROUND_TRIP_SAMPLE)["id"].to_list()
        sample = sorted(written | set(others))
        positions = {entity_id: row for row, entity_id in enumerate(ids)}
        rows = np.array([positions[i] for i in sample], dtype=np.int64)
        checks.append(round_trip_check(store, entity_type, sample, vectors[rows] if len(rows) else vectors[:0],
                                       model=model))
    else:
        checks.append(CheckOutcome(STORE_ROUND_TRIP, False, {"not_persisted": "vectors failed their checks"}))
    return EmbeddingRun(entity_type=entity_type, rows=len(ids), embedded=len(delta.to_embed), inserted=inserted,
                        skipped=skipped, removed=len(delta.removed), persisted=persisted, model=model,
                        checks=checks, details=details,
                        changed_ids=tuple(sorted({*delta.to_embed, *delta.removed})) if persisted else (),
                        base_digest=base_digest,
                        digest=emb_store.state_digest(state) if persisted else base_digest)


def _refresh_texts(
    entity_type: str, texts: pl.DataFrame, *, id_column: str, lake: Lake, store: Store, embedder: Embedder,
    batch_size: int, progress: Progress | None, now: datetime,
) -> EmbeddingRun:
    current = text_hashes(texts, id_column=id_column, model_id=embedder.model_id)
    stored = emb_store.load_state(lake, entity_type, dim=embedder.dim)
    emb_store.converge_state(store, entity_type, stored)
    delta = diff(current, stored)
    todo = current.filter(_is_in(delta.to_embed)).sort("id")
    vectors = embedder.embed(todo["text"].to_list(), batch_size=batch_size, progress=progress)
    fresh = _new_rows(todo.select("id", "content_hash"), vectors, model=embedder.model_id,
                      now=now, entity_type=entity_type)
    state = pl.concat([stored.filter(_is_in(delta.unchanged)), fresh])
    return _finish(entity_type, lake=lake, store=store, state=state, delta=delta, dim=embedder.dim,
                   model=embedder.model_id, expected_ids=current["id"].to_list(), stored=stored,
                   skipped=len(delta.unchanged), details={})


def refresh_product_embeddings(
    lake: Lake, store: Store, embedder: Embedder, *, now: datetime, batch_size: int = 64,
    progress: Progress | None = None,
) -> EmbeddingRun:
    """Embed the products whose text (description, category, price band) or model changed."""
    return _refresh_texts(PRODUCT, product_texts(lake.read("products")), id_column="product_id", lake=lake,
                          store=store, embedder=embedder, batch_size=batch_size, progress=progress, now=now)


def refresh_campaign_embeddings(
    lake: Lake, store: Store, embedder: Embedder, *, now: datetime, batch_size: int = 64,
    progress: Progress | None = None,
) -> EmbeddingRun:
    """Embed the campaigns whose text (name, message, category, targeting) or model changed."""
    return _refresh_texts(CAMPAIGN, campaign_texts(lake.read("campaigns")), id_column="campaign_id", lake=lake,
                          store=store, embedder=embedder, batch_size=batch_size, progress=progress, now=now)


def _model_of(state: pl.DataFrame) -> str:
    models = sorted(set(state["model"].to_list()))
    return ",".join(models) if models else "none"


def _dim_of(lake: Lake) -> int:
    frame = emb_store.read_lake_table(lake, emb_store.state_table(PRODUCT))
    dtype = frame.schema.get("vector") if frame is not None else None
    return dtype.size if isinstance(dtype, pl.Array) else 0


def refresh_order_embeddings(lake: Lake, store: Store, *, now: datetime) -> EmbeddingRun:
    """Combine product vectors into one vector per order, re-reading only partitions that can have changed."""
    dim = _dim_of(lake)
    products = emb_store.load_state(lake, PRODUCT, dim=dim)
    stored = emb_store.load_state(lake, ORDER, dim=dim)
    emb_store.converge_state(store, ORDER, stored)

    seen = emb_store.read_lake_table(lake, ORDER_INPUT_PRODUCTS)
    if seen is None:
        seen = pl.DataFrame(schema={"id": pl.String, "content_hash": pl.String})
    product_delta = diff(products.select("id", "content_hash"), seen)
    changed_products = set(product_delta.to_embed) | set(product_delta.removed)

    fingerprints = partition_fingerprints(lake, "purchases")
    old_prints = emb_store.read_lake_table(lake, ORDER_INPUT_PARTITIONS)
    old = dict(zip(old_prints["partition"].to_list(), old_prints["fingerprint"].to_list(), strict=True)) \
        if old_prints is not None else {}
    changed_parts = {p for p, f in fingerprints.items() if old.get(p) != f}
    gone_parts = set(old) - set(fingerprints)
    affected = (
        stored.select("partition", "product_ids").explode("product_ids")
        .filter(pl.col("product_ids").is_in(pl.Series(sorted(changed_products), dtype=pl.String)))
        ["partition"].unique().to_list()
    ) if changed_products else []
    to_read = sorted((changed_parts | set(affected)) & set(fingerprints))

    lines = pl.concat([lake.read("purchases", partition=p).with_columns(pl.lit(p).alias("partition"))
                       for p in to_read], how="vertical_relaxed") if to_read else None
    if lines is not None:
        current = order_hashes(lines, products.select("id", "content_hash")).join(
            lines.group_by("order_id").agg(pl.col("partition").first()).rename({"order_id": "id"}), on="id")
    else:
        current = pl.DataFrame(schema={"id": pl.String, "user_id": pl.String, "ts": pl.Datetime("us", "UTC"),
                                       "content_hash": pl.String, "product_ids": pl.List(pl.String),
                                       "partition": pl.String})
    in_scope = stored.filter(pl.col("partition").is_in(pl.Series(sorted(set(to_read) | gone_parts), dtype=pl.String)))
    delta = diff(current, in_scope)
    if delta.to_embed and lines is not None:
        combined = order_vectors(lines.filter(pl.col("order_id").is_in(pl.Series(delta.to_embed, dtype=pl.String))),
                                 product_ids=products["id"].to_list(), product_vectors=emb_store.vectors_of(products))
        todo = current.filter(_is_in(combined.ids)).sort("id")
        vectors = combined.vectors
    else:
        todo, vectors = current.head(0), np.zeros((0, dim), dtype=np.float32)
    fresh = _new_rows(todo.select("id", "content_hash", "user_id", "ts", "partition", "product_ids"), vectors,
                      model=_model_of(products), now=now, entity_type=ORDER)
    state = pl.concat([stored.filter(~_is_in(set(delta.to_embed) | set(delta.removed))), fresh])
    details = {"partitions_read": len(to_read), "partitions_total": len(fingerprints),
               "products_changed": len(changed_products)}
    result = _finish(ORDER, lake=lake, store=store, state=state, delta=delta, dim=dim, model=_model_of(products),
                     expected_ids=_embeddable_orders(lake, products), stored=stored,
                     skipped=state.height - len(delta.to_embed), details=details)
    if result.persisted:  # what this state was computed from, for the next run's delta
        lake.write_table(ORDER_INPUT_PRODUCTS, products.select("id", "content_hash").sort("id"))
        lake.write_table(ORDER_INPUT_PARTITIONS, pl.DataFrame(
            {"partition": list(fingerprints), "fingerprint": list(fingerprints.values())},
            schema={"partition": pl.String, "fingerprint": pl.String}).sort("partition"))
    return result


def _embeddable_orders(lake: Lake, products: pl.DataFrame) -> list[str]:
    """Every order that should have a vector: a non-return line of an embedded product (a projection scan)."""
    known = products.select(pl.col("id").alias("product_id")).lazy()
    return (
        lake.scan("purchases").select("order_id", "product_id", "quantity", "is_return")
        .filter(~pl.col("is_return").fill_null(False) & (pl.col("quantity") > 0))
        .join(known, on="product_id", how="semi").select("order_id").unique().collect()["order_id"].to_list()
    )


def refresh_user_embeddings(
    lake: Lake, store: Store, *, half_life_days: float = DEFAULT_HALF_LIFE_DAYS,
    interactions: Interactions | None = None, interaction_digests: pl.DataFrame | None = None,
    now: datetime,
) -> EmbeddingRun:
    """Recompute the users whose orders (or interactions) changed, from the order embeddings alone.

    ``interactions`` / ``interaction_digests`` are the clickstream hook: pass the users' interaction
    vectors and a per-user digest of them (``user_id``, ``digest``); a user whose digest changes is
    recomputed with their interactions folded in. Without them users depend on purchases only.
    """
    dim = _dim_of(lake)
    orders = emb_store.load_state(lake, ORDER, dim=dim)
    stored = emb_store.load_state(lake, USER, dim=dim)
    emb_store.converge_state(store, USER, stored)
    current = user_hashes(orders, interaction_digests=interaction_digests)
    delta = diff(current, stored)
    mine = orders.filter(pl.col("user_id").is_in(pl.Series(delta.to_embed, dtype=pl.String)))
    theirs = None
    if interactions is not None:
        keep = interactions.events.with_row_index("_i").filter(
            pl.col("user_id").is_in(pl.Series(delta.to_embed, dtype=pl.String)))
        theirs = Interactions(keep.drop("_i"), interactions.vectors[keep["_i"].to_numpy()])
    combined = user_vectors(mine.select("user_id", "ts"), emb_store.vectors_of(mine), half_life_days=half_life_days,
                            interactions=theirs)
    base = current.filter(_is_in(combined.ids)).sort("id")
    fresh = _new_rows(base, combined.vectors, model=_model_of(orders), now=now,
                      entity_type=USER)
    state = pl.concat([stored.filter(_is_in(delta.unchanged)), fresh])
    return _finish(USER, lake=lake, store=store, state=state, delta=delta, dim=dim, model=_model_of(orders),
                   expected_ids=current["id"].to_list(), stored=stored,
                   skipped=len(delta.unchanged), details={"half_life_days": half_life_days})

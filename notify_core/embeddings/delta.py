"""Content hashes and the delta they decide: what to (re)embed, what is unchanged, what was removed.

The hashes chain down the hierarchy, so a change anywhere reaches exactly the entities it affects:

* product  = H(model id, product text)                  (text: description, category, price band)
* campaign = H(model id, campaign text)                 (text: name, message, category, targeting)
* order    = H(user, order time, sorted lines (product, quantity, product hash))
* user     = H(sorted (order id, order hash), interaction digest)

The model id sits in the leaf hashes, so a model change re-embeds products and campaigns and, through
the chain, every order and user. No wall-clock or moving "as of" enters any hash (see
:mod:`notify_core.embeddings.combine` for why recency weights do not need one), so an immediate
second run finds nothing to do.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

import polars as pl

HASH_SCHEMA = {"id": pl.String, "content_hash": pl.String}
_SEP = "\x1f"


def content_hash(*parts: str) -> str:
    """A stable 128-bit hex digest of the parts (stable across processes and versions, unlike ``hash``)."""
    return hashlib.blake2b(_SEP.join(parts).encode(), digest_size=16).hexdigest()


def _hash_column(values: Iterable[str | None], prefix: str) -> list[str]:
    return [content_hash(prefix, value or "") for value in values]


def text_hashes(texts: pl.DataFrame, *, id_column: str, model_id: str) -> pl.DataFrame:
    """``id``, ``content_hash`` (and ``text``) for texts of one entity type."""
    return pl.DataFrame({
        "id": texts[id_column],
        "content_hash": _hash_column(texts["text"].to_list(), model_id),
        "text": texts["text"],
    }, schema={**HASH_SCHEMA, "text": pl.String})


def order_hashes(lines: pl.DataFrame, product_hashes: pl.DataFrame) -> pl.DataFrame:
    """Per order: ``id``, ``user_id``, ``ts``, ``content_hash``, ``product_ids`` (its embeddable lines).

    Only the lines that take part in the order vector count (non-returns with a known product), so an
    order's hash changes exactly when its vector could.
    """
    usable = (
        lines.filter(~pl.col("is_return").fill_null(False) & (pl.col("quantity") > 0))
        .join(product_hashes.select(pl.col("id").alias("product_id"), pl.col("content_hash").alias("_ph")),
              on="product_id", how="inner")
    )
    grouped = (
        usable.with_columns(pl.concat_str("product_id", pl.col("quantity").cast(pl.String), "_ph",
                                          separator=":").alias("_line"))
        .sort("order_id", "product_id")
        .group_by("order_id", maintain_order=True)
        .agg(
            pl.col("user_id").first(),
            pl.col("ts").min(),
            pl.col("_line").str.join(";"),
            pl.col("product_id").unique().sort().alias("product_ids"),
        )
    )
    keys = grouped.select(
        pl.concat_str(pl.col("user_id").fill_null("<guest>"), pl.col("ts").dt.to_string("%Y-%m-%dT%H:%M:%S"),
                      "_line", separator=_SEP)
    ).to_series().to_list()
    return grouped.select(
        pl.col("order_id").alias("id"), "user_id", "ts",
        pl.Series("content_hash", _hash_column(keys, "order"), dtype=pl.String),
        "product_ids",
    )


def user_hashes(orders: pl.DataFrame, *, interaction_digests: pl.DataFrame | None = None) -> pl.DataFrame:
    """Per user: ``id``, ``content_hash`` from their orders' (``id``, ``user_id``, ``content_hash``).

    ``interaction_digests`` (``user_id``, ``digest``) is the clickstream hook: a user whose interactions
    changed gets a new hash; everyone else keeps theirs.
    """
    per_user = (
        orders.filter(pl.col("user_id").is_not_null())
        .sort("user_id", "id")
        .group_by("user_id", maintain_order=True)
        .agg(pl.concat_str("id", "content_hash", separator=":").str.join(";").alias("_orders"))
    )
    if interaction_digests is not None:
        per_user = per_user.join(interaction_digests.select("user_id", "digest"), on="user_id", how="left")
    else:
        per_user = per_user.with_columns(pl.lit(None, pl.String).alias("digest"))
    keys = per_user.select(pl.concat_str("_orders", pl.col("digest").fill_null(""), separator=_SEP)).to_series()
    return pl.DataFrame({"id": per_user["user_id"], "content_hash": _hash_column(keys.to_list(), "user")},
                        schema=HASH_SCHEMA)


@dataclass(frozen=True, slots=True)
class Delta:
    """Ids split by what a run must do with them (each list sorted)."""

    to_embed: list[str]
    unchanged: list[str]
    removed: list[str]

    @property
    def is_empty(self) -> bool:
        return not self.to_embed and not self.removed


def diff(current: pl.DataFrame, stored: pl.DataFrame) -> Delta:
    """Compare current (``id``, ``content_hash``) with what was last embedded.

    New ids and ids whose hash changed are to be embedded; ids no longer present are removed.
    """
    joined = current.select("id", "content_hash").join(
        stored.select("id", pl.col("content_hash").alias("_old")), on="id", how="full", coalesce=True)
    to_embed = joined.filter(pl.col("content_hash").is_not_null()
                             & (pl.col("_old").is_null() | (pl.col("content_hash") != pl.col("_old"))))
    unchanged = joined.filter(pl.col("content_hash") == pl.col("_old"))
    removed = joined.filter(pl.col("content_hash").is_null())
    return Delta(*(sorted(frame["id"].to_list()) for frame in (to_embed, unchanged, removed)))

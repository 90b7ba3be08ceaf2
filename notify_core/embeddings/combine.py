"""Weighted combinations that build the hierarchy: products -> orders -> users. Vectorised, no loops.

* An order (purchase) vector is the sum of its products' vectors weighted by ``log1p(quantity)``:
  buying 24 of a thing matters more than buying 1, but not 24 times more (wholesale buyers would
  otherwise be one product each). Return lines are excluded: a return is not a signal of interest.
* A user vector is the recency-weighted sum of their order vectors, weight ``0.5 ** (age / half_life)``
  with the age measured from the user's OWN newest event. Because the result is renormalised, any
  common as-of time cancels out (shifting every age by the same amount multiplies every weight by the
  same factor), so this is exactly "recency relative to the data's newest purchase", and it makes a
  user's vector a function of that user's own history only: nothing changes for a user until they do.
* Clickstream interactions fold in through the same formula (``interactions``), with their own weight.

Each combination is one sparse matrix product (rows: outputs, columns: inputs), so memory stays at
``outputs x dim`` instead of materialising one vector per purchase line.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import polars as pl
from scipy import sparse

from notify_core.embeddings.embedder import Vectors, normalise

DEFAULT_HALF_LIFE_DAYS = 90.0
DEFAULT_INTERACTION_WEIGHT = 0.5


@dataclass(frozen=True, slots=True)
class Combined:
    """Output ids (sorted) and their unit vectors, row for row."""

    ids: list[str]
    vectors: Vectors


def _weighted_sum(
    rows: npt.NDArray[np.int64], cols: npt.NDArray[np.int64], weights: npt.NDArray[np.float64],
    n_rows: int, inputs: Vectors,
) -> Vectors:
    matrix = sparse.csr_matrix((weights, (rows, cols)), shape=(n_rows, inputs.shape[0]), dtype=np.float64)
    return normalise(np.asarray(matrix @ inputs.astype(np.float64)))


def order_vectors(lines: pl.DataFrame, *, product_ids: list[str], product_vectors: Vectors) -> Combined:
    """One vector per order from its non-return lines (``order_id``, ``product_id``, ``quantity``, ``is_return``).

    Lines whose product has no vector are ignored; an order left with no line gets no vector.
    """
    index = pl.DataFrame({"product_id": product_ids, "_col": np.arange(len(product_ids), dtype=np.int64)},
                         schema={"product_id": pl.String, "_col": pl.Int64})
    usable = (
        lines.filter(~pl.col("is_return").fill_null(False) & (pl.col("quantity") > 0))
        .join(index, on="product_id", how="inner")
        .sort("order_id")
    )
    if usable.is_empty():
        return Combined([], np.zeros((0, product_vectors.shape[1]), dtype=np.float32))
    order_ids = usable["order_id"].unique(maintain_order=True).to_list()
    rows = usable["order_id"].rank("dense").cast(pl.Int64).to_numpy() - 1
    weights = np.log1p(usable["quantity"].cast(pl.Float64).to_numpy())
    vectors = _weighted_sum(rows, usable["_col"].to_numpy(), weights, len(order_ids), product_vectors)
    return Combined(order_ids, vectors)


@dataclass(frozen=True, slots=True)
class Interactions:
    """The clickstream hook: per-interaction ``user_id``, ``ts`` and ``weight`` rows with a vector each.

    The clickstream consumer will produce these (e.g. the vector of the campaign or product a user
    clicked, weight by event type). They enter the user vector like orders, scaled by ``weight``.
    """

    events: pl.DataFrame  # user_id: String, ts: Datetime(UTC), weight: Float64
    vectors: Vectors


def user_vectors(
    orders: pl.DataFrame, order_vectors: Vectors, *, half_life_days: float = DEFAULT_HALF_LIFE_DAYS,
    interactions: Interactions | None = None,
) -> Combined:
    """One vector per user from ``orders`` (``user_id``, ``ts``; row i has ``order_vectors[i]``).

    Orders without a user (guest checkouts) are ignored.
    """
    if half_life_days <= 0:
        raise ValueError("half_life_days must be positive")
    events = orders.select(pl.col("user_id"), pl.col("ts"), pl.lit(1.0).alias("weight"))
    vectors = order_vectors
    if interactions is not None and interactions.events.height:
        events = pl.concat([events, interactions.events.select("user_id", "ts", pl.col("weight").cast(pl.Float64))])
        vectors = np.vstack([order_vectors, interactions.vectors]).astype(np.float32)
    events = events.with_row_index("_col").filter(pl.col("user_id").is_not_null())
    if events.is_empty():
        return Combined([], np.zeros((0, order_vectors.shape[1]), dtype=np.float32))
    age_days = (pl.col("ts").max().over("user_id") - pl.col("ts")).dt.total_seconds() / 86_400.0
    events = events.with_columns(
        (pl.col("weight") * (0.5 ** (age_days / half_life_days))).alias("_w"),
        (pl.col("user_id").rank("dense").cast(pl.Int64) - 1).alias("_row"),
    )
    user_ids = events.select("user_id", "_row").unique().sort("_row")["user_id"].to_list()
    combined = _weighted_sum(events["_row"].to_numpy(), events["_col"].cast(pl.Int64).to_numpy(),
                             events["_w"].to_numpy(), len(user_ids), vectors)
    return Combined(user_ids, combined)

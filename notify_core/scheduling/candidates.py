"""Where the planner's candidates come from, until the recommender's serving API lands.

The planner only needs a CANDIDATES frame (user_id, campaign_id, relevance). The recommender
(notify_core/recommend: ANN index + repeat-purchase signal) is being built alongside; until it exposes
a batch "candidates for these users" call, this module is the documented fallback: the exact cosine
of each user's embedding with every eligible campaign's embedding (both unit vectors from the same
model), top ``k`` per user. Exact is cheap at Notify's campaign counts (a (users x 384) @ (384 x
campaigns) product per batch) and gives the planner the same shape the recommender will.
"""

from __future__ import annotations

from datetime import date

import numpy as np
import numpy.typing as npt
import polars as pl

from notify_core.lake import Lake
from notify_core.scheduling.models import CANDIDATES

F32 = npt.NDArray[np.float32]


def eligible_campaigns(campaigns: pl.DataFrame, plan_day: date) -> pl.DataFrame:
    """Campaigns that may be sent on ``plan_day``: active and inside their date range (nulls = open)."""
    frame = campaigns
    if "status" in frame.columns:
        frame = frame.filter(pl.col("status").fill_null("active") == "active")
    if "start_date" in frame.columns:
        frame = frame.filter(pl.col("start_date").is_null() | (pl.col("start_date") <= plan_day))
    if "end_date" in frame.columns:
        frame = frame.filter(pl.col("end_date").is_null() | (pl.col("end_date") >= plan_day))
    return frame


def cosine_candidates(
    user_ids: list[str], user_vectors: F32, campaign_ids: list[str], campaign_vectors: F32, *, k: int = 20,
    batch: int = 65_536,
) -> pl.DataFrame:
    """Top-``k`` campaigns per user by cosine (vectors are normalised here), as a CANDIDATES frame."""
    if not user_ids or not campaign_ids:
        return pl.DataFrame(schema=CANDIDATES)
    k = min(k, len(campaign_ids))
    camp = campaign_vectors / np.maximum(np.linalg.norm(campaign_vectors, axis=1, keepdims=True), 1e-12)
    camp = np.ascontiguousarray(camp.T, dtype=np.float32)
    cids = np.asarray(campaign_ids, dtype=object)
    parts = []
    for lo in range(0, len(user_ids), batch):
        u = user_vectors[lo : lo + batch].astype(np.float32)
        u = u / np.maximum(np.linalg.norm(u, axis=1, keepdims=True), 1e-12)
        sims = u @ camp
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k] if k < sims.shape[1] else \
            np.tile(np.arange(sims.shape[1]), (sims.shape[0], 1))
        rel = np.take_along_axis(sims, top, axis=1)
        parts.append(pl.DataFrame({
            "user_id": np.repeat(np.asarray(user_ids[lo : lo + batch], dtype=object), k).tolist(),
            "campaign_id": cids[top.ravel()].tolist(),
            "relevance": rel.ravel().astype(np.float64),
        }, schema=CANDIDATES))
    return pl.concat(parts)


def candidates_from_lake(lake: Lake, campaign_ids: list[str], *, k: int = 20) -> pl.DataFrame:
    """The fallback on the demo: user and campaign embeddings from the lake (``embeddings_user`` /
    ``embeddings_campaign``), restricted to ``campaign_ids`` (the eligible ones)."""
    from notify_core.embeddings.store import CAMPAIGN, USER, read_lake_table, state_table, vectors_of
    users = read_lake_table(lake, state_table(USER))
    camps = read_lake_table(lake, state_table(CAMPAIGN))
    if users is None or camps is None or users.is_empty() or camps.is_empty():
        return pl.DataFrame(schema=CANDIDATES)
    camps = camps.filter(pl.col("id").is_in(campaign_ids))
    return cosine_candidates(users["id"].to_list(), vectors_of(users), camps["id"].to_list(), vectors_of(camps), k=k)

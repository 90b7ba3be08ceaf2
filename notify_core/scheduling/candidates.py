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

from notify_core.campaigns.eligibility import PerPair, available_on, ineligible_codes
from notify_core.campaigns.table import CampaignTable
from notify_core.lake import Lake
from notify_core.scheduling.models import CANDIDATES

F32 = npt.NDArray[np.float32]


def eligible_campaigns(campaigns: pl.DataFrame, plan_day: date) -> pl.DataFrame:
    """Campaigns that may be sent to someone on ``plan_day`` (active and inside their dates; nulls = open):
    the user-independent half of :func:`notify_core.campaigns.eligibility.ineligible_codes`."""
    if campaigns.is_empty():
        return campaigns
    return campaigns.filter(pl.Series(available_on(CampaignTable.from_frame(campaigns), plan_day)))


_SEP = "\x1f"


def drop_ineligible(candidates: pl.DataFrame, *, users: pl.DataFrame, campaigns: pl.DataFrame,
                    day: date) -> pl.DataFrame:
    """The candidate pairs whose campaign may go to their user on ``day``, by the one eligibility rule
    (status, dates, country targeting, opted-out categories), in the candidates' order.

    ``users`` may carry ``country`` and ``opted_out_categories``; without a country a user gets only
    untargeted campaigns. Pairs whose campaign is not in ``campaigns`` are dropped.
    """
    if candidates.is_empty():
        return candidates
    table = CampaignTable.from_frame(campaigns)
    rows = pl.DataFrame({"campaign_id": list(table.ids), "_row": np.arange(len(table), dtype=np.int64)},
                        schema={"campaign_id": pl.String, "_row": pl.Int64})
    country = pl.col("country").cast(pl.String) if "country" in users.columns else pl.lit(None, dtype=pl.String)
    opted = (pl.col("opted_out_categories").list.drop_nulls().list.unique().list.sort().list.join(_SEP)
             if "opted_out_categories" in users.columns else pl.lit(None, dtype=pl.String))
    profile = users.select("user_id", country.fill_null("").alias("_country"), opted.fill_null("").alias("_opted"))
    pairs = (candidates.with_row_index("_i").join(rows, on="campaign_id", how="inner")
             .join(profile.unique("user_id", keep="first"), on="user_id", how="left")
             .with_columns(pl.col("_country", "_opted").fill_null("")).sort("_i"))
    country_values = sorted(set(pairs["_country"].unique().to_list()))
    opted_values = sorted(set(pairs["_opted"].unique().to_list()))
    codes = ineligible_codes(
        table, pairs["_row"].to_numpy(), day=day,
        countries=PerPair(_codes(pairs["_country"], country_values), [c or None for c in country_values]),
        opted_out=PerPair(_codes(pairs["_opted"], opted_values),
                          [frozenset(o.split(_SEP)) if o else frozenset() for o in opted_values]),
    )
    return pairs.filter(pl.Series(codes == 0)).select(candidates.columns)


def _codes(values: pl.Series, vocabulary: list[str]) -> npt.NDArray[np.int64]:
    return values.cast(pl.Enum(vocabulary)).to_physical().to_numpy().astype(np.int64)


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

"""The planner's candidate rules that are not the recommender's: eligibility per pair, and the cosine fallback.

The planner only needs a CANDIDATES frame (user_id, campaign_id, relevance). When an index is published
the recommender gives it (:func:`notify_core.scheduling.service.candidate_source`); until one is, the
documented fallback here: the exact cosine of each user's embedding with every eligible campaign's
embedding (both unit vectors from the same model), top ``k`` per user. Exact is cheap enough at Notify's
campaign counts (one 384-dim dot product a cell, ~0.14 ms a user at 1,662 campaigns: see
:func:`cosine_candidates` for why not BLAS) and gives the planner the same shape.
"""

from __future__ import annotations

from datetime import date
from typing import NamedTuple

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

    Why per user and not per pair: a chunk has ~20 pairs a user, and joining the users' profiles onto the
    pairs (then sorting them back into order) cost ~4 us a user, 15-20 % of planning. The profile is coded
    once per user here; the pairs only look up two integers (none at all when no user has a country or an
    opt-out, where the rule cannot depend on the user).
    """
    if candidates.is_empty():
        return candidates
    table = CampaignTable.from_frame(campaigns.filter(pl.col("campaign_id").is_not_null())
                                     .unique("campaign_id", keep="first", maintain_order=True))
    rows = table.rows_of_column(candidates["campaign_id"])
    known = rows >= 0
    profile = users.unique("user_id", keep="first", maintain_order=True)
    country = pl.col("country").cast(pl.String) if "country" in profile.columns else pl.lit(None, dtype=pl.String)
    opted = (pl.col("opted_out_categories").list.drop_nulls().list.unique().list.sort().list.join(_SEP)
             if "opted_out_categories" in profile.columns else pl.lit(None, dtype=pl.String))
    profile = profile.select("user_id", country.fill_null("").alias("_country"), opted.fill_null("").alias("_opted"))
    country_values = sorted(set(profile["_country"].unique().to_list()) | {""})
    opted_values = sorted(set(profile["_opted"].unique().to_list()) | {""})
    countries: PerPair[str | None] | None = None
    opted_out: PerPair[frozenset[str]] | frozenset[str] = frozenset()
    if country_values != [""] or opted_values != [""]:  # the rule depends on who: code each pair's user
        at = _user_positions(candidates["user_id"], profile["user_id"])[known]
        missing = at < 0  # a pair whose user is not in ``users``: no country, no opt-out
        user_country = np.append(_codes(profile["_country"], country_values), country_values.index(""))
        user_opted = np.append(_codes(profile["_opted"], opted_values), opted_values.index(""))
        at[missing] = len(profile)
        countries = PerPair(user_country[at], [c or None for c in country_values])
        opted_out = PerPair(user_opted[at], [frozenset(o.split(_SEP)) if o else frozenset() for o in opted_values])
    keep = known.copy()
    keep[known] = ineligible_codes(table, rows[known], day=day, countries=countries, opted_out=opted_out) == 0
    return candidates.filter(pl.Series(keep))


def _user_positions(user_ids: pl.Series, profile_ids: pl.Series) -> npt.NDArray[np.int64]:
    """Each pair's row in the (distinct) profile ids, -1 for a user it does not hold."""
    rows = pl.DataFrame({"user_id": profile_ids, "_row": pl.int_range(len(profile_ids), eager=True, dtype=pl.Int64)})
    return (pl.DataFrame({"user_id": user_ids.cast(pl.String)})
            .join(rows, on="user_id", how="left", maintain_order="left")["_row"].fill_null(-1).to_numpy())


def _codes(values: pl.Series, vocabulary: list[str]) -> npt.NDArray[np.int64]:
    return values.cast(pl.Enum(vocabulary)).to_physical().to_numpy().astype(np.int64)


def cosine_candidates(
    user_ids: list[str], user_vectors: F32, campaign_ids: list[str], campaign_vectors: F32, *, k: int = 20,
    batch: int = 65_536,
) -> pl.DataFrame:
    """Top-``k`` campaigns per user by cosine (vectors are normalised here), as a CANDIDATES frame.

    A user's cosines are the same bits whichever users are asked with it (the daily plan asks chunk by
    chunk): they come from ``np.einsum``'s own loop, one dot product per cell, not from a BLAS matrix
    product, whose per-row result depends on the batch (OpenBLAS 0.3.31 on a Zen CPU sends a one-row
    product to its matrix-vector kernel, which adds in another order: 4 of a user's 6 cells moved in the
    last bit). ~7x the BLAS time (0.14 against 0.02 ms a user at 1,662 campaigns x 384 dims): this is the
    fallback for a deployment with no index, not the planner's path at scale."""
    if not user_ids or not campaign_ids:
        return pl.DataFrame(schema=CANDIDATES)
    k = min(k, len(campaign_ids))
    camp = campaign_vectors / np.maximum(np.linalg.norm(campaign_vectors, axis=1, keepdims=True), 1e-12)
    camp = np.ascontiguousarray(camp, dtype=np.float32)
    cids = np.asarray(campaign_ids, dtype=object)
    parts = []
    for lo in range(0, len(user_ids), batch):
        u = user_vectors[lo : lo + batch].astype(np.float32)
        u = u / np.maximum(np.linalg.norm(u, axis=1, keepdims=True), 1e-12)
        sims = np.einsum("ud,cd->uc", u, camp)
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k] if k < sims.shape[1] else \
            np.tile(np.arange(sims.shape[1]), (sims.shape[0], 1))
        rel = np.take_along_axis(sims, top, axis=1)
        parts.append(pl.DataFrame({
            "user_id": np.repeat(np.asarray(user_ids[lo : lo + batch], dtype=object), k).tolist(),
            "campaign_id": cids[top.ravel()].tolist(),
            "relevance": rel.ravel().astype(np.float64),
        }, schema=CANDIDATES))
    return pl.concat(parts)


class LakeEmbeddings(NamedTuple):
    """The lake's user and campaign embedding tables (``id``, ``vector``, ...), read once per plan."""

    users: pl.DataFrame
    campaigns: pl.DataFrame


def lake_embeddings(lake: Lake) -> LakeEmbeddings | None:
    """``embeddings_user`` and ``embeddings_campaign`` from the lake; None while either is missing or empty."""
    from notify_core.embeddings.store import CAMPAIGN, USER, read_lake_table, state_table
    users = read_lake_table(lake, state_table(USER))
    camps = read_lake_table(lake, state_table(CAMPAIGN))
    if users is None or camps is None or users.is_empty() or camps.is_empty():
        return None
    return LakeEmbeddings(users=users, campaigns=camps)


def candidates_from_embeddings(embeddings: LakeEmbeddings | None, campaign_ids: list[str], *, user_ids: list[str],
                               k: int = 20) -> pl.DataFrame:
    """The fallback on the demo: the cosine top ``k`` of ``user_ids`` (those with an embedding, in the
    table's order) over ``campaign_ids`` (the eligible ones)."""
    from notify_core.embeddings.store import vectors_of
    if embeddings is None:
        return pl.DataFrame(schema=CANDIDATES)
    users = embeddings.users.filter(pl.col("id").is_in(pl.Series(user_ids, dtype=pl.String).implode()))
    camps = embeddings.campaigns.filter(pl.col("id").is_in(pl.Series(campaign_ids, dtype=pl.String).implode()))
    return cosine_candidates(users["id"].to_list(), vectors_of(users), camps["id"].to_list(), vectors_of(camps), k=k)

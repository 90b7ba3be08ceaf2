"""Exploration: a Thompson-sampling bandit over campaigns, so new or uncertain campaigns get a bounded share.

Without it a campaign reaches users only through embedding similarity: a new campaign that the
recommender scores a little lower than the incumbents never gets a slot, so its click-through rate is
never learnt. The model:

* **Per (user, campaign)** the expected CTR is ``relevance x lift(campaign)``: the relevance is the
  user-specific part (the prior's mean, on the relevance scale), the lift how much better or worse the
  campaign does than the platform's average (1 = as its relevance promised).
* **Lift.** The campaign's CTR ~ Beta(s r, s (1 - r)), with ``r`` = the platform CTR (all clicks / all
  deliveries in the counts) and strength ``s = prior_strength`` pseudo-deliveries; its own delivered /
  clicked counts (``campaign_stats``, which the worker and the tracking endpoints keep:
  :mod:`notify_core.delivery.feedback`) update it to Beta(s r + clicks, s (1 - r) + delivered - clicks);
  ``lift = CTR / r``.
* **Expected value.** The planner's base score becomes ``relevance x posterior mean lift x priority
  weight``: with no deliveries this is exactly ``relevance x weight`` (today's score). An earlier version
  used the campaign posterior *instead of* the relevance; in the closed-loop simulator that sent every
  user the campaigns with the best average CTR and cut the simulated CTR from 6.3 % to 3.8 %, so the
  counts now scale the personal score rather than replace it.
* **Exploration slots.** A user explores on a plan day when ``u < share x cap`` (``u`` a blake2b hash of
  user and day, ``cap`` their effective cap), so the expected number of exploring users is ``share x``
  the slot budget; a hard bound trims the explorers (largest ``u`` first) to ``floor(share x sum of
  caps)``. An exploring user draws one CTR per candidate from its campaign's posterior (a numpy
  Generator seeded by user and day), scores ``relevance x drawn lift``, and the best draw takes the
  user's first rank: one slot, the Thompson pick. Campaigns with few deliveries (a wide posterior) win
  draws more often than their mean would.

Everything is a function of (user, plan day, candidates, counts): re-planning the same inputs gives
the same plan (:func:`notify_core.scheduling.store.write_plans` then writes nothing), in any chunking.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
import numpy.typing as npt
import polars as pl

from notify_core.scheduling.models import CAMPAIGN_COUNTS, ExplorationOptions, conform
from notify_core.store import tables
from notify_core.store.port import KeyRange, Store

_EPS = 1e-6


@dataclass(frozen=True, slots=True)
class Rescored:
    """The candidates with ``_base`` from the posterior (and the Thompson pick first), and who explores."""

    candidates: pl.DataFrame
    explorers: npt.NDArray[np.bool_]  # (users,) in the planner's user order


def _unit(key: str) -> float:
    """A stable uniform in [0, 1) from a string (blake2b)."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little") / 2.0**64


def _seed(key: str) -> int:
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little")


def is_active(options: ExplorationOptions, counts: pl.DataFrame | None) -> bool:
    """Whether the bandit changes anything: a share to spend, or counts to learn from."""
    return options.share > 0 or (counts is not None and not counts.is_empty())


def rescore(
    candidates: pl.DataFrame, *, user_ids: Sequence[str], campaign_ids: Sequence[str], caps: npt.NDArray[np.int32],
    counts: pl.DataFrame | None, plan_day: date, options: ExplorationOptions,
) -> Rescored:
    """New ``_base`` for the planner's candidate rows (columns ``_u``, ``_c``, ``relevance``, ``_w``).

    ``user_ids``/``campaign_ids`` name the ``_u``/``_c`` indices; ``caps`` are the users' effective caps;
    ``counts`` follows :data:`CAMPAIGN_COUNTS`.
    """
    n = len(user_ids)
    explorers = np.zeros(n, dtype=bool)
    if candidates.is_empty():
        return Rescored(candidates, explorers)
    s = float(options.prior_strength)
    delivered = np.zeros(len(campaign_ids), dtype=np.float64)
    clicked = np.zeros(len(campaign_ids), dtype=np.float64)
    if counts is not None and not counts.is_empty():
        position = {cid: i for i, cid in enumerate(campaign_ids)}
        for cid, d, c in conform(counts, CAMPAIGN_COUNTS, name="campaign counts").select(
                "campaign_id", "delivered", "clicked").iter_rows():
            i = position.get(cid)
            if i is not None:
                d = max(int(d or 0), 0)
                delivered[i] += d
                clicked[i] += min(max(int(c or 0), 0), d)
    total = float(delivered.sum())
    ref = float(np.clip(clicked.sum() / total, _EPS, 1 - _EPS)) if total > 0 else 0.5
    alpha_c = s * ref + clicked  # per campaign
    beta_c = s * (1 - ref) + (delivered - clicked)
    lift_c = np.where(delivered > 0, alpha_c / (alpha_c + beta_c) / ref, 1.0)  # 1: no deliveries, no change
    frame = candidates.sort("_u", "_c")
    cu = frame["_u"].to_numpy().astype(np.int64)
    cc = frame["_c"].to_numpy().astype(np.int64)
    weight = frame["_w"].to_numpy().astype(np.float64)
    relevance = frame["relevance"].to_numpy().astype(np.float64)
    # the planner's own float32 base (relevance x weight) times the lift: exactly today's score at lift 1
    base = frame["_base"].to_numpy().astype(np.float32) * lift_c[cc].astype(np.float32)

    if options.share > 0:
        day = plan_day.isoformat()
        has = np.zeros(n, dtype=bool)
        has[cu] = True
        cap = np.where(has, np.maximum(caps.astype(np.float64), 0), 0.0)
        u = np.array([_unit(f"explore\x1f{uid}\x1f{day}") for uid in user_ids], dtype=np.float64)
        explorers = (u < options.share * cap) & (cap > 0)
        bound = int(np.floor(options.share * cap.sum()))
        if int(explorers.sum()) > bound:  # the hard bound: keep the explorers with the smallest draws
            chosen = np.flatnonzero(explorers)
            keep = chosen[np.argsort(u[chosen], kind="stable")[:bound]]
            explorers = np.zeros(n, dtype=bool)
            explorers[keep] = True
        starts = np.searchsorted(cu, np.arange(n + 1))
        for user in np.flatnonzero(explorers).tolist():
            lo, hi = int(starts[user]), int(starts[user + 1])
            rng = np.random.default_rng(_seed(f"thompson\x1f{user_ids[user]}\x1f{day}"))
            drawn = relevance[lo:hi] * rng.beta(alpha_c[cc[lo:hi]], beta_c[cc[lo:hi]]) / ref * weight[lo:hi]
            pick = lo + int(np.argmax(drawn))
            top = float(base[lo:hi].max())
            sampled = float(drawn[pick - lo])
            base[pick] = np.float32(max(sampled, top * (1 + 1e-6) + 1e-9))  # the Thompson pick takes the first rank
    out = frame.with_columns(pl.Series("_base", base))
    return Rescored(out, explorers)


def campaign_counts(store: Store, campaign_ids: Sequence[str], *, plan_day: date, days: int = 30) -> pl.DataFrame:
    """Delivered and clicked per campaign over the ``days`` before ``plan_day`` (``campaign_stats`` rows).

    ``sent`` is what the worker delivered (it counts successful sends), ``clicked`` the unique clicks. The
    table is read here, not through :mod:`notify_core.delivery.feedback`, so the planner's IAM role (derived
    from what it imports) gains read access to ``campaign_stats`` only."""
    since = (plan_day - timedelta(days=days)).isoformat()
    end = plan_day.isoformat()
    table = store.table(tables.CAMPAIGN_STATS)
    rows = []
    for cid in campaign_ids:
        stats = [r for r in table.query(cid, key_range=KeyRange(start=since, end=end)) if str(r["sk"]) < end]
        if stats:
            rows.append({"campaign_id": cid, "delivered": sum(int(r.get("sent") or 0) for r in stats),
                         "clicked": sum(int(r.get("clicked") or 0) for r in stats)})
    return pl.DataFrame(rows, schema=CAMPAIGN_COUNTS) if rows else pl.DataFrame(schema=CAMPAIGN_COUNTS)

"""The recommender's blended score as pure functions, shared by serving and the offline evaluation.

Every function works on a scalar or on numpy arrays of any shape (broadcasting), so serving can score
one candidate at a time while :mod:`notify_core.evaluation` scores users x campaigns matrices with the
SAME code: what the evaluation measures is what serving computes.

Score = similarity * cosine + affinity * repeat affinity + priority * (priority - 1) / 4
        + copurchase * co-purchase affinity,

* repeat affinity = min(1, log1p(orders) / log1p(saturation)) for the promoted product the user ordered
  most (0 when none): repeat buying is the strongest signal on this retailer (RELEVANCE.md);
* co-purchase affinity in [0, 1]: how strongly the campaign's products are bought together with what the
  user bought (item-item cosine on the user x product matrix, the user's own best campaign = 1). It is
  the discovery signal text vectors lack.

:data:`EVALUATED_WEIGHTS` (the :class:`BlendWeights` defaults) are the weights the offline evaluation
selected on its time split (bench/results/evaluation.md) and what serving's ``ScoreWeights`` default to;
:data:`REPEAT_WEIGHTS` is the scoring serving used before the evaluation (no co-purchase term), kept as
an ablation row.

Co-purchase is computed twice with the same arithmetic: as users x campaigns matrices here
(:func:`copurchase_affinity`, the evaluation) and per request from the neighbour map each index version
ships (:func:`copurchase_products`, :func:`copurchase_campaigns`, :func:`top_campaigns`, serving); both
start from :func:`item_similarity`, and tests/evaluation checks they agree user by user.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
from scipy import sparse

F64 = npt.NDArray[np.float64]
Num = TypeVar("Num", float, F64)
CampaignRef = TypeVar("CampaignRef", str, int)  # a campaign id, or serving's row number of it


@dataclass(frozen=True, slots=True, kw_only=True)
class BlendWeights:
    """Blend weights; the defaults are the evaluated ones (serving's ``ScoreWeights`` defaults too)."""

    similarity: float = 1.0
    affinity: float = 2.0
    priority: float = 0.05
    copurchase: float = 0.2
    affinity_saturation: float = 5.0


EVALUATED_WEIGHTS = BlendWeights()
SERVING_WEIGHTS = EVALUATED_WEIGHTS  # what serving computes: the evaluated weights
REPEAT_WEIGHTS = BlendWeights(affinity=0.6, copurchase=0.0)  # serving before the evaluation (ablation row)
COPURCHASE_CANDIDATES = 20  # co-purchase's best campaigns per user, added to the candidate union
COPURCHASE_NEIGHBOURS = 100  # item-kNN: neighbours kept per product


def repeat_affinity(best_orders: Any, *, saturation: float = 5.0) -> Any:
    """min(1, log1p(orders) / log1p(saturation)); 0 for no order. Scalar in, float out; array in, array out."""
    orders = np.maximum(np.asarray(best_orders, dtype=np.float64), 0.0)
    value = np.minimum(1.0, np.log1p(orders) / np.log1p(saturation))
    return float(value) if value.ndim == 0 else value


def priority_term(priority: Any) -> Any:
    """(priority - 1) / 4: priority 1..5 mapped to 0..1."""
    value = (np.asarray(priority, dtype=np.float64) - 1.0) / 4.0
    return float(value) if value.ndim == 0 else value


def blend(*, similarity: Any, affinity: Any, priority: Any, weights: BlendWeights = EVALUATED_WEIGHTS,
          copurchase: Any = 0.0) -> Any:
    """The blended score (module docstring); ``priority`` is the raw 1..5 priority."""
    value = (weights.similarity * np.asarray(similarity, dtype=np.float64)
             + weights.affinity * np.asarray(affinity, dtype=np.float64)
             + weights.priority * np.asarray(priority_term(priority), dtype=np.float64)
             + weights.copurchase * np.asarray(copurchase, dtype=np.float64))
    return float(value) if value.ndim == 0 else value


def campaign_max(product_values: F64, incidence: sparse.csr_matrix | sparse.csc_matrix) -> F64:
    """users x campaigns: the max of ``product_values`` (users x products) over each campaign's products.

    ``incidence`` is products x campaigns (nonzero where the campaign promotes the product); a campaign
    promoting nothing gets 0.
    """
    csc = sparse.csc_matrix(incidence)
    out = np.zeros((product_values.shape[0], csc.shape[1]), dtype=np.float64)
    for col in range(csc.shape[1]):
        rows = csc.indices[csc.indptr[col]:csc.indptr[col + 1]]
        if rows.size:
            out[:, col] = product_values[:, rows].max(axis=1)
    return out


def item_similarity(user_product: sparse.csr_matrix, *, neighbours: int = COPURCHASE_NEIGHBOURS,
                    chunk: int = 1024) -> sparse.csr_matrix:
    """products x products cosine of the binary user x product matrix, diagonal 0, top ``neighbours`` per row.

    Binary (bought or not) so a wholesale buyer's 50 orders of one thing do not dominate who-buys-what;
    pruning to the nearest neighbours keeps the signal to real co-purchase, not to everything popular
    (ties with the K-th value are kept). Computed ``chunk`` products at a time, so memory is
    chunk x products, not products squared.
    """
    binary = sparse.csr_matrix(user_product, dtype=np.float64, copy=True)
    binary.data[:] = 1.0
    norms = np.sqrt(np.asarray(binary.sum(axis=0)).ravel())
    inv = np.where(norms > 0, 1.0 / np.where(norms > 0, norms, 1.0), 0.0)
    scaled = sparse.csc_matrix(binary @ sparse.diags(inv))
    n = scaled.shape[1]
    blocks = []
    for start in range(0, n, max(1, chunk)):
        stop = min(n, start + max(1, chunk))
        sim = np.asarray((scaled[:, start:stop].T @ scaled).todense(), dtype=np.float64)
        sim[np.arange(stop - start), np.arange(start, stop)] = 0.0
        if 0 < neighbours < n:
            cut = np.partition(sim, -neighbours, axis=1)[:, -neighbours][:, None]
            sim = np.where(sim >= cut, sim, 0.0)
        blocks.append(sparse.csr_matrix(sim))
    return sparse.csr_matrix(sparse.vstack(blocks, format="csr")) if blocks else sparse.csr_matrix((n, n))


Neighbours = Mapping[str, Sequence[tuple[str, float]]]


def neighbour_map(item_sim: sparse.csr_matrix, product_ids: Sequence[str]) -> dict[str, tuple[tuple[str, float], ...]]:
    """``item_similarity``'s rows as product -> ((neighbour, similarity), ...), best first (ties: id)."""
    sim = sparse.csr_matrix(item_sim)
    out: dict[str, tuple[tuple[str, float], ...]] = {}
    for row, pid in enumerate(product_ids):
        cols = sim.indices[sim.indptr[row]:sim.indptr[row + 1]]
        vals = sim.data[sim.indptr[row]:sim.indptr[row + 1]]
        pairs = sorted(((product_ids[c], float(v)) for c, v in zip(cols, vals, strict=True) if v > 0),
                       key=lambda p: (-p[1], p[0]))
        if pairs:
            out[pid] = tuple(pairs)
    return out


def copurchase_products(orders_by_product: Mapping[str, int], neighbours: Neighbours) -> dict[str, float]:
    """Serving's product scores: sum over the user's products of log1p(orders) x neighbour similarity
    (one user's row of ``profile @ item_similarity`` in :func:`copurchase_affinity`)."""
    out: dict[str, float] = {}
    for pid, orders in orders_by_product.items():
        if orders <= 0:
            continue
        weight = math.log1p(orders)
        for other, sim in neighbours.get(pid, ()):
            out[other] = out.get(other, 0.0) + weight * sim
    return out


def copurchase_campaigns(product_scores: Mapping[str, float],
                         campaigns_of: Callable[[str], Iterable[CampaignRef]]) -> dict[CampaignRef, float]:
    """Serving's co-purchase affinity in [0, 1]: a campaign's best promoted product / the user's best campaign
    (one user's row of :func:`copurchase_affinity`; campaigns scoring 0 are left out)."""
    best: dict[CampaignRef, float] = {}
    for pid, value in product_scores.items():
        if value <= 0:
            continue
        for cid in campaigns_of(pid):
            if value > best.get(cid, 0.0):
                best[cid] = value
    top = max(best.values(), default=0.0)
    return {cid: value / top for cid, value in best.items()} if top > 0 else {}


def top_campaigns(scores: Mapping[str, float], k: int = COPURCHASE_CANDIDATES) -> list[str]:
    """The ``k`` best campaigns by score (ties: campaign id), scores > 0 only: serving's co-purchase
    candidates (the evaluation's ``_top_mask`` over campaigns sorted by id)."""
    return [cid for cid, value in sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[:k] if value > 0]


def copurchase_affinity(user_rows: sparse.csr_matrix, item_sim: sparse.csr_matrix,
                        incidence: sparse.csr_matrix) -> F64:
    """users x campaigns in [0, 1]: co-purchase strength of each campaign for each user, per-user max = 1.

    A user's product profile is ``log1p(orders)`` (the same damping as everywhere in Notify); a product's
    score is the profile times the item similarity; a campaign takes its best product.
    """
    profile = sparse.csr_matrix(user_rows, dtype=np.float64, copy=True)
    profile.data = np.log1p(profile.data)
    products = np.asarray((profile @ item_sim).todense(), dtype=np.float64)
    per_campaign = campaign_max(products, incidence)
    top = per_campaign.max(axis=1, keepdims=True)
    return np.where(top > 0, per_campaign / np.where(top > 0, top, 1.0), 0.0)

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
  the discovery signal text vectors lack. ``copurchase = 0`` is the scoring serving used before the
  offline evaluation (issue 8); :data:`EVALUATED_WEIGHTS` are the weights the evaluation selected.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
from scipy import sparse

F64 = npt.NDArray[np.float64]
Num = TypeVar("Num", float, F64)


@dataclass(frozen=True, slots=True, kw_only=True)
class BlendWeights:
    """Blend weights; the defaults are serving's ``ScoreWeights`` (no co-purchase term)."""

    similarity: float = 1.0
    affinity: float = 0.6
    priority: float = 0.05
    copurchase: float = 0.0
    affinity_saturation: float = 5.0


SERVING_WEIGHTS = BlendWeights()
EVALUATED_WEIGHTS = BlendWeights(similarity=1.0, affinity=0.6, priority=0.05, copurchase=0.6)


def repeat_affinity(best_orders: Any, *, saturation: float = 5.0) -> Any:
    """min(1, log1p(orders) / log1p(saturation)); 0 for no order. Scalar in, float out; array in, array out."""
    orders = np.maximum(np.asarray(best_orders, dtype=np.float64), 0.0)
    value = np.minimum(1.0, np.log1p(orders) / np.log1p(saturation))
    return float(value) if value.ndim == 0 else value


def priority_term(priority: Any) -> Any:
    """(priority - 1) / 4: priority 1..5 mapped to 0..1."""
    value = (np.asarray(priority, dtype=np.float64) - 1.0) / 4.0
    return float(value) if value.ndim == 0 else value


def blend(*, similarity: Any, affinity: Any, priority: Any, weights: BlendWeights = SERVING_WEIGHTS,
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


def item_similarity(user_product: sparse.csr_matrix, *, neighbours: int = 100) -> sparse.csr_matrix:
    """products x products cosine of the binary user x product matrix, diagonal 0, top ``neighbours`` per row.

    Binary (bought or not) so a wholesale buyer's 50 orders of one thing do not dominate who-buys-what;
    pruning to the nearest neighbours keeps the signal to real co-purchase, not to everything popular.
    """
    binary = sparse.csr_matrix(user_product, dtype=np.float64, copy=True)
    binary.data[:] = 1.0
    norms = np.sqrt(np.asarray(binary.sum(axis=0)).ravel())
    inv = np.where(norms > 0, 1.0 / np.where(norms > 0, norms, 1.0), 0.0)
    scaled = binary @ sparse.diags(inv)
    sim = np.asarray((scaled.T @ scaled).todense(), dtype=np.float64)
    np.fill_diagonal(sim, 0.0)
    if 0 < neighbours < sim.shape[1]:
        cut = np.partition(sim, -neighbours, axis=1)[:, -neighbours][:, None]
        sim = np.where(sim >= cut, sim, 0.0)
    return sparse.csr_matrix(sim)


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

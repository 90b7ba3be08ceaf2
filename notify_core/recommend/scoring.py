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

from notify_core.errors import ValidationError

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
    return copurchase_product_scores(orders_by_product, neighbours)[0]


@dataclass(frozen=True, slots=True)
class NeighbourMatrix:
    """A neighbour map as a products x products CSR matrix, built once per index version, so serving's
    co-purchase sums are one sparse product instead of a Python loop over every neighbour of every
    product the user bought (a heavy buyer has hundreds)."""

    ids: npt.NDArray[np.object_]
    index: dict[str, int]
    matrix: sparse.csr_matrix

    @classmethod
    def of(cls, neighbours: Neighbours) -> NeighbourMatrix:
        ids = sorted({p for p in neighbours} | {o for pairs in neighbours.values() for o, _ in pairs})
        index = {p: i for i, p in enumerate(ids)}
        rows, cols, vals = [], [], []
        for pid, pairs in neighbours.items():
            for other, sim in pairs:
                rows.append(index[pid])
                cols.append(index[other])
                vals.append(sim)
        matrix = sparse.csr_matrix((np.asarray(vals, dtype=np.float64), (rows, cols)), shape=(len(ids), len(ids)))
        return cls(ids=np.asarray(ids, dtype=object), index=index, matrix=matrix)


def copurchase_product_scores(orders_by_product: Mapping[str, int],
                              neighbours: Neighbours | NeighbourMatrix) -> tuple[dict[str, float], dict[str, float]]:
    """Two product scores from the user's neighbours: log1p(orders) x similarity (the
    :func:`copurchase_affinity` profile) and distinct orders x similarity (implicit's BM25 ``recommend``
    score, :func:`bm25_scores`: the ranker's ``bm25`` feature). Bought products score too, as in both.
    Pass a :class:`NeighbourMatrix` (serving builds one per version) to skip building it per call."""
    table = neighbours if isinstance(neighbours, NeighbourMatrix) else NeighbourMatrix.of(neighbours)
    out: list[dict[str, float]] = []
    for columns, values in _product_score_columns(orders_by_product, table):
        out.append(dict(zip(table.ids[columns].tolist(), values.tolist(), strict=True)))
    return (out[0], out[1]) if out else ({}, {})


def _product_score_columns(orders_by_product: Mapping[str, int],
                           table: NeighbourMatrix) -> list[tuple[npt.NDArray[np.int32], F64]]:
    """The two product scores of :func:`copurchase_product_scores` as (product columns, non-zero values)
    pairs (none when the user bought nothing the map knows): :func:`_product_score_dense`'s non-zeros."""
    dense = _product_score_dense(orders_by_product, table)
    if dense is None:
        return []
    out = []
    for summed in dense:
        nonzero = np.flatnonzero(summed)
        out.append((nonzero.astype(np.int32), np.asarray(summed[nonzero], dtype=np.float64)))
    return out


def _product_score_dense(orders_by_product: Mapping[str, int], table: NeighbourMatrix) -> F64 | None:
    """The two product scores of :func:`copurchase_product_scores` as a dense 2 x products array (row 0
    log1p(orders) x similarity, row 1 orders x similarity; None when the user bought nothing the map
    knows): the one place their arithmetic lives. Serving gathers campaigns' products straight from it
    (no non-zero scan and scatter back: ~70 us a request on the real data)."""
    matrix = table.matrix
    return _weighted_column_sums(orders_by_product, table.index, matrix.indptr, matrix.indices, matrix.data,
                                 size=len(table.ids))


def _weighted_column_sums(orders_by_product: Mapping[str, int], index: Mapping[str, int],
                          indptr: npt.NDArray[Any], indices: npt.NDArray[Any], data: F64, *, size: int) -> F64 | None:
    """:func:`_product_score_dense` over CSR arrays (the neighbour matrix, or :class:`PromotionMatrix`'s
    copy of it restricted to promoted columns: the same entries of those columns in the same order)."""
    get = index.get  # one dict lookup a product (a heavy buyer has hundreds)
    known = [(row, orders) for p, orders in orders_by_product.items() if orders > 0 and (row := get(p)) is not None]
    if not known:
        return None
    rows = np.fromiter((r for r, _ in known), dtype=np.int64, count=len(known))
    orders = np.fromiter((o for _, o in known), dtype=np.float64, count=len(known))
    return _weighted_row_sums(rows, orders, indptr, indices, data, size=size)


def span_positions(starts: npt.NDArray[np.int64], lengths: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """``arange(starts[i], starts[i] + lengths[i])`` for every i, concatenated: the positions of many spans of
    one flat array, for one gather (no Python loop over the spans: a heavy buyer has hundreds)."""
    offsets = np.cumsum(lengths) - lengths
    return np.asarray(np.repeat(starts - offsets, lengths) + np.arange(int(lengths.sum())), dtype=np.int64)


def _weighted_row_sums(rows: npt.NDArray[np.int64], orders: F64, indptr: npt.NDArray[Any], indices: npt.NDArray[Any],
                       data: F64, *, size: int) -> F64 | None:
    """:func:`_weighted_column_sums` from the ordered products' matrix ``rows`` and their ``orders`` (> 0), in
    the user's product order (serving codes the products once a request: ``UserProducts.neighbour_rows``)."""
    if not len(rows):
        return None
    return _weighted_sums(rows, orders, indptr, indices, data, size=size)[:, 0]


# Accumulator cells (users x columns) from which :func:`_weighted_sums` takes scipy's sparse product instead of one
# scatter-add over the whole block. On the demo's real blocks (1,500 columns; ``bench/results/session52/
# weighted_sums.txt``) the scatter-add costs 0.015 ms for 1 user against scipy's 0.18 (its per-call objects) and
# stays 6-13 % under it up to 256 users (384k cells, 3 MB); at 512 users (6 MB) it costs 51 ms against 33, at
# 1,000 96 against 55: its accumulator no longer stays in cache, while scipy sums one user's row at a time.
SPARSE_PRODUCT_CELLS = 1 << 19


def _weighted_sums(rows: npt.NDArray[np.int64], orders: F64, indptr: npt.NDArray[Any], indices: npt.NDArray[Any],
                   data: F64, *, size: int, users: npt.NDArray[np.int64] | None = None, count: int = 1) -> F64:
    """The two weighted sums (log1p(orders), then orders, x similarity) of the matrix ``rows``' entries per
    column, as 2 x ``count`` x ``size``: for one user (``users`` None), or for ``count`` users at once, ``users[i]``
    the user of ``rows[i]`` (ascending; :func:`copurchase_block`). Each (user, column) cell's terms are added in
    the rows' order, from 0: np.bincount adds sequentially, and scipy's sparse product (weights x matrix, from
    :data:`SPARSE_PRODUCT_CELLS`) walks a user's rows in order and each row's entries in order, so the two ways
    give the same bits and a user's sums are the same whoever shares the call."""
    if users is not None and count * size >= SPARSE_PRODUCT_CELLS:
        return _weighted_sums_sparse(rows, orders, indptr, indices, data, size=size, users=users, count=count)
    starts, lengths = indptr[rows], indptr[rows + 1] - indptr[rows]
    at = span_positions(starts, lengths)
    cells = indices[at] if users is None else np.repeat(users * size, lengths) + indices[at]
    sims = data[at]
    out = np.empty((2, count * size))
    for i, weight in enumerate((np.log1p(orders), orders)):
        out[i] = np.bincount(cells, weights=np.repeat(weight, lengths) * sims, minlength=count * size)
    return out.reshape(2, count, size)


def _weighted_sums_sparse(rows: npt.NDArray[np.int64], orders: F64, indptr: npt.NDArray[Any],
                          indices: npt.NDArray[Any], data: F64, *, size: int, users: npt.NDArray[np.int64],
                          count: int) -> F64:
    """:func:`_weighted_sums` of many users as one scipy product: the weights as a CSR of 2 x ``count`` rows
    (each user's log1p(orders) on their matrix rows, then their orders) times the matrix."""
    matrix = sparse.csr_matrix((data, indices, indptr), shape=(len(indptr) - 1, size))
    per_user = np.concatenate(([0], np.cumsum(np.bincount(users, minlength=count))))
    weights = sparse.csr_matrix((np.concatenate([np.log1p(orders), orders]), np.concatenate([rows, rows]),
                                 np.concatenate([per_user, per_user[1:] + len(rows)])),
                                shape=(2 * count, len(indptr) - 1))
    return np.asarray((weights @ matrix).toarray(), dtype=np.float64).reshape(2, count, size)


@dataclass(frozen=True, slots=True)
class PromotionMatrix:
    """Which campaign rows promote which products of a :class:`NeighbourMatrix`, as CSR (campaign rows x
    its product columns), built once per served snapshot: a user's per-campaign best product
    (:func:`campaign_best`) is then one gather and one ``np.maximum.reduceat`` instead of a Python loop
    over every product their neighbours reach (thousands for a heavy buyer of the real data)."""

    rows: npt.NDArray[np.int64]  # campaign rows promoting at least one mapped product, ascending
    starts: npt.NDArray[np.int64]  # rows[i]'s products are columns[starts[i]:starts[i + 1]]
    columns: npt.NDArray[np.int64]
    # The neighbour matrix restricted to the promoted columns, renumbered 0..len(promoted)-1 (``compact``
    # is ``columns`` renumbered): a user's sums then skip every neighbour no campaign promotes (~60 % of
    # the real data's entries) and the dense row is that much shorter. Same entries in the same order
    # for the kept columns, so the same sums bit for bit. None: use the full matrix (``columns``).
    restricted: tuple[npt.NDArray[Any], npt.NDArray[Any], F64, int] | None = None
    compact: npt.NDArray[np.int64] | None = None

    @classmethod
    def of(cls, neighbours: NeighbourMatrix,
           rows_promoting: Callable[[str], npt.NDArray[np.int64] | None]) -> PromotionMatrix:
        """``rows_promoting(product)``: the campaign rows that may be candidates for it (None: none)."""
        pairs_rows: list[npt.NDArray[np.int64]] = []
        pairs_cols: list[npt.NDArray[np.int64]] = []
        for column, pid in enumerate(neighbours.ids.tolist()):
            found = rows_promoting(pid)
            if found is not None and len(found):
                pairs_rows.append(np.asarray(found, dtype=np.int64))
                pairs_cols.append(np.full(len(found), column, dtype=np.int64))
        if not pairs_rows:
            empty = np.zeros(0, dtype=np.int64)
            return cls(rows=empty, starts=np.zeros(1, dtype=np.int64), columns=empty)
        rows, cols = np.concatenate(pairs_rows), np.concatenate(pairs_cols)
        order = np.lexsort((cols, rows))
        rows, cols = rows[order], cols[order]
        unique, first = np.unique(rows, return_index=True)
        promoted, compact = np.unique(cols, return_inverse=True)
        remap = np.full(len(neighbours.ids), -1, dtype=np.int64)
        remap[promoted] = np.arange(len(promoted))
        full = neighbours.matrix
        mapped = remap[full.indices]
        keep = mapped >= 0
        kept_before = np.concatenate(([0], np.cumsum(keep)))  # kept entries before each entry of the full matrix
        restricted = (kept_before[full.indptr].astype(np.int64), mapped[keep],
                      np.asarray(full.data[keep], dtype=np.float64), len(promoted))
        return cls(rows=unique, starts=np.append(first, len(rows)).astype(np.int64), columns=cols,
                   restricted=restricted, compact=compact.astype(np.int64))


def copurchase_campaign_rows(orders_by_product: Mapping[str, int], neighbours: NeighbourMatrix,
                             promotion: PromotionMatrix, *,
                             ordered: tuple[npt.NDArray[np.int64], F64] | None = None,
                             ) -> tuple[npt.NDArray[np.int64], F64, F64]:
    """Serving's co-purchase per campaign row, as arrays: the rows (ascending) whose best promoted product
    scores > 0, their affinity in (0, 1] (:func:`copurchase_campaigns` of :func:`copurchase_products`) and
    their raw BM25 best (:func:`campaign_best` of the second :func:`copurchase_product_scores`, 0 where
    none). The same arithmetic as those functions (the same sums, the same max and division), vectorised.
    ``ordered``: the user's ordered products already as (neighbour-matrix rows, orders) in their order
    (serving's ``UserProducts.neighbour_rows``), so ``orders_by_product`` is not walked again."""
    empty = (np.zeros(0, dtype=np.int64), np.zeros(0), np.zeros(0))
    if not len(promotion.rows):
        return empty
    if promotion.restricted is not None and promotion.compact is not None:
        indptr, indices, data, size = promotion.restricted
        dense = (_weighted_row_sums(*ordered, indptr, indices, data, size=size) if ordered is not None else
                 _weighted_column_sums(orders_by_product, neighbours.index, indptr, indices, data, size=size))
        columns = promotion.compact
    else:
        dense, columns = _product_score_dense(orders_by_product, neighbours), promotion.columns
    if dense is None:
        return empty
    # each of the two sums' rows gathered and reduced on its own: a 1-D contiguous reduceat is ~3x faster
    # than one over axis 1 of the 2 x pairs gather (the same maxima: max is exact)
    starts = promotion.starts[:-1]
    best_affinity = np.maximum.reduceat(dense[0][columns], starts)
    keep = best_affinity > 0
    if not keep.any():
        return empty
    affinity = best_affinity[keep]
    raw = np.maximum.reduceat(dense[1][columns], starts)[keep]
    return promotion.rows[keep], affinity / affinity.max(), np.where(raw > 0, raw, 0.0)


COPURCHASE_BLOCK_CELLS = 1 << 21  # dense cells a user row of one block's co-purchase (~16 MB an array)


def copurchase_block_users(promotion: PromotionMatrix, *, cells: int = COPURCHASE_BLOCK_CELLS) -> int:
    """How many users :func:`copurchase_block` takes at once: its dense arrays are users x the promoted
    products (the sums), x (campaign, product) pairs (their gather) and x campaigns (the result); the widest
    decides, so a block's memory stays ~``cells`` x 8 bytes an array whatever the catalogue."""
    size = promotion.restricted[3] if promotion.restricted is not None else 0
    return max(1, cells // max(size, len(promotion.columns), 1))


@dataclass(frozen=True, slots=True)
class CopurchaseBlock:
    """:func:`copurchase_campaign_rows` of consecutive users as users x ``promotion.rows`` matrices: ``kept``
    where the user has the campaign row, ``affinity`` and ``raw`` the values there (0 elsewhere, which is also
    what a lookup of a missing row gives). A block ranking reads them only at its candidates (~300 a user)
    instead of listing the ~1,000 rows a heavy buyer's products reach."""

    affinity: F64
    raw: F64
    kept: npt.NDArray[np.bool_]

    def user(self, i: int, promotion: PromotionMatrix) -> tuple[npt.NDArray[np.int64], F64, F64]:
        """User ``i``'s three arrays, as :func:`copurchase_campaign_rows` returns them."""
        keep = self.kept[i]
        return promotion.rows[keep], self.affinity[i][keep], self.raw[i][keep]


def copurchase_block(rows: npt.NDArray[np.int64], orders: F64, users: npt.NDArray[np.int64], *, count: int,
                     promotion: PromotionMatrix) -> CopurchaseBlock:
    """:func:`copurchase_campaign_rows` of ``count`` users at once, from their ordered products' neighbour-matrix
    ``rows`` and ``orders`` (each user's ``UserProducts.neighbour_rows``, concatenated; ``users[i]`` in
    0..count-1 is the user of ``rows[i]``, ascending). The block's sums are one user's (:func:`_weighted_sums`)
    with the cells numbered (user, promoted product), and the same maxima and division follow, so the values
    are the same bits as each user's call. (A block of a few users, serving's, sums by one scatter-add: scipy's
    per-call objects would cost more than the sums; a planning block of many, by scipy's product.) Take at
    most :func:`copurchase_block_users` users a call."""
    width = len(promotion.rows)
    kept = np.zeros((count, width), dtype=bool)
    if not width or promotion.restricted is None or promotion.compact is None or not len(rows):
        return CopurchaseBlock(affinity=np.zeros((count, width)), raw=np.zeros((count, width)), kept=kept)
    indptr, indices, data, size = promotion.restricted
    dense = _weighted_sums(rows, orders, indptr, indices, data, size=size, users=users, count=count)
    best, raw = (_campaign_columns_max(dense[i], promotion) for i in (0, 1))
    np.greater(best, 0, out=kept)
    top = best.max(axis=1, initial=0.0)[:, None]  # each user's best campaign: the max of the kept ones
    # best / top where kept, else 0: divided everywhere, then chosen (``np.divide(..., where=kept)`` is the same
    # values at ~6x the CPU: a masked ufunc goes element by element); a row without a kept cell divides by 1.
    affinity = np.where(kept, best / np.where(top > 0, top, 1.0), 0.0)
    return CopurchaseBlock(affinity=affinity, raw=np.where(kept & (raw > 0), raw, 0.0), kept=kept)


def _campaign_columns_max(products: F64, promotion: PromotionMatrix) -> F64:
    """``np.maximum.reduceat(products[:, promotion.compact], promotion.starts[:-1], axis=1)``: each campaign
    row's best promoted product, for users x promoted products, the same values (a maximum does not round).

    Why not that one line: a 2-D ``reduceat`` along rows costs ~25 ms for 1,000 users x 1,836 pairs, two
    thirds of a block's co-purchase after the sparse product itself, and most campaigns promote one product.
    So: each campaign's first product's column, then a running maximum with its k-th product's column for
    the campaigns that have one (as many passes as the longest campaign has products, each on fewer)."""
    starts, columns = promotion.starts, promotion.compact
    assert columns is not None
    lengths = np.diff(starts)
    # np.take, not products[:, columns]: the same values, but C-ordered (a fancy index along axis 1 gives an
    # F-ordered array, and every later operation on the block, mixed with C-ordered ones, runs ~3x slower)
    best = np.take(products, columns[starts[:-1]], axis=1)
    for k in range(1, int(lengths.max(initial=1))):
        more = np.flatnonzero(lengths > k)
        best[:, more] = np.maximum(best[:, more], np.take(products, columns[starts[more] + k], axis=1))
    return best


def copurchase_campaigns(product_scores: Mapping[str, float],
                         campaigns_of: Callable[[str], Iterable[CampaignRef]]) -> dict[CampaignRef, float]:
    """Serving's co-purchase affinity in [0, 1]: a campaign's best promoted product / the user's best campaign
    (one user's row of :func:`copurchase_affinity`; campaigns scoring 0 are left out)."""
    best = campaign_best(product_scores, campaigns_of)
    top = max(best.values(), default=0.0)
    return {cid: value / top for cid, value in best.items()} if top > 0 else {}


def campaign_best(product_scores: Mapping[str, float],
                  campaigns_of: Callable[[str], Iterable[CampaignRef]]) -> dict[CampaignRef, float]:
    """Per campaign, its best promoted product's score (> 0 only): one user's row of :func:`campaign_max`."""
    best: dict[CampaignRef, float] = {}
    for pid, value in product_scores.items():
        if value <= 0:
            continue
        for cid in campaigns_of(pid):
            if value > best.get(cid, 0.0):
                best[cid] = value
    return best


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


# -- the learned ranker (issue 17) ---------------------------------------------------------------------
# A logistic model over signals serving computes per candidate in microseconds; the evaluation scores
# users x campaigns matrices with the same :func:`ranker_features` and :func:`ranker_score`. The feature
# set and the model family were fixed before any scored window was looked at (README "nested temporal
# validation"); only the coefficients are learned, each time on a window that ends where scoring starts.
# The "repeat_x_*" features are the bought (repeat) candidates' own slopes: a campaign promoting something
# the user ordered and a new one are different questions (would they reorder it / would they try it), so
# the model is segmented by that flag; ``bm25`` is the co-purchase strength before the per-user scaling.
# This set (the second design) was chosen on the development windows only (scored from 2011-04-01 and
# 2011-05-01, both ending before the first rolling cut-off): bench/ranker_design.py, notes/h17reco.md.
# The third design (same windows; notes/p17basket.md) keeps the set and computes ``frequency`` from the
# user's orders summed over the campaign's products instead of the best product's (campaign_orders).
RANKER_FEATURES = ("frequency", "recency", "copurchase", "similarity", "popularity", "priority", "repeat",
                   "repeat_x_copurchase", "repeat_x_similarity", "repeat_x_popularity", "repeat_x_priority",
                   "bm25", "repeat_x_bm25")
RECENCY_DAYS = 30.0  # recency = exp(-days since the last order of a promoted product / 30)
BM25_NEIGHBOURS = 100  # implicit's BM25Recommender(K=100): the co-purchase peer and the ranker's signal
RANKER_COPURCHASE = 50  # the ranker's candidates: co-purchase's best campaigns per user ...
RANKER_POPULAR = 50  # ... and the most popular campaigns overall, beside the ANN top-K and bought ones


@dataclass(frozen=True, slots=True, kw_only=True)
class LinearRanker:
    """score = intercept + sum(coefficient * feature), features in :data:`RANKER_FEATURES` order.

    ``fitted_before`` records the first day of data the fit could NOT see (its labels end there): the
    evaluation refuses a ranker fitted on or after the window it scores.
    """

    coefficients: tuple[float, ...]
    intercept: float = 0.0
    fitted_before: str = ""

    def __post_init__(self) -> None:
        if len(self.coefficients) != len(RANKER_FEATURES):  # a ranker fitted on another feature set
            raise ValidationError(f"the ranker has {len(self.coefficients)} coefficients, the features are "
                                  f"{len(RANKER_FEATURES)}: {', '.join(RANKER_FEATURES)}")

    def as_dict(self) -> dict[str, Any]:
        return {"features": list(RANKER_FEATURES), "coefficients": list(self.coefficients),
                "intercept": self.intercept, "fitted_before": self.fitted_before}


# What serving ranks with: the coefficients `notify evaluate --cutoffs ...` fitted on the most recent window
# of the shipped data (labels up to its held-out cut-off; fitted_before says which), copied here by hand
# like any release artefact. Refit and copy when the data changes.
SERVING_RANKER = LinearRanker(
    coefficients=(1.080857, 0.531493, 2.686847, 1.688938, 2.083787, 0.001474, -0.331685, -2.192692, 0.659987,
                  0.508154, -0.017897, 0.127193, 0.137506),
    intercept=-7.228301, fitted_before="2011-10-01")  # third design: frequency from summed campaign orders


def ranker_features(*, campaign_orders: Any, days_since: Any, copurchase: Any, similarity: Any, popularity: Any,
                    priority: Any, bm25: Any) -> F64:
    """The features (last axis, :data:`RANKER_FEATURES` order) of any shape of candidates.

    ``campaign_orders``: the user's distinct orders summed over the campaign's promoted products
    (:func:`campaign_orders`; serving adds them up the same way). It was the most-ordered product's
    orders until the third design: a campaign is hit when the user buys ANY of its products, so two
    products ordered twice each say more than one ordered three times, and the max threw that away
    (per-user failure analysis on the development windows, notes/p17basket.md); ``days_since``:
    days since the user last ordered one of its products (inf when never); ``copurchase`` in [0, 1]
    (:func:`copurchase_affinity` over the BM25 item-kNN neighbours: serving's :func:`copurchase_campaigns`
    over the neighbour map the index ships); ``similarity``: cosine of user and campaign vectors;
    ``popularity`` in [0, 1] (:func:`popularity_share`); ``priority`` raw 1..5; ``bm25``: the campaign's
    best product's BM25 item-kNN score, distinct orders x similarity (:func:`bm25_scores`, serving's second
    :func:`copurchase_product_scores`), taken as log1p.
    """
    orders = np.maximum(np.asarray(campaign_orders, dtype=np.float64), 0.0)
    days = np.asarray(days_since, dtype=np.float64)
    recency = np.where(np.isfinite(days), np.exp(-np.maximum(days, 0.0) / RECENCY_DAYS), 0.0)
    base = (np.log1p(orders), recency, np.asarray(copurchase, dtype=np.float64),
            np.asarray(similarity, dtype=np.float64), np.asarray(popularity, dtype=np.float64),
            np.asarray(priority_term(priority), dtype=np.float64),
            np.log1p(np.maximum(np.asarray(bm25, dtype=np.float64), 0.0)))
    # the columns written into one C-ordered array (what np.stack(axis=-1) of the broadcast columns made,
    # value for value, so the ranker's matrix product sees the same bits): no broadcast views, no 13
    # expand_dims + concatenate (~40 % of this function's time a serving request)
    out = np.empty((*np.broadcast_shapes(*(b.shape for b in base)), len(RANKER_FEATURES)))
    for i, column in enumerate(base[:6]):
        out[..., i] = column
    repeat = out[..., 0] > 0
    out[..., 6] = repeat
    for i in range(2, 6):
        out[..., 5 + i] = out[..., 6] * out[..., i]
    out[..., 11] = base[6]
    out[..., 12] = out[..., 6] * out[..., 11]
    return out


def campaign_orders(user_orders: sparse.csr_matrix, incidence: sparse.csr_matrix | sparse.csc_matrix) -> F64:
    """users x campaigns: the user's distinct orders summed over each campaign's promoted products (the
    ranker's ``frequency``; serving sums the user's ``user_product`` rows per campaign the same way).

    ``user_orders`` is users x products (distinct orders), ``incidence`` products x campaigns (nonzero where
    the campaign promotes the product, counted once whatever its value).
    """
    promotes = sparse.csr_matrix(incidence, dtype=np.float64, copy=True)
    promotes.data[:] = 1.0
    return np.asarray((sparse.csr_matrix(user_orders, dtype=np.float64) @ promotes).todense(), dtype=np.float64)


def ranker_score(ranker: LinearRanker, features: F64) -> F64:
    """The ranker's score of every candidate (``features``' last axis is :data:`RANKER_FEATURES`)."""
    return np.asarray(features @ np.asarray(ranker.coefficients, dtype=np.float64) + ranker.intercept)


def fit_logistic(features: F64, labels: npt.NDArray[np.bool_], *, l2: float = 1.0,
                 sample_weight: F64 | None = None) -> tuple[F64, float]:
    """L2-regularised logistic regression by Newton's method (few features, so exact and deterministic).

    Returns (coefficients, intercept) in the raw feature space. No scikit-learn: 7 features need a
    7x7 solve per step, and the result must be bit-stable across runs.
    """
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    w = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    z = np.hstack([(x - mean) / scale, np.ones((len(y), 1))])
    beta = np.zeros(z.shape[1])
    penalty = np.full(z.shape[1], l2 / max(1.0, w.sum()))
    penalty[-1] = 0.0
    for _ in range(50):
        p = 1.0 / (1.0 + np.exp(-np.clip(z @ beta, -30, 30)))
        gradient = z.T @ (w * (p - y)) / w.sum() + penalty * beta
        hessian = (z * (w * p * (1 - p))[:, None]).T @ z / w.sum() + np.diag(penalty) + 1e-9 * np.eye(z.shape[1])
        step = np.linalg.solve(hessian, gradient)
        beta -= step
        if float(np.abs(step).max()) < 1e-8:
            break
    coefficients = beta[:-1] / scale
    return coefficients, float(beta[-1] - coefficients @ mean)


def bm25_similarity(user_product: sparse.csr_matrix, *, neighbours: int = BM25_NEIGHBOURS) -> sparse.csr_matrix:
    """products x products BM25 item-kNN similarity: implicit's ``BM25Recommender(K=neighbours)`` fitted on
    the users x products matrix of distinct orders (the co-purchase peer of the evaluation and the
    ranker's co-purchase signal); single-threaded so it is deterministic.

    ``BM25Recommender.fit`` step for step, except that the BM25-weighted matrix goes on as CSR: implicit's
    own ``fit`` hands it over as COO, and its k-NN then converts it with a ``ParameterWarning`` on every fit
    (dozens per evaluation run). The same conversion, so the same similarity, bit for bit."""
    from implicit.nearest_neighbours import BM25Recommender, ItemItemRecommender, bm25_weight

    counts = sparse.csr_matrix(user_product, dtype=np.float64)
    defaults = BM25Recommender(K=neighbours)  # K1 and B stay implicit's own defaults
    weighted = sparse.csr_matrix(bm25_weight(counts.T, defaults.K1, defaults.B).T)
    model = ItemItemRecommender(K=neighbours, num_threads=1)
    model.fit(weighted, show_progress=False)
    return sparse.csr_matrix(model.similarity, dtype=np.float64)


def bm25_scores(user_rows: sparse.csr_matrix, item_sim: sparse.csr_matrix) -> F64:
    """users x products: the user's distinct orders times the BM25 similarity (implicit's ``recommend``
    score, bought products included)."""
    return np.asarray((sparse.csr_matrix(user_rows, dtype=np.float64) @ item_sim).todense(), dtype=np.float64)


def popularity_share(buyers: Any, top: float) -> Any:
    """log1p(recent distinct buyers) / log1p(the most popular campaign's): popularity in [0, 1]."""
    value = np.log1p(np.maximum(np.asarray(buyers, dtype=np.float64), 0.0)) / math.log1p(top) if top > 0 else \
        np.zeros_like(np.asarray(buyers, dtype=np.float64))
    return float(value) if np.ndim(value) == 0 else value


def per_user_share(values: F64) -> F64:
    """Each row divided by its max (0 where the max is 0): a user-relative strength in [0, 1]."""
    top = values.max(axis=1, keepdims=True) if values.size else np.zeros((values.shape[0], 1))
    return np.where(top > 0, values / np.where(top > 0, top, 1.0), 0.0)

"""The ranked methods: baselines, Notify's serving scoring, and its ablations, as users x campaigns scores.

Each method returns a float64 matrix over (evaluated users, campaigns); ``-inf`` marks a campaign the
method may not recommend (not a candidate, or filtered by serving's eligibility rules, which apply to
every method alike so they compete on the same catalogue). Everything is learned from the split's train
side only.

Notify's rows use the production code paths: product texts (``embeddings.texts``), order and user
vectors (``embeddings.combine``), campaign texts, and the blended score from
:mod:`notify_core.recommend.scoring` (the pure functions serving shares), with serving's candidate set
(ANN top-``candidates`` by cosine UNION campaigns promoting a product the user bought).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import timedelta

import numpy as np
import numpy.typing as npt
import polars as pl
from scipy import sparse

from notify_core.embeddings.combine import order_vectors, user_vectors
from notify_core.embeddings.embedder import Embedder, Progress, Vectors
from notify_core.embeddings.texts import campaign_texts, product_texts
from notify_core.evaluation.split import Split, local_midnight_utc
from notify_core.recommend import scoring

F64 = npt.NDArray[np.float64]
NEG = -np.inf
SERVING_CANDIDATES = 150  # Recommender(candidates=150): the ANN's top-K before the repeat-purchase union
POPULAR_DAYS = 90


@dataclass
class Signals:
    """Per-split signals, computed once and shared by the methods that need them."""

    split: Split
    embedder: Embedder
    progress: Progress | None = None
    _cache: dict[str, F64] = field(default_factory=dict)

    def _memo(self, name: str, compute: Callable[[], F64]) -> F64:
        if name not in self._cache:
            self._cache[name] = compute()
        return self._cache[name]

    def cosine(self) -> F64:
        return self._memo("cosine", self._cosine)

    def _cosine(self) -> F64:
        users, campaigns = notify_vectors(self.split, self.embedder, progress=self.progress)
        return np.asarray(users.astype(np.float64) @ campaigns.astype(np.float64).T)

    def best_orders(self) -> F64:
        """users x campaigns: the most orders the user placed of any product the campaign promotes."""
        return self._memo("best_orders", lambda: scoring.campaign_max(
            np.asarray(self.split.user_train_matrix().todense(), dtype=np.float64), self.split.incidence))

    def affinity(self) -> F64:
        return self._memo("affinity", lambda: np.asarray(scoring.repeat_affinity(self.best_orders())))

    def copurchase(self) -> F64:
        def compute() -> F64:
            sim = scoring.item_similarity(self.split.train_matrix)
            return scoring.copurchase_affinity(self.split.user_train_matrix(), sim, self.split.incidence)
        return self._memo("copurchase", compute)

    def popularity(self) -> F64:
        """Distinct buyers of any promoted product in the last 90 days of train, per campaign (1 x campaigns)."""
        def compute() -> F64:
            s = self.split
            since = local_midnight_utc(s.cutoff - timedelta(days=POPULAR_DAYS))
            recent = (s.train.purchases.filter((pl.col("ts") >= since) & ~pl.col("is_return")
                                               & pl.col("user_id").is_not_null())
                      .select("user_id", "product_id").unique())
            users = sorted(recent["user_id"].unique().to_list())
            u = {x: i for i, x in enumerate(users)}
            p = {x: i for i, x in enumerate(s.products)}
            pairs = [(u[a], p[b]) for a, b in recent.iter_rows() if b in p]
            rows = np.array([r for r, _ in pairs], dtype=np.int64)
            cols = np.array([c for _, c in pairs], dtype=np.int64)
            bought = sparse.csr_matrix((np.ones(len(pairs)), (rows, cols)), shape=(len(users), len(s.products)))
            reached = (bought @ s.incidence) > 0
            return np.asarray(reached.sum(axis=0), dtype=np.float64).reshape(1, -1)
        return self._memo("popularity", compute)


def notify_vectors(split: Split, embedder: Embedder, *, progress: Progress | None = None) -> tuple[Vectors, Vectors]:
    """(evaluated users' vectors, campaign vectors), built from TRAIN data by the serving pipeline's functions.

    A user without any embeddable order gets a zero vector (cosine 0, as serving treats "no vector").
    """
    texts = product_texts(split.train.products).sort("product_id")
    product_vectors = embedder.embed(texts["text"].to_list(), progress=progress)
    lines = split.train.purchases.filter(pl.col("user_id").is_not_null())
    orders = order_vectors(lines, product_ids=texts["product_id"].to_list(), product_vectors=product_vectors)
    meta = (lines.group_by("order_id").agg(pl.col("user_id").first(), pl.col("ts").min())
            .join(pl.DataFrame({"order_id": orders.ids}, schema={"order_id": pl.String}).with_row_index("_row"),
                  on="order_id").sort("_row"))
    combined = user_vectors(meta.select("user_id", "ts"), orders.vectors)
    position = {u: i for i, u in enumerate(combined.ids)}
    users = np.zeros((len(split.users), embedder.dim), dtype=np.float32)
    for row, user in enumerate(split.users):
        if user in position:
            users[row] = combined.vectors[position[user]]
    campaign_vectors = embedder.embed(campaign_texts(split.campaigns)["text"].to_list())
    return users, campaign_vectors


def _mask(split: Split, scores: F64) -> F64:
    return np.where(split.eligible, scores, NEG)


def random_scores(signals: Signals) -> F64:
    """Uniform random ranks, seeded by the split's seed."""
    rng = np.random.default_rng(signals.split.seed)
    return _mask(signals.split, rng.random(signals.split.eligible.shape))


def popular_scores(signals: Signals) -> F64:
    """Everyone gets the campaigns with the most distinct recent buyers of their products."""
    return _mask(signals.split, np.broadcast_to(signals.popularity(), signals.split.eligible.shape).copy())


def als_scores(signals: Signals, *, factors: int = 64, alpha: float = 40.0, regularization: float = 0.01,
               iterations: int = 15) -> F64:
    """implicit's ALS on log1p(orders) (confidence 1 + alpha * weight); a campaign scores its best product.

    Single-threaded with a fixed ``random_state`` so the factors are bit-identical across runs.
    """
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    split = signals.split
    weights = sparse.csr_matrix(split.train_matrix, dtype=np.float32, copy=True)
    weights.data = np.log1p(weights.data).astype(np.float32)
    with threadpool_limits(1, "blas"):  # implicit's own loop + threaded BLAS: slower, and warned about
        model = AlternatingLeastSquares(factors=factors, regularization=regularization, alpha=alpha,
                                        iterations=iterations, random_state=split.seed, num_threads=1)
        model.fit(weights, show_progress=False)
    user_factors = np.asarray(model.user_factors, dtype=np.float64)[split.user_rows]
    product_scores = user_factors @ np.asarray(model.item_factors, dtype=np.float64).T
    return _mask(split, scoring.campaign_max(product_scores, split.incidence))


def candidates(signals: Signals, *, ann: int = SERVING_CANDIDATES, copurchase: int = 0) -> npt.NDArray[np.bool_]:
    """Serving's candidate set: the ANN's top ``ann`` by cosine UNION campaigns promoting a bought product
    (UNION the ``copurchase`` best co-purchase campaigns, when that source is on)."""
    cosine = signals.cosine()
    order = np.argsort(-cosine, axis=1, kind="stable")
    keep = np.zeros(cosine.shape, dtype=bool)
    np.put_along_axis(keep, order[:, :ann], True, axis=1)
    keep |= signals.best_orders() > 0
    if copurchase:
        keep |= _top_mask(signals.copurchase(), copurchase)
    return keep


def _top_mask(values: F64, k: int) -> npt.NDArray[np.bool_]:
    top = np.argsort(-values, axis=1, kind="stable")[:, :k]
    mask = np.zeros(values.shape, dtype=bool)
    np.put_along_axis(mask, top, True, axis=1)
    return mask & (values > 0)


def content_scores(signals: Signals) -> F64:
    """Ablation: cosine of user and campaign vectors only (the text signal alone)."""
    return _mask(signals.split, signals.cosine())


def notify_scores(signals: Signals, *, weights: scoring.BlendWeights = scoring.SERVING_WEIGHTS,
                  copurchase_candidates: int = 0) -> F64:
    """Serving's scoring: candidate union, eligibility, then :func:`scoring.blend` with ``weights``."""
    split = signals.split
    co = signals.copurchase() if weights.copurchase else 0.0
    affinity = np.asarray(scoring.repeat_affinity(signals.best_orders(), saturation=weights.affinity_saturation))
    score = np.asarray(scoring.blend(similarity=signals.cosine(), affinity=affinity,
                                     priority=split.priority[None, :].astype(np.float64), weights=weights,
                                     copurchase=co), dtype=np.float64)
    keep = candidates(signals, copurchase=copurchase_candidates)
    return _mask(split, np.where(keep, score, NEG))


@dataclass(frozen=True, slots=True)
class Method:
    """A row of the report: a name, what it is (one line), and how it scores."""

    name: str
    description: str
    score: Callable[[Signals], F64]
    kind: str = "baseline"  # baseline | notify | ablation


def default_methods() -> list[Method]:
    """The report's rows, in order: baselines, then Notify's ablation ladder, then the selected scoring
    (what serving computes: ``ScoreWeights()`` = :data:`scoring.EVALUATED_WEIGHTS`, co-purchase candidates)."""
    repeat = scoring.REPEAT_WEIGHTS
    evaluated = scoring.EVALUATED_WEIGHTS
    with_copurchase = replace(repeat, copurchase=evaluated.copurchase)
    k = scoring.COPURCHASE_CANDIDATES
    return [
        Method("random", "uniform random ranking (seeded)", random_scores),
        Method("most popular", f"distinct buyers of promoted products, last {POPULAR_DAYS} days of train",
               popular_scores),
        Method("implicit ALS", "64 factors, log1p(orders), alpha 40; campaign = its best product", als_scores),
        Method("notify: content only", "cosine(user vector, campaign vector)", content_scores, "ablation"),
        Method("notify: + repeat affinity",
               f"candidate union (ANN top-{SERVING_CANDIDATES} + campaigns of bought products); "
               f"{repeat.similarity:g} cos + {repeat.affinity:g} repeat + {repeat.priority:g} priority "
               "(serving before the evaluation)", lambda s: notify_scores(s, weights=repeat), "ablation"),
        Method("notify: + co-purchase",
               f"+ {evaluated.copurchase:g} co-purchase (item-kNN cosine, K={scoring.COPURCHASE_NEIGHBOURS}), "
               f"co-purchase top-{k} added to candidates",
               lambda s: notify_scores(s, weights=with_copurchase, copurchase_candidates=k), "ablation"),
        Method("notify: selected (serving)",
               f"{evaluated.similarity:g} cos + {evaluated.affinity:g} repeat + {evaluated.copurchase:g} co-purchase"
               f" + {evaluated.priority:g} priority (scoring.EVALUATED_WEIGHTS = ScoreWeights() defaults)",
               lambda s: notify_scores(s, weights=evaluated, copurchase_candidates=k), "notify"),
    ]

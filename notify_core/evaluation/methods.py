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
from datetime import date, timedelta

import numpy as np
import numpy.typing as npt
import polars as pl
from scipy import sparse

from notify_core.embeddings.combine import order_vectors, user_vectors
from notify_core.embeddings.embedder import Embedder, Progress, Vectors
from notify_core.embeddings.texts import campaign_texts, product_texts
from notify_core.errors import ValidationError
from notify_core.evaluation.split import Split, local_midnight_utc
from notify_core.recommend import scoring
from notify_core.recommend.distinct import distinct_products_scores
from notify_core.recommend.repeat_order import repeats_in_frequency_order

F64 = npt.NDArray[np.float64]
NEG = -np.inf
SERVING_CANDIDATES = 150  # Recommender(candidates=150): the ANN's top-K before the repeat-purchase union
POPULAR_DAYS = 90
RANKER_COPURCHASE = scoring.RANKER_COPURCHASE
RANKER_POPULAR = scoring.RANKER_POPULAR


@dataclass
class Signals:
    """Per-split signals, computed once and shared by the methods that need them."""

    split: Split
    embedder: Embedder
    progress: Progress | None = None
    _cache: dict[str, F64] = field(default_factory=dict)
    _sparse: dict[str, sparse.csr_matrix] = field(default_factory=dict)
    _lists: dict[str, list[frozenset[int]]] = field(default_factory=dict)

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
        return self._memo("popularity", lambda: self._buyers(POPULAR_DAYS, 0))

    def _buyers(self, days: int, skip_days: int) -> F64:
        """Distinct buyers of any promoted product between ``days`` and ``skip_days`` days before the cut-off."""
        s = self.split
        since = local_midnight_utc(s.cutoff - timedelta(days=days))
        until = local_midnight_utc(s.cutoff - timedelta(days=skip_days))
        recent = (s.train.purchases.filter((pl.col("ts") >= since) & (pl.col("ts") < until) & ~pl.col("is_return")
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

    def popularity_share(self) -> F64:
        """log1p(recent buyers) / log1p(the most popular campaign's): popularity in [0, 1] (1 x campaigns)."""
        def compute() -> F64:
            pop = self.popularity()
            return np.asarray(scoring.popularity_share(pop, float(pop.max()) if pop.size else 0.0))
        return self._memo("popularity_share", compute)

    def bm25_similarity(self) -> sparse.csr_matrix:
        if "bm25_similarity" not in self._sparse:
            self._sparse["bm25_similarity"] = scoring.bm25_similarity(self.split.train_matrix)
        return self._sparse["bm25_similarity"]

    def bm25_products(self) -> F64:
        """users x products: implicit's BM25 item-kNN (K=100, distinct orders) scores of the evaluated users."""
        return self._memo("bm25_products", lambda: scoring.bm25_scores(self.split.user_train_matrix(),
                                                                        self.bm25_similarity()))

    def bm25_copurchase(self) -> F64:
        """users x campaigns in [0, 1]: :func:`scoring.copurchase_affinity` over the BM25 neighbours (the
        arithmetic serving applies to the neighbour map the index ships)."""
        return self._memo("bm25_copurchase", lambda: scoring.copurchase_affinity(
            self.split.user_train_matrix(), self.bm25_similarity(), self.split.incidence))

    def bm25(self) -> F64:
        """users x campaigns: BM25 item-kNN score of the campaign's best product."""
        return self._memo("bm25", lambda: scoring.campaign_max(self.bm25_products(), self.split.incidence))

    def days_since(self) -> F64:
        """users x campaigns: days from the user's last order of a promoted product to the cut-off (inf: never)."""
        def compute() -> F64:
            s = self.split
            cut = local_midnight_utc(s.cutoff)
            last = (s.train.purchases.filter(~pl.col("is_return") & pl.col("user_id").is_in(s.users))
                    .group_by("user_id", "product_id").agg(pl.col("ts").max()))
            u = {x: i for i, x in enumerate(s.users)}
            p = {x: i for i, x in enumerate(s.products)}
            negative_days = np.full((len(s.users), len(s.products)), -1e9)
            for user, product, ts in last.iter_rows():
                if product in p:
                    negative_days[u[user], p[product]] = -(cut - ts).total_seconds() / 86400.0
            best = scoring.campaign_max(negative_days, s.incidence)  # most recent = least negative
            return np.where(best > -1e8, -best, np.inf)
        return self._memo("days_since", compute)

    def campaign_orders(self) -> F64:
        """users x campaigns: the user's distinct orders summed over the campaign's promoted products."""
        return self._memo("campaign_orders", lambda: scoring.campaign_orders(self.split.user_train_matrix(),
                                                                             self.split.incidence))

    def products_of(self) -> list[frozenset[int]]:
        """Per campaign column, the product columns it promotes (for :func:`distinct_products_scores`)."""
        if "products_of" not in self._lists:
            inc = sparse.csc_matrix(self.split.incidence)
            self._lists["products_of"] = [frozenset(inc.indices[inc.indptr[c]:inc.indptr[c + 1]].tolist())
                                          for c in range(inc.shape[1])]
        return self._lists["products_of"]

    def ranker_features(self) -> F64:
        """users x campaigns x :data:`scoring.RANKER_FEATURES`, through the function serving calls."""
        return self._memo("ranker_features", lambda: scoring.ranker_features(
            campaign_orders=self.campaign_orders(), days_since=self.days_since(),
            copurchase=self.bm25_copurchase(), similarity=self.cosine(), popularity=self.popularity_share(),
            priority=self.split.priority[None, :].astype(np.float64), bm25=self.bm25()))


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


def repeat_buy_scores(signals: Signals) -> F64:
    """The user's most-ordered products' campaigns first (by distinct orders), then by 90-day popularity."""
    return _mask(signals.split, signals.best_orders() + 0.999 * signals.popularity_share())


def repeat_buy_summed_scores(signals: Signals) -> F64:
    """Repeat-buy by the user's distinct orders summed over the campaign's products (the third design's
    frequency, :func:`scoring.campaign_orders`), then by 90-day popularity: a stronger simple peer than the
    issue's most-ordered-product repeat-buy, reported beside it (notes/p17basket.md)."""
    return _mask(signals.split, signals.campaign_orders() + 0.999 * signals.popularity_share())


def bm25_peer_scores(signals: Signals, *, fill: bool = False) -> F64:
    """implicit's BM25 item-kNN (K=100, distinct orders), a campaign = its best product; with ``fill``,
    zero and tied scores are ordered by 90-day popularity."""
    scores = signals.bm25()
    if fill:
        scores = scores + 1e-9 * signals.popularity_share()
    return _mask(signals.split, scores)


def ranker_candidates(signals: Signals) -> npt.NDArray[np.bool_]:
    """The learned ranker's candidates: serving's union (ANN top-150, bought) plus the BM25 top
    ``RANKER_COPURCHASE`` and the ``RANKER_POPULAR`` most popular campaigns."""
    keep = candidates(signals)
    keep |= _top_mask(signals.bm25_copurchase(), RANKER_COPURCHASE)
    keep |= _top_mask(np.broadcast_to(signals.popularity(), keep.shape), RANKER_POPULAR)
    return keep


def ranker_scores(signals: Signals, ranker: scoring.LinearRanker) -> F64:
    """Notify's learned ranker: :func:`scoring.ranker_score` over the candidates (serving's function)."""
    if ranker.fitted_before and date.fromisoformat(ranker.fitted_before) > signals.split.cutoff:
        raise ValidationError(f"a ranker fitted on data up to {ranker.fitted_before} cannot score the window "
                              f"starting {signals.split.cutoff}")
    score = scoring.ranker_score(ranker, signals.ranker_features())
    return _mask(signals.split, np.where(ranker_candidates(signals), score, NEG))


def ranker_scores_repeats_ordered(signals: Signals, ranker: scoring.LinearRanker) -> F64:
    """Serving's fifth design: :func:`ranker_scores`, then the bought campaigns' places refilled in
    summed-orders order (:func:`notify_core.recommend.repeat_order.repeats_in_frequency_order`)."""
    return repeats_in_frequency_order(ranker_scores(signals, ranker), signals.campaign_orders())


@dataclass(frozen=True, slots=True)
class Method:
    """A row of the report: a name, what it is (one line), and how it scores."""

    name: str
    description: str
    score: Callable[[Signals], F64]
    kind: str = "baseline"  # baseline | notify | ablation
    # how a list is built from the scores, applied after the caller's masks (the new-items variant masks
    # bought campaigns first): None = by score alone; :func:`distinct_lists` = serving's fourth design
    lists: Callable[[Signals, F64], F64] | None = None


LIST_PLACES = 20  # places a distinct-products list is built for (the report's HR@k curve and replay go to 20)


def distinct_lists(signals: Signals, scores: F64) -> F64:
    """Serving's list construction (fourth design): a campaign whose products are all promoted higher up
    moves below the list (:func:`notify_core.recommend.distinct.distinct_products_order`)."""
    return distinct_products_scores(scores, signals.products_of(), limit=LIST_PLACES)


NOTIFY = "notify: learned ranker (serving)"
REPEAT_SUMMED = "repeat-buy, summed orders"
DISTINCT = ", distinct products"  # a peer with serving's list construction (fourth design), for a fair match
PEERS = ("repeat-buy", REPEAT_SUMMED, "item-kNN BM25", "item-kNN BM25 + popularity fill", "implicit ALS")


def default_methods(ranker: scoring.LinearRanker | None = None) -> list[Method]:
    """The report's rows, in order: baselines and the strongest simple peers, Notify's ablation ladder,
    then (with a ``ranker`` fitted before the scored window) Notify's learned ranker."""
    repeat = scoring.REPEAT_WEIGHTS
    evaluated = scoring.EVALUATED_WEIGHTS
    with_copurchase = replace(repeat, copurchase=evaluated.copurchase)
    k = scoring.COPURCHASE_CANDIDATES
    methods = [
        Method("random", "uniform random ranking (seeded)", random_scores),
        Method("most popular", f"distinct buyers of promoted products, last {POPULAR_DAYS} days of train",
               popular_scores),
        Method("implicit ALS", "64 factors, log1p(orders), alpha 40; campaign = its best product", als_scores),
        Method("repeat-buy", "the user's most-ordered products' campaigns (distinct orders), then popularity",
               repeat_buy_scores),
        Method(REPEAT_SUMMED, "the user's campaigns by distinct orders summed over their products, then popularity",
               repeat_buy_summed_scores),
        Method("item-kNN BM25", f"implicit BM25Recommender, K={scoring.BM25_NEIGHBOURS}, distinct orders; "
               "campaign = its best product", bm25_peer_scores),
        Method("item-kNN BM25 + popularity fill", "the same, zero and tied scores ordered by 90-day popularity",
               lambda s: bm25_peer_scores(s, fill=True)),
        Method(REPEAT_SUMMED + DISTINCT, "the same, lists built like serving's (a campaign whose products are all "
               "promoted higher up moves below the list)", repeat_buy_summed_scores, lists=distinct_lists),
        Method("item-kNN BM25 + popularity fill" + DISTINCT, "BM25 + fill, lists built like serving's",
               lambda s: bm25_peer_scores(s, fill=True), lists=distinct_lists),
        Method("implicit ALS" + DISTINCT, "ALS, lists built like serving's", als_scores, lists=distinct_lists),
        Method("notify: content only", "cosine(user vector, campaign vector)", content_scores, "ablation"),
        Method("notify: + repeat affinity",
               f"candidate union (ANN top-{SERVING_CANDIDATES} + campaigns of bought products); "
               f"{repeat.similarity:g} cos + {repeat.affinity:g} repeat + {repeat.priority:g} priority "
               "(serving before the evaluation)", lambda s: notify_scores(s, weights=repeat), "ablation"),
        Method("notify: + co-purchase",
               f"+ {evaluated.copurchase:g} co-purchase (item-kNN cosine, K={scoring.COPURCHASE_NEIGHBOURS}), "
               f"co-purchase top-{k} added to candidates",
               lambda s: notify_scores(s, weights=with_copurchase, copurchase_candidates=k), "ablation"),
        Method("notify: hand-tuned blend",
               f"{evaluated.similarity:g} cos + {evaluated.affinity:g} repeat + {evaluated.copurchase:g} co-purchase"
               f" + {evaluated.priority:g} priority (scoring.EVALUATED_WEIGHTS, tuned on one split before issue 17)",
               lambda s: notify_scores(s, weights=evaluated, copurchase_candidates=k), "ablation"),
    ]
    if ranker is not None:
        weights = ", ".join(f"{n} {c:+.3g}" for n, c in zip(scoring.RANKER_FEATURES, ranker.coefficients,
                                                              strict=True))
        methods.append(Method("notify: learned ranker, scores only (third design)",
                              "the ranker's score order, no list construction", lambda s: ranker_scores(s, ranker),
                              "ablation"))
        methods.append(Method("notify: learned ranker, distinct products (fourth design)",
                              "the ranker's score order, lists with distinct products",
                              lambda s: ranker_scores(s, ranker), "ablation", lists=distinct_lists))
        methods.append(Method(NOTIFY, f"logistic ranker fitted on data before {ranker.fitted_before} only: "
                                      f"{weights}; bought campaigns' places in summed-orders order, lists with "
                                      "distinct products (fifth design)",
                              lambda s: ranker_scores_repeats_ordered(s, ranker), "notify", lists=distinct_lists))
    return methods

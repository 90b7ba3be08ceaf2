"""Real-time recommendation: candidates -> eligibility filters -> blended score -> top N.

Candidates are the union of
* the ANN top-K (``candidates``, default 150) of the user's vector over the campaign index + overlay:
  campaigns whose text is close to what the user buys (discovery), and
* campaigns promoting a product the user already bought (their row of the user-product matrix in the
  Store). RELEVANCE.md: repeat buying dominates this retailer (~89 % re-buy within 60 days), and a
  text vector alone barely beats popularity, so these must be candidates whatever their cosine;
* the user's top ``scoring.COPURCHASE_CANDIDATES`` (20) co-purchase campaigns: products bought by the
  same people as what the user buys (the neighbour map each index version ships, ``copurchase.parquet``),
  the discovery signal text vectors lack.

Filters (each counted in the result so a surprising empty list can be explained): status not active,
outside [start_date, end_date], targeted at other countries, in a category the user opted out of,
already sent to the user within the campaign's cooldown (Store table ``sends``).

Score = :func:`notify_core.recommend.scoring.blend`: ``similarity`` * cosine + ``affinity`` * repeat
affinity + ``priority`` * (priority - 1) / 4 + ``copurchase`` * co-purchase affinity, where repeat
affinity = min(1, log1p(orders) / log1p(``affinity_saturation``)) for the promoted product the user
ordered most, and co-purchase affinity = the campaign's best promoted product's neighbour score (sum over
the user's products of log1p(orders) x similarity) / the user's best campaign's. These are the same
functions and weights the offline evaluation measures (``notify evaluate``, row "notify: selected
(serving)"); a version without a neighbour map scores co-purchase 0.

Users without a vector (new, or not embedded yet) get the campaigns most bought in their country (then
overall) in the last 90 days, precomputed at index build, plus the same affinity term; so do users whose
personalised list comes out shorter than ``limit``.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import chain, repeat
from typing import Any, Literal, cast

import numpy as np
import numpy.typing as npt

from notify_core.campaigns import eligibility
from notify_core.campaigns.eligibility import REASONS
from notify_core.campaigns.table import CampaignTable, Rows
from notify_core.clock import Clock, utcnow
from notify_core.errors import NotFoundError, NotifyError, ValidationError
from notify_core.recommend import scoring
from notify_core.recommend.ann import Matches
from notify_core.recommend.distinct import distinct_products_order
from notify_core.recommend.index import GLOBAL_SEGMENT
from notify_core.recommend.repeat_order import repeats_in_frequency_order, repeats_in_frequency_order_by_user
from notify_core.recommend.serving import IndexHolder, ServingSnapshot, UserProducts, gather_spans
from notify_core.recommend.work_cache import WorkCache, WorkInputs, frozen
from notify_core.store import tables
from notify_core.store.port import Item, KeyRange, Store

USER_VECTOR_PREFIX = "user#"
MAX_LIMIT = 100
SEARCH_BLOCK = 1000  # asked users per batched ANN search of recommend_many (see there: why a fixed block)
BLOCK_FROM = 3  # uncached users of a serving batch ranked as one block from this many (Recommender.recommend_each)
# What a context reads of a user's product rows (features.user_product_matrix writes them): the product, its
# orders and its last purchase.
_PRODUCT_ATTRIBUTES = ("sk", "order_count", "last_purchase_ts")
Strategy = Literal["personalised", "fallback"]


@dataclass(frozen=True, slots=True)
class ScoreWeights:
    """Blend weights; the defaults are :data:`scoring.EVALUATED_WEIGHTS`, selected by the offline
    evaluation (similarity 1.0, affinity 2.0, priority 0.05, co-purchase 0.2, affinity saturating at 5
    orders); popularity (fallback only) 0.5. Affinity is weighted high because repeat buying is the
    strongest signal measured on this data; priority only breaks near-ties."""

    similarity: float = scoring.EVALUATED_WEIGHTS.similarity
    affinity: float = scoring.EVALUATED_WEIGHTS.affinity
    priority: float = scoring.EVALUATED_WEIGHTS.priority
    popularity: float = 0.5
    affinity_saturation: float = scoring.EVALUATED_WEIGHTS.affinity_saturation
    copurchase: float = scoring.EVALUATED_WEIGHTS.copurchase

    def blend(self) -> scoring.BlendWeights:
        """The weights :func:`scoring.blend` takes (everything but the fallback's popularity)."""
        return scoring.BlendWeights(similarity=self.similarity, affinity=self.affinity, priority=self.priority,
                                    copurchase=self.copurchase, affinity_saturation=self.affinity_saturation)


@dataclass(frozen=True, slots=True)
class Recommendation:
    campaign_id: str
    score: float
    similarity: float
    affinity: float
    reasons: tuple[str, ...]
    copurchase: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"campaign_id": self.campaign_id, "score": round(self.score, 6),
                "similarity": round(self.similarity, 6), "affinity": round(self.affinity, 6),
                "copurchase": round(self.copurchase, 6), "reasons": list(self.reasons)}


@dataclass(frozen=True, slots=True)
class Recommendations:
    user_id: str
    items: tuple[Recommendation, ...]
    strategy: Strategy
    index_version: str | None
    candidates: int
    filtered: Mapping[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"user_id": self.user_id, "strategy": self.strategy, "index_version": self.index_version,
                "candidates": self.candidates, "filtered": dict(self.filtered),
                "recommendations": [r.as_dict() for r in self.items]}


@dataclass(frozen=True, slots=True)
class UserContext:
    user_id: str
    country: str | None
    opted_out: frozenset[str]
    vector: np.ndarray[Any, np.dtype[np.float32]] | None
    orders_by_product: Mapping[str, int]
    last_sent: Mapping[str, datetime]
    last_ordered: Mapping[str, datetime] = field(default_factory=dict)  # product -> last order (the ranker's recency)


def _parse_ts(value: str) -> datetime:
    ts = datetime.fromisoformat(value)
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)


def ineligible_codes(table: CampaignTable, rows: Rows, user: UserContext, *, now: datetime) -> npt.NDArray[np.int8]:
    """Per candidate row: 0 when it may go to this user now, else 1 + the index in ``REASONS`` of the first
    filter it fails (:func:`notify_core.campaigns.eligibility.ineligible_codes`, with this user's
    cooldowns from their send history)."""
    recent = np.zeros(len(rows), dtype=bool)
    for cid, ts in user.last_sent.items():
        row = table.row_of.get(cid)
        if row is None:
            continue
        at = int(np.searchsorted(rows, row))
        if at < len(rows) and rows[at] == row and now - ts < timedelta(hours=float(table.cooldown_hours[row])):
            recent[at] = True
    return eligibility.ineligible_codes(table, rows, day=now.date(), countries=user.country,
                                        opted_out=user.opted_out, recent=recent)


@dataclass(frozen=True, slots=True)
class _UserWork:
    """The time-independent part of one user's ranking on one snapshot (:mod:`.work_cache`): the ANN
    candidates, the promoted rows of their bought products, and the co-purchase weights with the best of
    them. Everything that moves with ``now`` is computed per request from these."""

    ann_rows: Rows
    ann_sims: npt.NDArray[np.float32]
    bought: tuple[str, ...]
    repeat_rows: Rows
    per_product: npt.NDArray[np.int64]
    repeat_orders: npt.NDArray[np.float64]
    co_rows: Rows
    co_values: npt.NDArray[np.float64]
    co_raw: npt.NDArray[np.float64]
    top_co: Rows


@dataclass(frozen=True, slots=True)
class _BlockWork:
    """What :meth:`Recommender._rank_block` reads of a block of users, none of it moving with ``now``: the ANN
    answers, the promoted rows of what each bought (flat, in user order, ``*_n`` per user), and their
    candidates as sorted keys ``user x len(table) + row`` (:func:`_keyed`) with the co-purchase terms at each (0
    where none, as a lookup of a missing row gives). ``alone(i)``: user ``i``'s :class:`_UserWork`, for the few
    users :meth:`Recommender._rank` ranks alone."""

    ann_rows: Rows
    ann_sims: npt.NDArray[np.float32]
    ann_n: npt.NDArray[np.int64]
    bought: list[tuple[str, ...]]
    per_product: npt.NDArray[np.int64]
    repeat_rows: Rows
    repeat_orders: npt.NDArray[np.float64]
    repeat_n: npt.NDArray[np.int64]
    keys: Rows
    copurchase: npt.NDArray[np.float64]
    bm25: npt.NDArray[np.float64]
    alone: Callable[[int], _UserWork]


@dataclass(frozen=True, slots=True)
class RankedColumns:
    """Many users' lists as columns, users in the order asked, each user's best first: item ``i`` is campaign
    ``campaign_ids[i]`` for ``user_ids[i]`` with the ranking's ``scores[i]`` (:meth:`Recommender.relevance`
    puts them on the planner's scale)."""

    user_ids: list[str]
    campaign_ids: list[str]
    scores: npt.NDArray[np.float64]

    @classmethod
    def of(cls, answers: Sequence[Recommendations]) -> RankedColumns:
        return cls(user_ids=[r.user_id for r in answers for _ in r.items],
                   campaign_ids=[i.campaign_id for r in answers for i in r.items],
                   scores=np.fromiter((i.score for r in answers for i in r.items), dtype=np.float64))


@dataclass(frozen=True, slots=True)
class _BlockRanked:
    """A block's rankings before they become answers (:meth:`Recommender._rank_block`): each user's chosen
    candidates as positions in the block's columns, in list order, or None for the users ``_rank`` ranked
    alone (``alone``: the popular fill's second pass)."""

    users: Sequence[UserContext]
    chosen: list[list[int] | None]
    alone: dict[int, Recommendations]
    rows: Rows
    score: npt.NDArray[np.float64]
    similarity: npt.NDArray[np.float64]
    affinity: npt.NDArray[np.float64]
    copurchase: npt.NDArray[np.float64]
    from_ann: npt.NDArray[np.bool_]
    seen: list[int]
    filtered: list[list[int]]
    version: str | None
    table: CampaignTable

    def _picked(self) -> npt.NDArray[np.intp]:
        return np.fromiter((j for best in self.chosen if best is not None for j in best), dtype=np.intp)

    def answers(self) -> list[Recommendations]:
        """Each user's :class:`Recommendations`, as :meth:`Recommender._rank` builds them."""
        items = iter(_items(self.table, self._picked(), rows=self.rows, score=self.score, similarity=self.similarity,
                            affinity=self.affinity, copurchase=self.copurchase, from_ann=self.from_ann))
        out: list[Recommendations] = []
        for i, (user, best) in enumerate(zip(self.users, self.chosen, strict=True)):
            if best is None:
                out.append(self.alone[i])
                continue
            out.append(Recommendations(
                user_id=user.user_id, items=tuple(next(items) for _ in best),
                strategy="personalised" if user.vector is not None else "fallback", index_version=self.version,
                candidates=self.seen[i],
                filtered={REASONS[code - 1]: n for code, n in enumerate(self.filtered[i]) if code and n}))
        return out

    def columns(self) -> RankedColumns:
        """The same lists as :meth:`answers`, as columns."""
        picked = self._picked()
        ids = self.table.ids
        names = [ids[row] for row in self.rows[picked].tolist()]
        values = self.score[picked].tolist()
        users: list[str] = []
        campaigns: list[str] = []
        scores: list[float] = []
        at = 0
        for i, (user, best) in enumerate(zip(self.users, self.chosen, strict=True)):
            if best is None:
                alone = self.alone[i].items
                users.extend([user.user_id] * len(alone))
                campaigns.extend(item.campaign_id for item in alone)
                scores.extend(item.score for item in alone)
                continue
            users.extend([user.user_id] * len(best))
            campaigns.extend(names[at:at + len(best)])
            scores.extend(values[at:at + len(best)])
            at += len(best)
        return RankedColumns(user_ids=users, campaign_ids=campaigns, scores=np.asarray(scores, dtype=np.float64))


@dataclass(slots=True)
class _Scored:
    """Candidate rows (sorted, unique) with their terms, accumulated over the personalised and fallback passes."""

    rows: list[Rows] = field(default_factory=list)
    score: list[npt.NDArray[np.float64]] = field(default_factory=list)
    similarity: list[npt.NDArray[np.float64]] = field(default_factory=list)
    affinity: list[npt.NDArray[np.float64]] = field(default_factory=list)
    copurchase: list[npt.NDArray[np.float64]] = field(default_factory=list)
    popularity: list[npt.NDArray[np.float64]] = field(default_factory=list)
    from_ann: list[npt.NDArray[np.bool_]] = field(default_factory=list)
    filtered: dict[str, int] = field(default_factory=dict)
    seen: int = 0
    eligible: int = 0

    def concat(self, name: str) -> npt.NDArray[Any]:
        parts = getattr(self, name)
        if len(parts) == 1:  # one pass (most requests): the array itself, no copy
            return parts[0]  # type: ignore[no-any-return]
        return np.concatenate(parts) if parts else np.zeros(0)


class Recommender:
    """Top-N campaigns for one user, from the Store (user, matrix row, sends) and the served index.

    Works in row numbers of the snapshot's :class:`CampaignTable` from the ANN answer to the top-N, with
    every filter and score term as an array operation over the candidates (module doc for what they are).
    """

    def __init__(
        self, *, store: Store, holder: IndexHolder, clock: Clock, weights: ScoreWeights | None = None,
        candidates: int = 150,
        ranker: scoring.LinearRanker | None | Literal["default"] = "default", cache_users: int = 0,
    ) -> None:
        """``clock`` answers "now" for requests that do not say (cooldowns, campaign dates, recency).
        ``ranker``: the learned ranker (issue 17) scores the candidates; "default" means
        :data:`scoring.SERVING_RANKER` unless explicit blend ``weights`` are given (then the blend scores).
        ``cache_users``: keep the time-independent work of that many recently seen users (:mod:`.work_cache`;
        the same answers, keyed by the snapshot and the user's inputs); 0: none."""
        self.store = store
        self.clock = clock
        self.holder = holder
        self.weights = weights or ScoreWeights()
        self.ranker = (scoring.SERVING_RANKER if weights is None else None) if ranker == "default" else ranker
        self._popular_cache: tuple[CampaignTable, tuple[Rows, npt.NDArray[np.float64]]] | None = None
        self._popular_by_row_cache: tuple[CampaignTable, tuple[Rows, npt.NDArray[np.float64]]] | None = None
        self.candidates = candidates
        self.work_cache: WorkCache[_UserWork] | None = WorkCache(capacity=cache_users) if cache_users > 0 else None

    # -- inputs ------------------------------------------------------------------------------------
    def user_contexts(self, user_ids: Sequence[str], *, now: datetime, snapshot: ServingSnapshot,
                      ) -> dict[str, UserContext]:
        """Contexts of the known users among ``user_ids``: profiles and vectors in one batch read each, product
        rows and recent sends in one many-partition read each (on DynamoDB Local with a 5 ms round trip added
        per request, 300 demo users' contexts took 7.7-7.9 s with a query per user one after another, 3.1-3.6 s
        so: ``bench/results/session22/``). The sends are read back to the longest cooldown of ``snapshot``'s
        campaigns (a fixed 14 days once ended a 20-day cooldown after 14)."""
        dim = snapshot.dim
        wanted = list(dict.fromkeys(user_ids))
        profiles = {str(p["pk"]): p for p in self.store.table(tables.USERS).batch_get(
            [(u, tables.PROFILE_SK) for u in wanted])}
        vectors = {str(v["pk"])[len(USER_VECTOR_PREFIX):]: v for v in self.store.table(tables.EMBEDDINGS).batch_get(
            [(f"{USER_VECTOR_PREFIX}{u}", tables.VECTOR_SK) for u in wanted if u in profiles])}
        since = tables.time_sk(now - timedelta(hours=snapshot.longest_cooldown_hours))
        known = [u for u in wanted if u in profiles]
        # every known user's product rows and recent sends, each read for all of them at once: on DynamoDB the
        # queries go out together instead of two round trips a user one after the other
        matrices = self.store.table(tables.USER_PRODUCT).query_columns_many(known, _PRODUCT_ATTRIBUTES)
        sends = self.store.table(tables.SENDS).query_many(known, key_range=KeyRange(start=since))
        out: dict[str, UserContext] = {}
        for user_id in known:
            profile = profiles[user_id]
            vector = None
            item = vectors.get(user_id)
            if item is not None:
                candidate = np.frombuffer(bytes(item["vector"]), dtype="<f4").astype(np.float32)
                norm = float(np.linalg.norm(candidate))
                if norm > 0 and (dim is None or candidate.shape[0] == dim):  # another model's vector: unusable
                    vector = candidate / norm
            matrix = matrices[user_id]  # 3 of each row's ~8 attributes
            product_ids = [str(sk) for sk in matrix["sk"]]
            orders = {p: int(n or 0) for p, n in zip(product_ids, matrix["order_count"], strict=True)}
            last_ordered = _Timestamps({p: stamp for p, stamp in zip(product_ids, matrix["last_purchase_ts"],
                                                                      strict=True) if stamp})
            sent: dict[str, datetime] = {}
            for r in sends[user_id]:
                cid = str(r.get("campaign_id") or str(r["sk"]).split("#", 1)[-1])
                ts = _parse_ts(str(r.get("ts") or str(r["sk"]).split("#", 1)[0]))
                if cid not in sent or ts > sent[cid]:
                    sent[cid] = ts
            out[user_id] = UserContext(user_id=user_id, country=profile.get("country"),
                                       opted_out=frozenset(profile.get("opted_out_categories") or ()),
                                       vector=vector, orders_by_product=orders, last_sent=sent,
                                       last_ordered=last_ordered)
        return out

    def user_context(self, user_id: str, *, now: datetime, snapshot: ServingSnapshot) -> UserContext:
        found = self.user_contexts([user_id], now=now, snapshot=snapshot).get(user_id)
        if found is None:
            raise _unknown_user(user_id)
        return found

    # -- requests ----------------------------------------------------------------------------------
    def recommend(self, user_id: str, *, limit: int = 10, now: datetime | None = None) -> Recommendations:
        _check_limit(limit)
        now = now or utcnow(self.clock)
        snapshot = self.holder.snapshot()
        user = self.user_context(user_id, now=now, snapshot=snapshot)
        work, inputs = self._cached_work(snapshot, user)
        if work is None:
            work = self._lone_work(snapshot, user, keep=inputs if self._admits(user, inputs) else None)
        return self._rank(snapshot, user, work, limit=limit, now=now)

    def recommend_each(self, asks: Sequence[tuple[str, int]], *, now: datetime | None = None,
                       ) -> list[Recommendations | NotifyError]:
        """For each ``(user_id, limit)``, what :meth:`recommend` answers it, or the error it raises (an unknown
        user, a bad limit), in order: the requests a serving process has waiting, answered together
        (:mod:`notify_core.coalesce`), each answer the one its user would get alone, to the bit, whoever else
        was waiting. The users' contexts come in one batch read. A user whose work is cached is ranked on it,
        as :meth:`recommend` would; a user the cache admits (their second sighting) is worked out alone and
        kept. The others at one limit are ranked as one block (:meth:`_rank_users`, each user's ANN query
        searched alone) when there are at least :data:`BLOCK_FROM` of them, else one by one: a block's array
        operations pay off only from a few users. Why: when every batch of two or more went to the block, a
        batch of 2-3 users whose work was cached cost 1.6-2.1 ms of CPU a request against ~1.0 ms answered
        from the cache (1.1 ms now), and an open loop forms batches of 1-3 (docs/peak-performance.md,
        sessions 32-33); cold, a block of 3 measured ~5 % under 3 lone users and a block of 2 ~5 % over."""
        now = now or utcnow(self.clock)
        out: list[Recommendations | NotifyError | None] = [None] * len(asks)
        wanted: list[int] = []
        for i, (_user_id, limit) in enumerate(asks):
            try:
                _check_limit(limit)
            except NotifyError as exc:
                out[i] = exc
                continue
            wanted.append(i)
        snapshot = self.holder.snapshot()
        contexts = self.user_contexts([asks[i][0] for i in wanted], now=now, snapshot=snapshot)
        works: dict[str, _UserWork] = {}  # cached or worked out alone, by user
        for user in contexts.values():
            work, inputs = self._cached_work(snapshot, user)
            if work is None and self._admits(user, inputs):
                work = self._lone_work(snapshot, user, keep=inputs)
            if work is not None:
                works[user.user_id] = work
        by_limit: dict[int, dict[str, UserContext]] = {}  # the known users asked at each limit, once each
        for i in wanted:
            user_id, limit = asks[i]
            if user_id in contexts:
                by_limit.setdefault(limit, {})[user_id] = contexts[user_id]
        answers: dict[tuple[str, int], Recommendations] = {}
        for limit, users in by_limit.items():
            rest = [user for user_id, user in users.items() if user_id not in works]
            if len(rest) >= BLOCK_FROM:
                ranked = self._rank_users(snapshot, rest, limit=limit, now=now, lone_search=True)
                for answer in ranked.answers() if isinstance(ranked, _BlockRanked) else ranked:
                    answers[(answer.user_id, limit)] = answer
                rest = []
            for user in rest:
                works[user.user_id] = self._lone_work(snapshot, user, keep=None)
            for user_id, user in users.items():
                if (user_id, limit) not in answers:
                    answers[(user_id, limit)] = self._rank(snapshot, user, works[user_id], limit=limit, now=now)
        for i in wanted:
            user_id, limit = asks[i]
            out[i] = answers.get((user_id, limit)) or _unknown_user(user_id)
        return cast(list[Recommendations | NotifyError], out)  # every ask answered above

    def _cached_work(self, snapshot: ServingSnapshot, user: UserContext,
                     ) -> tuple[_UserWork | None, WorkInputs | None]:
        """The user's cached work on ``snapshot`` (None: not cached) and the inputs it is keyed by (None: no
        cache)."""
        cache = self.work_cache
        if cache is None:
            return None, None
        inputs = WorkInputs.of(user.vector, user.orders_by_product)
        return cache.get(snapshot, user.user_id, inputs), inputs

    def _admits(self, user: UserContext, inputs: WorkInputs | None) -> bool:
        """Whether the work cache keeps this user's work (:meth:`WorkCache.admits`: from their second sighting)."""
        return self.work_cache is not None and inputs is not None and self.work_cache.admits(user.user_id)

    def _lone_work(self, snapshot: ServingSnapshot, user: UserContext, *, keep: WorkInputs | None) -> _UserWork:
        """The user's work with their ANN query searched alone; ``keep``: frozen and cached under these inputs."""
        found = snapshot.search_rows(user.vector, self.candidates) if user.vector is not None else None
        work = self._user_work(snapshot, user, found, 0, freeze=keep is not None)
        if keep is not None and self.work_cache is not None:
            self.work_cache.put(snapshot, user.user_id, keep, work)
        return work

    def recommend_many(self, user_ids: Sequence[str], *, limit: int = 10,
                       now: datetime | None = None) -> list[Recommendations]:
        """Batch callers (scheduling, benchmarks): the contexts in one batch read, one ANN search per block of
        :data:`SEARCH_BLOCK` asked users, then the block's ranking in one set of array operations
        (:meth:`_block_work`, :meth:`_rank_block`; with blend weights, user by user): to the bit what ranking
        each user alone on the same ANN answer gives; no work cache. Unknown users are skipped.

        Why fixed blocks: how faiss computes a batch's inner products depends on the batch (below a few
        hundred queries it scans each query alone, above that it multiplies the batch with BLAS, ~0.055
        against ~0.17 ms a query on the demo's index, and BLAS's tiles depend on the batch's size; with
        several threads it splits the queries among them), and the ways round differently in the last float
        bit. Searched as one batch, a user's answer depended on the batch around it: on the demo, 178 of 181
        users' relevances changed when their chunk was cut in two, so a planned day depended on the number of
        candidate workers and on the chunk size. With blocks cut at multiples of ``SEARCH_BLOCK`` from the
        first asked user, searched on one thread, an answer depends only on its block of the asked list;
        :class:`~notify_core.scheduling.candidate_pool.CandidatePool` cuts its slices there. 1,000 keeps a full
        block on the BLAS path and divides the plan's chunk sizes (200k by default), so a user's candidates do
        not depend on the chunk size either (on the demo: one chunk, 2,000- and 500-user chunks give the same
        frame; 300-user chunks, under faiss' switch to BLAS, do not)."""
        answers: list[Recommendations] = []
        for block in self._blocks(user_ids, limit=limit, now=now):
            answers.extend(block.answers() if isinstance(block, _BlockRanked) else block)
        return answers

    def rank_many(self, user_ids: Sequence[str], *, limit: int = 10, now: datetime | None = None) -> RankedColumns:
        """:meth:`recommend_many`'s lists as three columns (the planner reads nothing else): no
        :class:`Recommendation` per item (building ~20 of them a user was a tenth of a daily plan's ranking)."""
        parts = [block.columns() if isinstance(block, _BlockRanked) else RankedColumns.of(block)
                 for block in self._blocks(user_ids, limit=limit, now=now)]
        return RankedColumns(user_ids=[u for part in parts for u in part.user_ids],
                             campaign_ids=[c for part in parts for c in part.campaign_ids],
                             scores=np.concatenate([part.scores for part in parts]) if parts else np.zeros(0))

    def _blocks(self, user_ids: Sequence[str], *, limit: int, now: datetime | None,
                ) -> Iterator[_BlockRanked | list[Recommendations]]:
        """Each block of :data:`SEARCH_BLOCK` asked users ranked (see :meth:`recommend_many`), in order."""
        _check_limit(limit)
        now = now or utcnow(self.clock)
        snapshot = self.holder.snapshot()
        contexts = self.user_contexts(user_ids, now=now, snapshot=snapshot)
        asked = list(dict.fromkeys(user_ids))
        for lo in range(0, len(asked), SEARCH_BLOCK):
            yield self._rank_users(snapshot, [contexts[u] for u in asked[lo : lo + SEARCH_BLOCK] if u in contexts],
                                   limit=limit, now=now, lone_search=False)

    def _rank_users(self, snapshot: ServingSnapshot, users: Sequence[UserContext], *, limit: int, now: datetime,
                    lone_search: bool) -> _BlockRanked | list[Recommendations]:
        """``users`` ranked together: their ANN queries searched as one batch on one thread, or each alone
        (``lone_search``: as :meth:`recommend` searches it, so each answer is that user's lone request's to the
        bit whatever the block), then one block ranking with the learned ranker, else user by user."""
        with_vector = [u for u in users if u.vector is not None]
        found = None
        position: dict[str, int] = {}
        if with_vector:
            queries = np.stack([u.vector for u in with_vector if u.vector is not None])
            if lone_search:
                alone = [snapshot.search_rows(query[None, :], self.candidates) for query in queries]
                found = Matches(np.concatenate([m.rows for m in alone]),
                                np.concatenate([m.similarities for m in alone]))
            else:
                found = snapshot.search_rows(queries, self.candidates, threads=1)
            position = {u.user_id: i for i, u in enumerate(with_vector)}
        if self.ranker is not None and users and self._blockable(snapshot):
            return self._rank_block(snapshot, users, self._block_work(snapshot, users, found, position),
                                    limit=limit, now=now)
        return [self._rank(snapshot, u, self._user_work(
            snapshot, u, found if u.user_id in position else None, position.get(u.user_id, 0)),
            limit=limit, now=now) for u in users]

    def relevance(self, scores: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """The planner's relevance of scores this recommender gave (``scheduling.models.CANDIDATES``: above 0
        is worth sending, higher is better, comparable across users). The learned ranker's score is a logit
        (:func:`scoring.fit_logistic`): its logistic, the ranker's probability, puts every candidate in
        (0, 1) with each user's order unchanged. Passing the logit itself made the planner drop every
        candidate under even odds: half the demo's users got no notification at all. The blend's score is
        already on the cosine scale the planner was built for, so it passes as it is."""
        values = np.asarray(scores, dtype=np.float64)
        if self.ranker is None:
            return values
        return np.asarray(1.0 / (1.0 + np.exp(-values)))

    # -- ranking -----------------------------------------------------------------------------------
    def _user_work(self, snapshot: ServingSnapshot, user: UserContext, found: Matches | None, at: int, *,
                   freeze: bool = False) -> _UserWork:
        """What :meth:`_rank` needs that ``now`` does not change (cacheable: :mod:`.work_cache`; ``freeze``:
        its arrays made read-only, for the cache)."""
        ann_rows = np.zeros(0, dtype=np.int64)
        ann_sims = np.zeros(0, dtype=np.float32)
        if found is not None:
            keep = found.rows[at] >= 0
            ann_rows, ann_sims = found.rows[at][keep], found.similarities[at][keep]
        products = snapshot.user_products(user.orders_by_product)  # coded once for every per-product step
        bought, repeat_rows, per_product, bought_orders = products.promoted_rows()
        repeat_orders = np.repeat(bought_orders, per_product)
        co_rows, co_values, co_raw = self.copurchase_rows(snapshot, user, coded=products) \
            if self.weights.copurchase or self.ranker else (np.zeros(0, dtype=np.int64), np.zeros(0), np.zeros(0))
        co_k = scoring.RANKER_COPURCHASE if self.ranker is not None else scoring.COPURCHASE_CANDIDATES
        top_co = _best_rows(co_rows, co_values, snapshot.table.id_rank, co_k)
        if freeze:
            frozen(ann_rows, ann_sims, repeat_rows, per_product, repeat_orders, co_rows, co_values, co_raw, top_co)
        return _UserWork(ann_rows=ann_rows, ann_sims=ann_sims, bought=tuple(bought), repeat_rows=repeat_rows,
                         per_product=per_product, repeat_orders=repeat_orders, co_rows=co_rows, co_values=co_values,
                         co_raw=co_raw, top_co=top_co)

    def _rank(self, snapshot: ServingSnapshot, user: UserContext, work: _UserWork, *, limit: int,
              now: datetime) -> Recommendations:
        table = snapshot.table
        ann_rows, ann_sims, repeat_rows, repeat_orders = work.ann_rows, work.ann_sims, work.repeat_rows, \
            work.repeat_orders
        co_rows, co_values, co_raw, top_co = work.co_rows, work.co_values, work.co_raw, work.top_co
        repeat_days = np.repeat(_days_since(user, work.bought, now), work.per_product) if self.ranker is not None \
            else np.zeros(0)
        popular_rows = self._popular_rows(snapshot) if self.ranker is not None else None
        extra = popular_rows[0][:scoring.RANKER_POPULAR] if popular_rows is not None else np.zeros(0, dtype=np.int64)
        out = _Scored()
        rows = _sorted_unique(np.concatenate([ann_rows, repeat_rows, top_co, extra]).astype(np.int64, copy=False))
        popular_by_row = self._popular_by_row(snapshot) if popular_rows is not None else None
        self._score(out, snapshot, user, rows, now=now, ann=(ann_rows, ann_sims),
                    repeat=(repeat_rows, repeat_orders), co=(co_rows, co_values), popular=popular_by_row,
                    repeat_days=repeat_days, bm25=(co_rows, co_raw))
        if out.eligible < limit:  # no vector, or too few eligible: fill from what is popular where they live
            pop_ids, pop_values = self._popular(snapshot, user.country)
            pop_rows = table.rows_of(pop_ids)
            known = (pop_rows >= 0) & ~np.isin(pop_rows, rows)
            pop_rows, pop_values = pop_rows[known], pop_values[known]
            order = np.argsort(pop_rows, kind="stable")
            pop_rows, pop_values = pop_rows[order], pop_values[order]
            self._score(out, snapshot, user, pop_rows, now=now, ann=(ann_rows, ann_sims),
                        repeat=(repeat_rows, repeat_orders), co=(co_rows, co_values),
                        popularity=pop_values, popular=popular_by_row, repeat_days=repeat_days,
                        bm25=(co_rows, co_raw))
        items = self._top(out, table, limit=limit, distinct=self.ranker is not None)
        strategy: Strategy = "personalised" if user.vector is not None else "fallback"
        return Recommendations(user_id=user.user_id, items=items, strategy=strategy, index_version=snapshot.version,
                               candidates=out.seen, filtered=out.filtered)

    @staticmethod
    def _blockable(snapshot: ServingSnapshot) -> bool:
        """Whether a block ranking can take this snapshot: its co-purchase, if any, has the matrix form (every
        loaded version's does; a bare neighbour map is ranked user by user, as serving would)."""
        return snapshot.base is None or not snapshot.base.copurchase or snapshot.promotion() is not None

    def _block_work(self, snapshot: ServingSnapshot, users: Sequence[UserContext], found: Matches | None,
                    position: Mapping[str, int]) -> _BlockWork:
        """:meth:`_user_work` of a block of users (the learned ranker's path) as one set of array operations, the
        same values to the bit: their products coded in one pass, the promoted rows in one gather, the
        co-purchase of all of them by one sparse product (:func:`scoring.copurchase_block`, as users x
        campaigns, read only at the candidates) and each user's best 50 of it by one partition. ``found``: the
        block's ANN answer, row ``position[user]`` for users with a vector."""
        count, table = len(users), snapshot.table
        size = len(table)
        extra = self._popular_rows(snapshot)[0][:scoring.RANKER_POPULAR]

        def alone(i: int) -> _UserWork:
            user = users[i]
            return self._user_work(snapshot, user, found if user.user_id in position else None,
                                   position.get(user.user_id, 0))

        promotion = snapshot.promotion() if snapshot.base is not None and snapshot.base.copurchase else None
        ann_rows, ann_sims, ann_n = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32), \
            np.zeros(count, dtype=np.int64)
        if found is not None:
            at = np.fromiter((position.get(u.user_id, -1) for u in users), dtype=np.int64, count=count)
            has = at >= 0
            rows = np.full((count, found.rows.shape[1]), -1, dtype=found.rows.dtype)
            sims = np.zeros((count, found.rows.shape[1]), dtype=found.similarities.dtype)
            rows[has], sims[has] = found.rows[at[has]], found.similarities[at[has]]
            keep = rows >= 0
            ann_rows, ann_sims, ann_n = rows[keep].astype(np.int64, copy=False), sims[keep], keep.sum(axis=1)
        codes = snapshot.product_codes()
        per_user = np.fromiter((len(u.orders_by_product) for u in users), dtype=np.int64, count=count)
        products = [p for u in users for p in u.orders_by_product]
        code = np.fromiter(map(codes.code.get, products, repeat(codes.none, len(products))), dtype=np.int64,
                           count=len(products))
        orders = np.fromiter(chain.from_iterable(u.orders_by_product.values() for u in users), dtype=np.float64,
                             count=len(products))
        owner = np.repeat(np.arange(count, dtype=np.int64), per_user)
        length = codes.length[code]
        kept = np.flatnonzero(length > 0)
        per_product = length[kept]
        repeat_rows = gather_spans(codes.flat, starts=codes.start[code[kept]], lengths=per_product)
        bought_n = np.bincount(owner[kept], minlength=count)
        names = [products[i] for i in kept.tolist()]
        ends = np.cumsum(bought_n).tolist()
        bought = [tuple(names[end - n:end]) for end, n in zip(ends, bought_n.tolist(), strict=True)]
        repeat_n = np.bincount(owner[kept], weights=per_product, minlength=count).astype(np.int64)
        # candidates and their co-purchase terms, a sub-block of users at a time (the dense co-purchase)
        neighbour = codes.neighbour[code]
        ordered = (neighbour >= 0) & (orders > 0)
        co_rows, co_orders, co_owner = neighbour[ordered], orders[ordered], owner[ordered]
        step = scoring.copurchase_block_users(promotion) if promotion is not None else max(count, 1)
        column_of = np.full(size, -1, dtype=np.int64)  # campaign row -> its co-purchase column (-1: none)
        if promotion is not None:
            column_of[promotion.rows] = np.arange(len(promotion.rows))
        ann_first, repeat_first = np.cumsum(ann_n) - ann_n, np.cumsum(repeat_n) - repeat_n
        co_first = np.searchsorted(co_owner, np.arange(0, count + step, step)).tolist()
        parts: list[tuple[Rows, npt.NDArray[np.float64], npt.NDArray[np.float64]]] = []
        for block, lo in enumerate(range(0, count, step)):
            hi = min(lo + step, count)
            a, b = co_first[block], co_first[block + 1]
            co = scoring.copurchase_block(co_rows[a:b], co_orders[a:b], co_owner[a:b] - lo, count=hi - lo,
                                          promotion=promotion) if promotion is not None else None
            top = _best_of_block(co, promotion.rows, table.id_rank, scoring.RANKER_COPURCHASE) \
                if co is not None and promotion is not None else (np.zeros(0, dtype=np.int64),
                                                                  np.zeros(hi - lo, dtype=np.int64))
            a_lo, a_hi = (int(ann_first[lo]), int(ann_first[hi - 1] + ann_n[hi - 1]))
            r_lo, r_hi = (int(repeat_first[lo]), int(repeat_first[hi - 1] + repeat_n[hi - 1]))
            keys = _candidate_keys(ann=(ann_rows[a_lo:a_hi], ann_n[lo:hi]),
                                   repeat=(repeat_rows[r_lo:r_hi], repeat_n[lo:hi]), top_co=top, extra=extra,
                                   size=size)
            copurchase, bm25 = np.zeros(len(keys)), np.zeros(len(keys))
            if co is not None and promotion is not None:
                user = keys // size
                column = column_of[keys - user * size]
                has = column >= 0
                copurchase[has] = co.affinity[user[has], column[has]]
                bm25[has] = co.raw[user[has], column[has]]
            parts.append((keys + lo * size, copurchase, bm25))
        return _BlockWork(ann_rows=ann_rows, ann_sims=ann_sims, ann_n=ann_n, bought=bought, per_product=per_product,
                          repeat_rows=repeat_rows, repeat_orders=np.repeat(orders[kept], per_product),
                          repeat_n=repeat_n, keys=np.concatenate([p[0] for p in parts]),
                          copurchase=np.concatenate([p[1] for p in parts]),
                          bm25=np.concatenate([p[2] for p in parts]), alone=alone)

    def _rank_block(self, snapshot: ServingSnapshot, users: Sequence[UserContext], work: _BlockWork, *,
                    limit: int, now: datetime) -> _BlockRanked:
        """:meth:`_rank` of many users (the learned ranker's path) in one set of array operations, the same
        answers to the bit: each user's candidates are keys ``place in the block x len(table) + row`` in one array,
        so every per-row step (filters, lookups, sums in the same order, the features) runs once for the
        block. Per user remain what is a BLAS call or a walk in Python in :meth:`_rank` (the cosine of
        candidates outside the ANN answer, the ranker's matrix product, the distinct-products walk), so
        those see the same inputs in the same shapes. A user with fewer eligible candidates than ``limit``
        (the popular fill's second pass) is ranked by :meth:`_rank` itself. Why: one user's ranking is
        ~80 numpy calls on a few hundred rows, ~1 ms of per-call overhead; a daily plan ranks every user."""
        assert self.ranker is not None  # the blend's path is ranked per user (recommend_many)
        table = snapshot.table
        size = len(table)
        count = len(users)
        popular = self._popular_by_row(snapshot)
        keys = work.keys
        seg = keys // size
        rows = keys - seg * size
        seen = np.bincount(seg, minlength=count)
        # filters: the pairs' users coded by country and opt-outs; cooldowns from each user's sends
        countries = list(dict.fromkeys(u.country for u in users))
        opt_outs = list(dict.fromkeys(u.opted_out for u in users))
        country_of = np.array([countries.index(u.country) for u in users], dtype=np.int64)
        opted_of = np.array([opt_outs.index(u.opted_out) for u in users], dtype=np.int64)
        recent_keys = [i * size + row for i, u in enumerate(users) for cid, ts in u.last_sent.items()
                       if (row := table.row_of.get(cid)) is not None
                       and now - ts < timedelta(hours=float(table.cooldown_hours[row]))]
        recent = np.zeros(len(keys), dtype=bool)
        if recent_keys:
            at, hit = _positions_sorted(np.asarray(recent_keys, dtype=np.int64), keys)
            recent[at[hit]] = True
        codes = eligibility.ineligible_codes(
            table, rows, day=now.date(), countries=eligibility.PerPair(codes=country_of[seg], values=countries),
            opted_out=eligibility.PerPair(codes=opted_of[seg], values=opt_outs), recent=recent)
        reasons = len(REASONS) + 1
        filtered = np.bincount(seg * reasons + codes, minlength=count * reasons).reshape(count, reasons).tolist()
        ok = codes == 0
        keys, seg, rows, copurchase, bm25 = keys[ok], seg[ok], rows[ok], work.copurchase[ok], work.bm25[ok]
        bounds = np.searchsorted(seg, np.arange(count + 1)).tolist()
        # similarity: the ANN answer's, else the cosine with the user's vector (per user: _score's BLAS call)
        similarity = _scatter_lookup(keys, _keyed(work.ann_rows, work.ann_n, size), work.ann_sims, default=np.nan)
        missing = np.isnan(similarity)
        for i in np.unique(seg[missing]).tolist():
            lo, hi = bounds[i], bounds[i + 1]
            gap = missing[lo:hi]
            vector = users[i].vector
            similarity[lo:hi][gap] = (snapshot.vectors(rows[lo:hi][gap]) @ vector) if vector is not None else 0.0
        # repeat terms: best orders (affinity), summed orders, the most recent order
        at, hit = _repeat_positions(keys, _keyed(work.repeat_rows, work.repeat_n, size))
        hit_orders = work.repeat_orders[hit]
        best_orders = np.zeros(len(keys))
        if len(at):
            np.maximum.at(best_orders, at, hit_orders)
        affinity = np.asarray(scoring.repeat_affinity(best_orders, saturation=self.weights.affinity_saturation))
        days = np.full(len(keys), np.inf)
        if len(at):
            repeat_days = np.repeat(_days_since_many(list(zip(users, work.bought, strict=True)), now),
                                    work.per_product)
            np.minimum.at(days, at, repeat_days[hit])
        orders = _summed_at(len(keys), at, hit_orders)
        features = scoring.ranker_features(
            campaign_orders=orders, days_since=days, copurchase=copurchase, similarity=similarity,
            popularity=_lookup_sorted(rows, *popular, default=0.0), priority=table.priority[rows], bm25=bm25)
        score = np.concatenate([np.asarray(scoring.ranker_score(self.ranker, features[bounds[i]:bounds[i + 1]]))
                                for i in range(count)]) if len(keys) else np.zeros(0)
        score = repeats_in_frequency_order_by_user(score, orders, seg)
        # each user's best by score, ties by campaign id, then the distinct-products walk
        order = np.lexsort((_sort_key(table.id_rank[rows], size), -score, _sort_key(seg, count)))
        products, row_list = _row_products(table), rows.tolist()
        eligible = np.diff(bounds).tolist()
        chosen: list[list[int] | None] = [
            distinct_products_order(_walk(order, bounds[i], bounds[i + 1], step=2 * limit),
                                    lambda j: products.of(row_list[j]), limit=limit)
            if eligible[i] >= limit else None for i in range(count)]
        return _BlockRanked(
            users=users, chosen=chosen, rows=rows, score=score, similarity=similarity, affinity=affinity,
            copurchase=copurchase, from_ann=~missing, seen=seen.tolist(), filtered=filtered,
            version=snapshot.version, table=table,
            alone={i: self._rank(snapshot, users[i], work.alone(i), limit=limit, now=now)  # the popular fill's pass
                   for i, best in enumerate(chosen) if best is None})

    def _score(self, out: _Scored, snapshot: ServingSnapshot, user: UserContext, rows: Rows, *, now: datetime,
               ann: tuple[Rows, npt.NDArray[np.float32]], repeat: tuple[Rows, npt.NDArray[np.float64]],
               co: tuple[Rows, npt.NDArray[np.float64]], popularity: npt.NDArray[np.float64] | None = None,
               popular: tuple[Rows, npt.NDArray[np.float64]] | None = None,
               repeat_days: npt.NDArray[np.float64] | None = None,
               bm25: tuple[Rows, npt.NDArray[np.float64]] | None = None) -> None:
        """Filter and score sorted unique ``rows``; append the eligible ones to ``out``. ``popular``: the
        overall popular list by ascending row (:meth:`_popular_by_row`)."""
        out.seen += len(rows)
        if not len(rows):
            return
        table = snapshot.table
        codes = ineligible_codes(table, rows, user, now=now)
        for code, count in enumerate(np.bincount(codes, minlength=len(REASONS) + 1).tolist()):
            if code and count:
                out.filtered[REASONS[code - 1]] = out.filtered.get(REASONS[code - 1], 0) + count
        ok = codes == 0
        rows = rows[ok]
        if not len(rows):
            return
        similarity = _scatter_lookup(rows, *ann, default=np.nan)
        missing = np.isnan(similarity)  # not in the ANN answer
        if missing.any():
            similarity[missing] = (snapshot.vectors(rows[missing]) @ user.vector) if user.vector is not None else 0.0
        best_orders = np.zeros(len(rows))
        repeat_rows, repeat_orders = repeat
        at, hit = _repeat_positions(rows, repeat_rows)  # once a pass: max orders, recency, summed orders
        hit_orders = repeat_orders[hit]
        if len(at):
            np.maximum.at(best_orders, at, hit_orders)
        w = self.weights
        affinity = np.asarray(scoring.repeat_affinity(best_orders, saturation=w.affinity_saturation))
        co_at, co_hit = _positions_sorted(rows, co[0])  # copurchase_rows: rows ascending; bm25 has the same rows
        copurchase = _take_at(len(rows), co_at, co_hit, co[1], default=0.0)
        pop = popularity[ok] if popularity is not None else np.zeros(len(rows))
        if self.ranker is not None:  # the learned ranker: the same functions the evaluation scores with
            days = np.full(len(rows), np.inf)
            if len(at) and user.last_ordered and repeat_days is not None:
                np.minimum.at(days, at, np.asarray(repeat_days)[hit])
            orders = _summed_at(len(rows), at, hit_orders)  # = _campaign_orders
            features = scoring.ranker_features(
                campaign_orders=orders, days_since=days,
                copurchase=copurchase, similarity=similarity,
                popularity=_lookup_sorted(rows, *popular, default=0.0) if popular is not None else 0.0,
                priority=table.priority[rows],
                bm25=(_take_at(len(rows), co_at, co_hit, bm25[1], default=0.0) if bm25 is not None and bm25[0] is co[0]
                      else _lookup_sorted(rows, *bm25, default=0.0) if bm25 is not None else 0.0))
            # fifth design: the bought campaigns' places in summed-orders order (the evaluation's function)
            score = repeats_in_frequency_order(np.asarray(scoring.ranker_score(self.ranker, features)), orders)
        else:
            score = np.asarray(scoring.blend(similarity=similarity, affinity=affinity, priority=table.priority[rows],
                                             weights=w.blend(), copurchase=copurchase)) + w.popularity * pop
        out.rows.append(rows)
        out.score.append(score)
        out.similarity.append(similarity)
        out.affinity.append(affinity)
        out.copurchase.append(copurchase)
        out.popularity.append(pop)
        out.from_ann.append(~missing)
        out.eligible += len(rows)

    @staticmethod
    def _top(out: _Scored, table: CampaignTable, *, limit: int, distinct: bool = False) -> tuple[Recommendation, ...]:
        """The best ``limit`` by score, equal scores by campaign id; with ``distinct`` (the learned ranker's
        lists, fourth design) a campaign whose products are all promoted higher up moves below the list
        (:func:`distinct.distinct_products_order`, the evaluation's rule)."""
        rows = out.concat("rows").astype(np.int64)
        if not len(rows):
            return ()
        score = out.concat("score")
        order = np.lexsort((table.id_rank[rows], -score))
        if distinct:
            products = _row_products(table)
            best = distinct_products_order(order.tolist(), lambda i: products.of(int(rows[i])), limit=limit)
        else:
            best = order[:limit].tolist()
        return tuple(_items(table, best, rows=rows, score=score, similarity=out.concat("similarity"),
                            affinity=out.concat("affinity"), copurchase=out.concat("copurchase"),
                            popularity=out.concat("popularity"), from_ann=out.concat("from_ann")))

    def _popular_rows(self, snapshot: ServingSnapshot) -> tuple[Rows, npt.NDArray[np.float64]]:
        """The overall popular list as (rows, :func:`scoring.popularity_share`), most popular first; computed
        once per snapshot table (a new version or overlay is a new table)."""
        cached = self._popular_cache
        if cached is not None and cached[0] is snapshot.table:
            return cached[1]
        ranked = snapshot.popular(GLOBAL_SEGMENT)
        if not ranked:
            out: tuple[Rows, npt.NDArray[np.float64]] = (np.zeros(0, dtype=np.int64), np.zeros(0))
        else:
            rows = snapshot.table.rows_of([cid for cid, _ in ranked])
            buyers = np.fromiter((score for _, score in ranked), dtype=np.float64, count=len(ranked))
            known = rows >= 0
            out = (rows[known], np.asarray(scoring.popularity_share(buyers[known], float(buyers.max()))))
        self._popular_cache = (snapshot.table, out)
        return out

    def _popular_by_row(self, snapshot: ServingSnapshot) -> tuple[Rows, npt.NDArray[np.float64]]:
        """:meth:`_popular_rows` sorted by row (stable: a repeated row keeps its first value, as a stable
        sort of the keys would pick), once per snapshot table: the ranker's popularity lookup is then
        :func:`_lookup_sorted`, no argsort of the whole list a request."""
        cached = self._popular_by_row_cache
        if cached is not None and cached[0] is snapshot.table:
            return cached[1]
        rows, values = self._popular_rows(snapshot)
        order = np.argsort(rows, kind="stable")
        out = (rows[order], np.asarray(values, dtype=np.float64)[order])
        self._popular_by_row_cache = (snapshot.table, out)
        return out

    @staticmethod
    def copurchase_rows(snapshot: ServingSnapshot, user: UserContext, *, coded: UserProducts | None = None,
                        ) -> tuple[Rows, npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """The user's co-purchase affinity in (0, 1] per campaign row, rows sorted (``scoring``'s functions
        over the version's neighbour map), and the same rows' raw BM25 score (the ranker's ``bm25``);
        empty without a map or purchases. ``coded``: the user's products already coded
        (:meth:`ServingSnapshot.user_products`), so they are not walked again."""
        neighbours = snapshot.base.copurchase if snapshot.base is not None else {}
        empty = (np.zeros(0, dtype=np.int64), np.zeros(0), np.zeros(0))
        if not neighbours or not user.orders_by_product:
            return empty
        matrix = snapshot.base.copurchase_matrix if snapshot.base is not None else None
        promotion = snapshot.promotion()
        if matrix is not None and promotion is not None:  # the vectorised path (the same arithmetic)
            return scoring.copurchase_campaign_rows(
                user.orders_by_product, matrix, promotion,
                ordered=coded.neighbour_rows() if coded is not None else None)
        products, raw = scoring.copurchase_product_scores(user.orders_by_product,
                                                          matrix if matrix is not None else neighbours)
        promoted = snapshot.promoting(products)

        def campaigns_of(pid: str) -> list[int]:
            return promoted[pid].tolist() if pid in promoted else []

        by_row = scoring.copurchase_campaigns(products, campaigns_of)
        if not by_row:
            return empty
        raw_by_row = scoring.campaign_best(raw, campaigns_of)
        rows = np.fromiter(by_row, dtype=np.int64, count=len(by_row))
        values = np.fromiter(by_row.values(), dtype=np.float64, count=len(by_row))
        raws = np.fromiter((raw_by_row.get(r, 0.0) for r in by_row), dtype=np.float64, count=len(by_row))
        order = np.argsort(rows)
        return rows[order], values[order], raws[order]

    @staticmethod
    def _popular(snapshot: ServingSnapshot, country: str | None) -> tuple[list[str], npt.NDArray[np.float64]]:
        """Popularity in [0, 1]: share of the segment's top score, the user's country at full weight,
        the overall list at half, so local favourites come first and the overall list fills the rest."""
        out: dict[str, float] = {}
        segments = ([(country, 1.0)] if country else []) + [(GLOBAL_SEGMENT, 0.5)]
        for segment, weight in segments:
            ranked = snapshot.popular(segment)
            if not ranked:
                continue
            top = ranked[0][1] or 1.0
            for cid, score in ranked:
                out.setdefault(cid, weight * score / top)
        return list(out), np.fromiter(out.values(), dtype=np.float64, count=len(out))


def _unknown_user(user_id: str) -> NotFoundError:
    return NotFoundError(f"unknown user {user_id!r}")


def _check_limit(limit: int) -> None:
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_LIMIT:
        raise ValidationError(f"limit must be an integer in 1..{MAX_LIMIT}")


class _Timestamps(Mapping[str, datetime]):
    """product -> last order time, kept as the stored values and parsed on first read: a heavy buyer has
    hundreds of rows and a request needs the few whose products campaigns promote (parsing them all was
    ~10 % of a request). The ranker reads :attr:`raw` itself (:func:`_days_since_many` parses each distinct
    stamp once); other readers get datetimes through the mapping."""

    __slots__ = ("_parsed", "_raw")

    def __init__(self, raw: dict[str, Any]) -> None:
        self._raw = raw
        self._parsed: dict[str, datetime] = {}

    def __getitem__(self, key: str) -> datetime:
        found = self._parsed.get(key)
        if found is None:
            found = self._parsed[key] = _as_datetime(self._raw[key])
        return found

    def __contains__(self, key: object) -> bool:
        return key in self._raw

    @property
    def raw(self) -> dict[str, Any]:
        """product -> the stored value (ISO text or datetime), unparsed."""
        return self._raw

    def __iter__(self) -> Iterator[str]:
        return iter(self._raw)

    def __len__(self) -> int:
        return len(self._raw)


def _items(table: CampaignTable, chosen: Sequence[int] | npt.NDArray[np.intp], *, rows: Rows,
           score: npt.NDArray[np.float64], similarity: npt.NDArray[np.float64], affinity: npt.NDArray[np.float64],
           copurchase: npt.NDArray[np.float64], from_ann: npt.NDArray[np.bool_],
           popularity: npt.NDArray[np.float64] | None = None) -> list[Recommendation]:
    """The ``chosen`` candidates (positions in the columns, in list order) as recommendations with their
    reasons. The chosen few are gathered once and made Python values by .tolist() (one call per column,
    not four numpy scalar conversions and comparisons per item)."""
    at = np.asarray(chosen, dtype=np.intp)
    pop = popularity[at].tolist() if popularity is not None else [0.0] * len(at)
    ids = table.ids
    items = []
    for row, sc, sim, aff, co, po, ann in zip(
            rows[at].tolist(), score[at].tolist(), similarity[at].tolist(), affinity[at].tolist(),
            copurchase[at].tolist(), pop, from_ann[at].tolist(), strict=True):
        reasons = tuple(r for r, on in (("similar", ann), ("repeat_purchase", aff > 0),
                                        ("copurchase", co > 0), ("popular", po > 0)) if on)
        items.append(Recommendation(campaign_id=ids[row], score=sc, similarity=sim, affinity=aff,
                                    reasons=reasons or ("priority",), copurchase=co))
    return items


def _walk(order: npt.NDArray[np.intp], lo: int, hi: int, *, step: int) -> Iterator[int]:
    """``order[lo:hi]`` as Python ints, converted ``step`` at a time as a walk reaches them (a distinct
    walk reads ~``limit`` of a user's few hundred candidates)."""
    for at in range(lo, hi, step):
        yield from order[at:min(at + step, hi)].tolist()


def _keyed(rows: Rows, lengths: npt.NDArray[np.int64], size: int) -> Rows:
    """Rows of consecutive users (``lengths[i]`` rows of user ``i``) as keys ``i x size + row``: sorted per
    user, they sort as one array by user, then row (``size``: the campaign table's length)."""
    return np.repeat(np.arange(len(lengths), dtype=np.int64) * size, lengths) + rows


def _best_rows(rows: Rows, values: npt.NDArray[np.float64], rank: npt.NDArray[Any], k: int) -> Rows:
    """The ``k`` of ``rows`` with the highest ``values``, equal values by ``rank`` (the campaign id order):
    the rows of ``rows[np.lexsort((rank[rows], -values))[:k]]``, in that order. Only the rows tied with or
    above the k-th best value are sorted (``np.partition`` finds it): a heavy buyer has ~1,000 co-purchase
    campaigns and the ranking takes the best 100 (sorting all of them was ~6 % of a ranking)."""
    if len(rows) <= k:
        return rows[np.lexsort((rank[rows], -values))]
    if k <= 0:
        return rows[:0]
    negated = -values
    near = np.flatnonzero(negated <= np.partition(negated, k - 1)[k - 1])  # every row tied with or above the k-th
    return rows[near[np.lexsort((rank[rows[near]], negated[near]))[:k]]]


def _candidate_keys(*, ann: tuple[Rows, npt.NDArray[np.int64]], repeat: tuple[Rows, npt.NDArray[np.int64]],
                    top_co: tuple[Rows, npt.NDArray[np.int64]], extra: Rows, size: int) -> Rows:
    """Each user's candidates, as :meth:`Recommender._rank` takes them (``_sorted_unique`` of the ANN rows, the
    bought products' campaigns, the best co-purchase rows and the popular ``extra``), as sorted keys ``user x
    size + row`` of consecutive users (each source: its rows and each user's count)."""
    users = len(ann[1])
    return _sorted_unique(np.concatenate([
        _keyed(*ann, size), _keyed(*repeat, size), _keyed(*top_co, size),
        (np.arange(users, dtype=np.int64)[:, None] * size + extra).ravel()]))


def _best_of_block(block: scoring.CopurchaseBlock, rows: Rows, rank: npt.NDArray[Any], k: int,
                   ) -> tuple[Rows, npt.NDArray[np.int64]]:
    """Each user's :func:`_best_rows` of their co-purchase rows (``rows``: the block's columns' campaign rows),
    concatenated, and how many each has: the ``k`` best by affinity, equal ones by ``rank``. Only the cells
    tied with or above each user's k-th best are sorted (a heavy buyer has ~1,000 co-purchase rows)."""
    users, width = block.kept.shape
    if not width or k <= 0:
        return np.zeros(0, dtype=np.int64), np.zeros(users, dtype=np.int64)
    negated = np.where(block.kept, -block.affinity, np.inf)
    kth = np.partition(negated, min(k, width) - 1, axis=1)[:, min(k, width) - 1]  # inf: fewer than k rows
    user, column = np.nonzero(block.kept & (negated <= kth[:, None]))
    near = rows[column]
    order = np.lexsort((rank[near], negated[user, column], user))
    per_user = np.bincount(user, minlength=users)
    place = np.arange(len(order)) - (np.cumsum(per_user) - per_user)[user[order]]  # each cell's place in its user
    chosen = order[place < k]
    return near[chosen], np.minimum(per_user, k)


def _sorted_unique(values: Rows) -> Rows:
    """``np.unique`` of a few hundred rows by one sort (np.unique hashes first, then sorts: ~2x the time)."""
    if len(values) < 2:
        return values.copy()
    ordered = np.sort(values)
    return ordered[np.concatenate(([True], ordered[1:] != ordered[:-1]))]


def _as_datetime(value: Any) -> datetime:
    return value if isinstance(value, datetime) else _parse_ts(str(value))


@dataclass(frozen=True, slots=True)
class _RowProducts:
    """Campaign row -> the products it promotes (the inverse of ``table.products``) as CSR arrays of product
    codes: built with a few numpy calls once per table (a Python dict of sets took ~200 ms for 20k
    campaigns, a first-request spike after every refresh); a row's set is made only when a list walks it."""

    starts: npt.NDArray[np.int64]
    codes: npt.NDArray[np.int64]
    made: dict[int, frozenset[Hashable]] = field(default_factory=dict)  # the sets made so far, by row

    def of(self, row: int) -> frozenset[Hashable]:
        found = self.made.get(row)
        if found is None:
            found = frozenset(self.codes[self.starts[row]:self.starts[row + 1]].tolist()) \
                if row + 1 < len(self.starts) else frozenset()
            self.made[row] = found
        return found


_ROW_PRODUCTS: weakref.WeakKeyDictionary[CampaignTable, _RowProducts] = weakref.WeakKeyDictionary()


def _row_products(table: CampaignTable) -> _RowProducts:
    """:class:`_RowProducts` of ``table``, cached for the table's lifetime (a snapshot's)."""
    found = _ROW_PRODUCTS.get(table)
    if found is None:
        spans = list(table.products.values())
        lengths = np.fromiter((len(r) for r in spans), dtype=np.int64, count=len(spans))
        rows = np.concatenate(spans).astype(np.int64) if spans else np.zeros(0, dtype=np.int64)
        codes = np.repeat(np.arange(len(spans), dtype=np.int64), lengths)
        order = np.argsort(rows, kind="stable")
        starts = np.searchsorted(rows[order], np.arange(len(table) + 1)).astype(np.int64)
        found = _RowProducts(starts=starts, codes=codes[order])
        _ROW_PRODUCTS[table] = found
    return found


def _repeat_positions(rows: Rows, repeat_rows: Rows) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.bool_]]:
    """Where each of ``repeat_rows`` sits in the sorted ``rows`` (positions of the found ones, in
    ``repeat_rows``' order) and which were found: one search a pass, shared by the three repeat terms."""
    if not len(repeat_rows) or not len(rows):
        return np.zeros(0, dtype=np.intp), np.zeros(len(repeat_rows), dtype=bool)
    at = np.searchsorted(rows, repeat_rows)
    hit = (at < len(rows)) & (rows[np.minimum(at, len(rows) - 1)] == repeat_rows)
    return at[hit], hit


def _summed_at(size: int, at: npt.NDArray[np.intp], values: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """``values`` summed per candidate position (from :func:`_repeat_positions`). ``np.bincount`` adds in
    input order from 0, as ``np.add.at`` did, so the sums are bit-identical."""
    if not len(at):
        return np.zeros(size)
    return np.asarray(np.bincount(at, weights=values, minlength=size), dtype=np.float64)


def _campaign_orders(rows: Rows, repeat_rows: Rows, repeat_orders: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Per candidate row, the user's distinct orders summed over the campaign's promoted products
    (``repeat_rows``/``repeat_orders``: one entry per bought product and campaign promoting it): the
    ranker's ``frequency``, as :func:`scoring.campaign_orders` computes it for the evaluation. ``_score``
    does the same from the positions it shares with the other repeat terms."""
    at, hit = _repeat_positions(rows, repeat_rows)
    return _summed_at(len(rows), at, repeat_orders[hit])


def _days_since(user: UserContext, products: Sequence[str], now: datetime) -> npt.NDArray[np.float64]:
    """Days from the user's last order of each product to ``now`` (inf when unknown): the ranker's recency."""
    return _days_since_many([(user, products)], now)


_MICROSECOND = timedelta(microseconds=1)


def _days_since_many(asked: Sequence[tuple[UserContext, Sequence[str]]], now: datetime) -> npt.NDArray[np.float64]:
    """:func:`_days_since` of many (user, products) pairs, concatenated in order (a block's ranking asks once).

    Each distinct stored value is parsed once (a user's products from one order share their stamp), and the
    division is numpy's: whole microseconds from the stamp to ``now``, / 1e6, / 86400 is what
    ``(now - t).total_seconds() / 86400.0`` computes, to the bit (the microseconds are an exact float below
    2**53 and each division is correctly rounded in both). Parsing every product's stamp in a Python loop was
    ~5 % of ranking a block."""
    values: list[Any] = []
    for user, products in asked:
        last = user.last_ordered
        stored: Mapping[str, Any] = last.raw if isinstance(last, _Timestamps) else last
        values.extend([stored.get(p) for p in products])
    micros: dict[Any, float] = {None: np.inf}
    for value in values:
        if value not in micros:
            micros[value] = (now - _as_datetime(value)) // _MICROSECOND
    return np.array([micros[v] for v in values], dtype=np.float64) / 1e6 / 86400.0


def _sort_key(values: Rows, bound: int) -> npt.NDArray[Any]:
    """``values`` (each in 0..bound-1) as a sort key: 16-bit when they fit, where numpy's stable sort is a radix
    sort. A block's ``np.lexsort`` of ~300k candidates by (user, -score, campaign rank) then takes half the
    CPU (48 against 105 ms), and the permutation is the same: a stable sort has only one."""
    return values.astype(np.uint16) if bound <= 1 << 16 else values


def _scatter_lookup(rows: Rows, keys: Rows, values: npt.NDArray[Any], *, default: float) -> npt.NDArray[np.float64]:
    """``values`` of ``keys`` at ascending unique ``rows``, ``default`` where absent, for unsorted ``keys`` (the
    ANN answer, best first): each key searched in ``rows`` and its value scattered there, no argsort of the
    keys. The keys are scattered last to first so a repeated key keeps its first value."""
    out = np.full(len(rows), default, dtype=np.float64)
    if len(keys) and len(rows):
        at = np.searchsorted(rows, keys)
        hit = rows[np.minimum(at, len(rows) - 1)] == keys
        out[at[hit][::-1]] = np.asarray(values, dtype=np.float64)[hit][::-1]
    return out


def _positions_sorted(rows: Rows, keys: Rows) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.bool_]]:
    """Where each of ``rows`` is in the ascending unique ``keys``, and whether it is there: one search
    shared by the lookups of several value columns over the same keys (co-purchase and BM25)."""
    if not len(keys):
        return np.zeros(0, dtype=np.intp), np.zeros(len(rows), dtype=bool)
    at = np.minimum(np.searchsorted(keys, rows), len(keys) - 1)
    return at, keys[at] == rows


def _take_at(size: int, at: npt.NDArray[np.intp], hit: npt.NDArray[np.bool_], values: npt.NDArray[Any], *,
             default: float) -> npt.NDArray[np.float64]:
    """:func:`_lookup_sorted` from :func:`_positions_sorted`'s answer."""
    out = np.full(size, default, dtype=np.float64)
    if len(at):
        out[hit] = np.asarray(values, dtype=np.float64)[at[hit]]
    return out


def _lookup_sorted(rows: Rows, keys: Rows, values: npt.NDArray[Any], *, default: float) -> npt.NDArray[np.float64]:
    """``values`` of ``keys`` at ``rows``, ``default`` where absent, for ``keys`` already ascending and unique
    (the co-purchase rows; tests/recommend/test_lookup.py checks it against the sorting reference): no sort, no gather
    through an order (each numpy call is ~2-5 us; a request makes two of these lookups a pass)."""
    return _take_at(len(rows), *_positions_sorted(rows, keys), values, default=default)


def sent_item(user_id: str, campaign_id: str, ts: datetime, **extra: Any) -> Item:
    """A ``sends`` item in the shape the delivery worker writes (also what tests use)."""
    return {"pk": user_id, "sk": tables.send_sk(ts, campaign_id), "campaign_id": campaign_id,
            "ts": ts.isoformat(), **extra}

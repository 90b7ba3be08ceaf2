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

import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

import numpy as np

from notify_core.errors import NotFoundError, ValidationError
from notify_core.recommend import scoring
from notify_core.recommend.index import GLOBAL_SEGMENT, LoadedIndex
from notify_core.recommend.serving import IndexHolder, ServingSnapshot
from notify_core.store import tables
from notify_core.store.port import Item, KeyRange, Store

USER_VECTOR_PREFIX = "user#"
MAX_LIMIT = 100
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
class CampaignInfo:
    """What eligibility and scoring need of a campaign (parsed once, cached)."""

    campaign_id: str
    status: str
    start_date: date | None
    end_date: date | None
    target_countries: frozenset[str]
    category: str | None
    cooldown_hours: int
    priority: int
    product_ids: tuple[str, ...]

    @classmethod
    def from_item(cls, item: Mapping[str, Any]) -> CampaignInfo:
        return cls(
            campaign_id=str(item["campaign_id"]), status=str(item.get("status") or "active"),
            start_date=_as_date(item.get("start_date")), end_date=_as_date(item.get("end_date")),
            target_countries=frozenset(item.get("target_countries") or ()), category=item.get("category"),
            cooldown_hours=int(item.get("cooldown_hours") or 0), priority=int(item.get("priority") or 1),
            product_ids=tuple(str(p) for p in item.get("product_ids") or ()),
        )


def _as_date(value: Any) -> date | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value)[:10])


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


class CampaignCatalog:
    """Campaign rows from the Store, cached per process for ``ttl_seconds`` (0: read every time).

    The cache keeps the hot path off the Store (a request looks at ~150 campaigns); the TTL bounds how
    stale a status/date change made by batch ingestion can be. Changes made through the update path
    are live at once anyway: the overlay carries their rows and wins over this cache.
    """

    def __init__(self, store: Store, *, ttl_seconds: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._store = store
        self._ttl = ttl_seconds
        self._clock = clock
        self._cache: dict[str, tuple[float, CampaignInfo | None]] = {}
        self._lock = threading.Lock()

    def get_many(self, campaign_ids: Iterable[str]) -> dict[str, CampaignInfo]:
        now = self._clock()
        out: dict[str, CampaignInfo] = {}
        missing: list[str] = []
        for cid in campaign_ids:
            hit = self._cache.get(cid)
            if hit is not None and hit[0] > now:
                if hit[1] is not None:
                    out[cid] = hit[1]
            else:
                missing.append(cid)
        if missing:
            items = self._store.table(tables.CAMPAIGNS).batch_get([(c, tables.CAMPAIGN_SK) for c in missing])
            found = {str(i["campaign_id"]): CampaignInfo.from_item(i) for i in items}
            expires = now + self._ttl
            with self._lock:
                for cid in missing:
                    info = found.get(cid)
                    self._cache[cid] = (expires, info)
                    if info is not None:
                        out[cid] = info
        return out

    def invalidate(self, campaign_id: str) -> None:
        with self._lock:
            self._cache.pop(campaign_id, None)


def _info_of(base: LoadedIndex, campaign_id: str) -> CampaignInfo:
    """A version's campaign row parsed once per version (the parse is most of a cold lookup's cost)."""
    info = base.parsed.get(campaign_id)
    if not isinstance(info, CampaignInfo):
        info = base.parsed[campaign_id] = CampaignInfo.from_item(base.campaign_rows[campaign_id])
    return info


@dataclass(frozen=True, slots=True)
class UserContext:
    user_id: str
    country: str | None
    opted_out: frozenset[str]
    vector: np.ndarray[Any, np.dtype[np.float32]] | None
    orders_by_product: Mapping[str, int]
    last_sent: Mapping[str, datetime]


def _parse_ts(value: str) -> datetime:
    ts = datetime.fromisoformat(value)
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)


class Recommender:
    """Top-N campaigns for one user, from the Store (user, matrix row, sends) and the served index."""

    def __init__(
        self, *, store: Store, holder: IndexHolder, weights: ScoreWeights | None = None, candidates: int = 150,
        catalog_ttl_seconds: float = 30.0, max_cooldown_hours: int = 24 * 14,
    ) -> None:
        self.store = store
        self.holder = holder
        self.weights = weights or ScoreWeights()
        self.candidates = candidates
        self.catalog = CampaignCatalog(store, ttl_seconds=catalog_ttl_seconds)
        self.max_cooldown_hours = max_cooldown_hours

    # -- inputs ------------------------------------------------------------------------------------
    def user_context(self, user_id: str, *, now: datetime, dim: int | None) -> UserContext:
        profile = self.store.table(tables.USERS).get(user_id, tables.PROFILE_SK)
        if profile is None:
            raise NotFoundError(f"unknown user {user_id!r}")
        vector = None
        item = self.store.table(tables.EMBEDDINGS).get(f"{USER_VECTOR_PREFIX}{user_id}", tables.VECTOR_SK)
        if item is not None:
            candidate = np.frombuffer(bytes(item["vector"]), dtype="<f4").astype(np.float32)
            norm = float(np.linalg.norm(candidate))
            if norm > 0 and (dim is None or candidate.shape[0] == dim):  # a vector of another model: unusable
                vector = candidate / norm
        orders = {str(r["sk"]): int(r.get("order_count") or 0)
                  for r in self.store.table(tables.USER_PRODUCT).query(user_id)}
        since = now - timedelta(hours=self.max_cooldown_hours)
        sent: dict[str, datetime] = {}
        for r in self.store.table(tables.SENDS).query(user_id, key_range=KeyRange(start=tables.time_sk(since))):
            cid = str(r.get("campaign_id") or str(r["sk"]).split("#", 1)[-1])
            ts = _parse_ts(str(r.get("ts") or str(r["sk"]).split("#", 1)[0]))
            if cid not in sent or ts > sent[cid]:
                sent[cid] = ts
        return UserContext(user_id=user_id, country=profile.get("country"),
                           opted_out=frozenset(profile.get("opted_out_categories") or ()), vector=vector,
                           orders_by_product=orders, last_sent=sent)

    # -- filters -----------------------------------------------------------------------------------
    @staticmethod
    def ineligible(info: CampaignInfo, user: UserContext, *, now: datetime) -> str | None:
        """Why a campaign may not go to this user now (a filter name), or None when it may."""
        today = now.date()
        if info.status != "active":
            return "inactive"
        if (info.start_date is not None and today < info.start_date) or (
                info.end_date is not None and today > info.end_date):
            return "out_of_dates"
        if info.target_countries and user.country not in info.target_countries:
            return "not_targeted"
        if info.category is not None and info.category in user.opted_out:
            return "opted_out"
        last = user.last_sent.get(info.campaign_id)
        if last is not None and now - last < timedelta(hours=info.cooldown_hours):
            return "recently_sent"
        return None

    def _affinity(self, info: CampaignInfo, user: UserContext) -> float:
        best = max((user.orders_by_product.get(p, 0) for p in info.product_ids), default=0)
        return float(scoring.repeat_affinity(best, saturation=self.weights.affinity_saturation))

    @staticmethod
    def copurchase_scores(snapshot: ServingSnapshot, user: UserContext) -> dict[str, float]:
        """The user's co-purchase affinity per campaign in (0, 1] (``scoring.copurchase_campaigns`` over
        the version's neighbour map, campaigns of the version and the overlay); {} without a map."""
        neighbours = snapshot.base.copurchase if snapshot.base is not None else {}
        if not neighbours or not user.orders_by_product:
            return {}
        base_map = snapshot.base.product_campaigns if snapshot.base is not None else {}
        overlay_map = snapshot.overlay.product_campaigns

        def campaigns_of(pid: str) -> tuple[str, ...]:
            extra = overlay_map.get(pid, ())
            return (*base_map.get(pid, ()), *extra) if extra else base_map.get(pid, ())

        return scoring.copurchase_campaigns(scoring.copurchase_products(user.orders_by_product, neighbours),
                                            campaigns_of)

    def _infos(self, snapshot: ServingSnapshot, ids: Iterable[str]) -> dict[str, CampaignInfo]:
        """Overlay rows first (live edits), then the version's own campaign rows, then the Store (for
        campaigns the version does not know, e.g. before the first build)."""
        wanted = list(dict.fromkeys(ids))
        overlay = snapshot.overlay.campaigns
        infos = {c: CampaignInfo.from_item(overlay[c]) for c in wanted if c in overlay}
        rows = snapshot.base.campaign_rows if snapshot.base is not None else {}
        for cid in wanted:
            if cid not in infos and cid in rows:
                infos[cid] = _info_of(snapshot.base, cid)  # type: ignore[arg-type]  # rows => base
        infos.update(self.catalog.get_many(c for c in wanted if c not in infos))
        return infos

    # -- the request -------------------------------------------------------------------------------
    def recommend(self, user_id: str, *, limit: int = 10, now: datetime | None = None) -> Recommendations:
        if not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
            raise ValidationError(f"limit must be an integer in 1..{MAX_LIMIT}")
        now = now or datetime.now(UTC)
        snapshot = self.holder.snapshot()
        user = self.user_context(user_id, now=now, dim=snapshot.dim)
        w = self.weights
        blend_weights = w.blend()

        similar: dict[str, float] = {}
        if user.vector is not None:
            similar = dict(snapshot.search(user.vector, self.candidates))
        from_ann = frozenset(similar)
        repeat = snapshot.campaigns_promoting(user.orders_by_product)
        co = self.copurchase_scores(snapshot, user) if w.copurchase else {}
        from_co = frozenset(scoring.top_campaigns(co))
        popular: dict[str, float] = {}
        filtered: dict[str, int] = {}
        scored: list[Recommendation] = []
        seen: set[str] = set()

        def score(ids: Iterable[str]) -> None:
            todo = [c for c in dict.fromkeys(ids) if c not in seen]
            seen.update(todo)
            infos = self._infos(snapshot, todo)
            if user.vector is not None:
                missing = [c for c in todo if c not in similar and c in infos]
                if missing:
                    similar.update(snapshot.similarities(missing, user.vector))
            for cid in todo:
                info = infos.get(cid)
                reason = "unknown_campaign" if info is None else self.ineligible(info, user, now=now)
                if reason is not None or info is None:
                    filtered[reason or "unknown_campaign"] = filtered.get(reason or "unknown_campaign", 0) + 1
                    continue
                sim = similar.get(cid, 0.0)
                aff = self._affinity(info, user)
                cop = co.get(cid, 0.0)
                pop = popular.get(cid, 0.0)
                value = scoring.blend(similarity=sim, affinity=aff, priority=info.priority, weights=blend_weights,
                                      copurchase=cop) + w.popularity * pop
                reasons = tuple(r for r, on in (("similar", cid in from_ann), ("repeat_purchase", aff > 0),
                                                ("copurchase", cop > 0), ("popular", pop > 0)) if on)
                scored.append(Recommendation(campaign_id=cid, score=value, similarity=sim, affinity=aff,
                                             reasons=reasons or ("priority",), copurchase=cop))

        score([*similar, *sorted(repeat), *sorted(from_co)])
        if len(scored) < limit:  # no vector, or too few eligible: fill from what is popular where they live
            popular = self._popular(snapshot, user.country)
            score(popular)
        scored.sort(key=lambda r: (-r.score, r.campaign_id))
        strategy: Strategy = "personalised" if user.vector is not None else "fallback"
        return Recommendations(user_id=user_id, items=tuple(scored[:limit]), strategy=strategy,
                               index_version=snapshot.version, candidates=len(seen), filtered=filtered)

    @staticmethod
    def _popular(snapshot: ServingSnapshot, country: str | None) -> dict[str, float]:
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
        return out


def recommend_many(recommender: Recommender, user_ids: Sequence[str], *, limit: int = 10,
                   now: datetime | None = None) -> list[Recommendations]:
    """Convenience for batch callers (scheduling): one call per user, unknown users skipped."""
    out = []
    for user_id in user_ids:
        try:
            out.append(recommender.recommend(user_id, limit=limit, now=now))
        except NotFoundError:
            continue
    return out


def sent_item(user_id: str, campaign_id: str, ts: datetime, **extra: Any) -> Item:
    """A ``sends`` item in the shape the delivery worker writes (also what tests use)."""
    return {"pk": user_id, "sk": tables.send_sk(ts, campaign_id), "campaign_id": campaign_id,
            "ts": ts.isoformat(), **extra}

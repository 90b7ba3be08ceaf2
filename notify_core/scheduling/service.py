"""Plan-and-store for a set of users: the one path the Dagster asset and the Lambda both call.

Inputs come from where each caller has them (the lake for the daily batch, the Store for the Lambda);
candidates come from the recommender when its index is published, else from the documented cosine
fallback (:mod:`.candidates`). Users are planned in chunks so memory stays bounded; each chunk's plan is
written before the next is computed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

import polars as pl

from notify_core.clock import ManualClock
from notify_core.metrics import counted_plan_generation
from notify_core.scheduling.candidates import candidates_from_lake, eligible_campaigns
from notify_core.scheduling.checks import plan_violations
from notify_core.scheduling.ids import DEFAULT_SHARDS
from notify_core.scheduling.models import CAMPAIGNS, CANDIDATES, USERS, PlanOptions
from notify_core.scheduling.planner import ChunkInput, Ledger, PlanStats, plan_chunks
from notify_core.scheduling.store import CANCELLED, WriteSummary, day_items, load_state, write_plans
from notify_core.scheduling.timezones import SPAN_MINUTES, to_minutes
from notify_core.store import tables
from notify_core.store.port import Store

log = logging.getLogger(__name__)
CHUNK_USERS = 200_000


@dataclass(frozen=True, slots=True)
class PlanRun:
    plan_day: str
    candidate_source: str
    stats: PlanStats
    writes: WriteSummary
    minute_loads: dict[str, int] = field(default_factory=dict)  # busiest minutes, for reporting
    violations: dict[str, int] = field(default_factory=dict)  # checks.plan_violations, summed over chunks

    def metadata(self) -> dict[str, Any]:
        return {
            "plan_day": self.plan_day, "candidate_source": self.candidate_source,
            "users_planned": self.stats.users, "users_with_notifications": self.stats.users_planned,
            "notifications_planned": self.stats.notifications, "rows": self.stats.notifications,
            "store_inserted": self.writes.inserted, "store_updated": self.writes.updated + self.writes.moved
            + self.writes.revived, "store_unchanged": self.writes.unchanged, "removed": self.writes.cancelled,
            "cancelled": self.writes.cancelled, "unchanged": self.writes.unchanged,
            "kept_delivered": self.writes.kept_delivered, "write_conflicts": self.writes.conflicts,
            "peak_minute_load": self.stats.peak_minute_load, "capacity_violations": self.stats.capacity_violations,
            "capacity_shifted": self.stats.capacity_shifted, "capacity_dropped": self.stats.capacity_dropped,
            "budget_dropped": self.stats.budget_dropped, "fatigued_users": self.stats.fatigued_users,
            "unknown_timezones": self.stats.unknown_timezones, "plan_seconds": round(self.stats.seconds, 3),
        }


def effective_now(plan_day: date, *, now: datetime) -> datetime | None:
    """Planning today (or a day some zones are still living): nothing before now. A future day: the whole
    local day (None)."""
    return now if now.astimezone(UTC).date() >= plan_day else None


def users_from_lake(lake: Any) -> pl.DataFrame:
    frame: pl.DataFrame = lake.read("users")
    extra = [c for c in ("opted_out_categories",) if c in frame.columns]
    return frame.select(*USERS, *extra)


def campaigns_from_lake(lake: Any) -> pl.DataFrame:
    frame: pl.DataFrame = lake.read("campaigns")
    return frame


def users_from_store(store: Store, user_ids: Sequence[str]) -> pl.DataFrame:
    items = store.table(tables.USERS).batch_get([(u, tables.PROFILE_SK) for u in dict.fromkeys(user_ids)])
    rows = [{k: i.get(k) for k in (*USERS, "opted_out_categories")} for i in items]
    schema = {**USERS, "opted_out_categories": pl.List(pl.String)}
    return pl.DataFrame(rows, schema=schema) if rows else pl.DataFrame(schema=schema)


def campaigns_from_store(store: Store) -> pl.DataFrame:
    """Every campaign (a small table: the scan is the documented exception)."""
    rows = []
    for item in store.table(tables.CAMPAIGNS).scan():
        row = {k: item.get(k) for k in (*CAMPAIGNS, "category", "status", "start_date", "end_date")}
        for key in ("start_date", "end_date"):
            value = row[key]
            row[key] = date.fromisoformat(value) if isinstance(value, str) else value
        rows.append(row)
    schema = {**CAMPAIGNS, "category": pl.String, "status": pl.String, "start_date": pl.Date, "end_date": pl.Date}
    return pl.DataFrame(rows, schema=schema) if rows else pl.DataFrame(schema=schema)


def candidates_from_recommender(store: Store, artefacts: Any, user_ids: Sequence[str], *, k: int,
                                now: datetime) -> pl.DataFrame | None:
    """The recommender's top-k per user (its blended score as relevance), or None when it cannot serve
    (no published index, or its API is not there): the caller then uses the cosine fallback."""
    try:
        from notify_core.recommend.recommender import Recommender, recommend_many
        from notify_core.recommend.serving import IndexHolder

        holder = IndexHolder(artefacts)
        if getattr(holder.snapshot(), "base", None) is None:
            return None
        recommender = Recommender(store=store, holder=holder, clock=ManualClock(now))  # time stands at ``now``
        rows = [{"user_id": r.user_id, "campaign_id": item.campaign_id, "relevance": float(item.score)}
                for r in recommend_many(recommender, user_ids, limit=k, now=now) for item in r.items]
    except Exception as exc:  # the recommender is optional here; say why it was not used
        log.warning("recommender unavailable for scheduling, using the cosine fallback: %s", exc)
        return None
    return pl.DataFrame(rows, schema=CANDIDATES) if rows else pl.DataFrame(schema=CANDIDATES)


@counted_plan_generation
def plan_and_store(
    store: Store, *, users: pl.DataFrame, campaigns: pl.DataFrame, candidates: pl.DataFrame, plan_day: date,
    now: datetime | None = None, options: PlanOptions | None = None, shards: int = DEFAULT_SHARDS,
    chunk_users: int = CHUNK_USERS, candidate_source: str = "given",
    progress: Callable[[int, int], None] | None = None, ledger: Ledger | None = None,
) -> PlanRun:
    """Plan ``users`` in chunks (history and interactions from the Store) and write each chunk's plan.

    ``progress(users_done, users_total)`` is called after each chunk is written (for a live display)."""
    day = plan_day.isoformat()
    campaigns = eligible_campaigns(campaigns, plan_day)
    candidates = candidates.filter(pl.col("campaign_id").is_in(campaigns["campaign_id"].implode()))
    users = users.unique("user_id", keep="first").sort("user_id")
    ledger = ledger or Ledger(plan_day)
    states: dict[int, Any] = {}

    def chunks() -> Any:
        for k, lo in enumerate(range(0, users.height, chunk_users)):
            part = users.slice(lo, chunk_users)
            ids = part["user_id"].to_list()
            state = states[k] = load_state(store, ids, plan_day=plan_day)
            mine = candidates.filter(pl.col("user_id").is_in(part["user_id"].implode()))
            yield ChunkInput(users=part, candidates=mine, history=state.history, interactions=state.interactions)

    stats = PlanStats()
    writes = WriteSummary()
    opts = options or PlanOptions()
    violations: dict[str, int] = {}
    for k, plan in enumerate(plan_chunks(chunks(), campaigns, plan_day=plan_day, total_users=users.height,
                                         now=now, options=options, ledger=ledger)):
        part = users.slice(k * chunk_users, chunk_users)
        ids = part["user_id"].to_list()
        found = plan_violations(plan.frame, part, capacity=opts.minute_capacity)
        violations = {name: violations.get(name, 0) + v for name, v in found.items()}
        summary = write_plans(store, plan.frame, user_ids=ids, plan_day=day, shards=shards,
                              existing=states.pop(k).day_items)
        stats = stats + plan.stats
        writes = WriteSummary(**{f: getattr(writes, f) + getattr(summary, f) for f in WriteSummary.__slots__})
        if progress is not None:
            progress(min((k + 1) * chunk_users, users.height), users.height)
    busiest = ledger.loads.argsort()[-3:][::-1]
    loads = {(ledger.base + _minutes(int(m))).strftime("%Y-%m-%dT%H:%M"): int(ledger.loads[m])
             for m in busiest if ledger.loads[m] > 0}
    stats = replace(stats, peak_minute_load=ledger.peak(), capacity_violations=ledger.violations(opts.minute_capacity))
    violations["over_capacity"] = stats.capacity_violations  # across chunks, from the shared ledger
    return PlanRun(plan_day=day, candidate_source=candidate_source, stats=stats, writes=writes, minute_loads=loads,
                   violations=violations)


def _minutes(m: int) -> timedelta:
    return timedelta(minutes=m)


def plan_from_lake(
    store: Store, lake: Any, *, plan_day: date, now: datetime, options: PlanOptions | None = None,
    artefacts: Any = None, k: int = 20, shards: int = DEFAULT_SHARDS,
    progress: Callable[[int, int], None] | None = None, user_ids: Collection[str] | None = None,
) -> PlanRun:
    """The daily batch: every user in the lake, candidates from the recommender or the cosine fallback.

    ``now`` is the caller's clock: planning today places nothing before it (:func:`effective_now`).
    ``user_ids`` re-plans only those users (the ones whose vectors changed since the day was planned);
    the others' plans stay as they are and count against the minute capacity and the campaign budgets
    (:func:`ledger_of_others`)."""
    users = users_from_lake(lake)
    campaigns = eligible_campaigns(campaigns_from_lake(lake), plan_day)
    ledger = None
    if user_ids is not None:
        chosen = pl.col("user_id").is_in(pl.Series(sorted(user_ids), dtype=pl.String))
        ledger = ledger_of_others(store, users.filter(~chosen)["user_id"].to_list(), plan_day=plan_day,
                                  campaigns=campaigns)
        users = users.filter(chosen)
    cands = None
    source = "cosine_fallback"
    if artefacts is not None:
        cands = candidates_from_recommender(store, artefacts, users["user_id"].to_list(), k=k, now=now)
        source = "recommender" if cands is not None else source
    if cands is None:
        cands = candidates_from_lake(lake, campaigns["campaign_id"].to_list(), k=k)
    return plan_and_store(store, users=users, campaigns=campaigns, candidates=cands, plan_day=plan_day,
                          now=effective_now(plan_day, now=now), options=options, shards=shards,
                          candidate_source=source, progress=progress, ledger=ledger)


def ledger_of_others(store: Store, user_ids: Sequence[str], *, plan_day: date, campaigns: pl.DataFrame) -> Ledger:
    """The day's shared ledger as the stored plans of ``user_ids`` leave it (their minute loads, the
    campaign budgets they use), so re-planning only some users keeps the capacity and budget rules of a
    full re-plan. One partition read per user: less than a full re-plan reads (:func:`load_state`)."""
    ledger = Ledger(plan_day)
    used: dict[str, int] = {}
    for items in day_items(store, user_ids, plan_day.isoformat()).values():
        for item in items:
            if item.get("status") == CANCELLED:
                continue
            minute = to_minutes(datetime.fromisoformat(str(item["send_at"]).replace("Z", "+00:00")), ledger.base)
            if 0 <= minute < SPAN_MINUTES:
                ledger.loads[minute] += 1
            used[str(item["campaign_id"])] = used.get(str(item["campaign_id"]), 0) + 1
    for cid, budget in campaigns.select("campaign_id", "daily_budget").iter_rows():
        if budget is not None:
            ledger.budget_left[cid] = max(int(budget) - used.get(cid, 0), 0)
    return ledger


def plan_for_users(
    store: Store, user_ids: Sequence[str], *, plan_day: date, now: datetime,
    options: PlanOptions | None = None, artefacts: Any = None, k: int = 20, shards: int = DEFAULT_SHARDS,
) -> PlanRun:
    """The serverless path (Lambda ``generate_schedule``): a batch of users, everything from the Store.

    ``now`` is the caller's clock, as for :func:`plan_from_lake`."""
    from notify_core.embeddings.store import CAMPAIGN, USER, load_embeddings
    from notify_core.scheduling.candidates import cosine_candidates

    users = users_from_store(store, user_ids)
    campaigns = eligible_campaigns(campaigns_from_store(store), plan_day)
    ids = users["user_id"].to_list()
    cands = None
    source = "cosine_fallback"
    if artefacts is not None:
        cands = candidates_from_recommender(store, artefacts, ids, k=k, now=now)
        source = "recommender" if cands is not None else source
    if cands is None:
        import numpy as np

        uvec = load_embeddings(store, USER, ids)
        cvec = load_embeddings(store, CAMPAIGN, campaigns["campaign_id"].to_list())
        have_u = [u for u in ids if u in uvec]
        have_c = [c for c in campaigns["campaign_id"].to_list() if c in cvec]
        cands = cosine_candidates(
            have_u, np.stack([uvec[u].vector for u in have_u]) if have_u else np.zeros((0, 1), np.float32),
            have_c, np.stack([cvec[c].vector for c in have_c]) if have_c else np.zeros((0, 1), np.float32), k=k)
    return plan_and_store(store, users=users, campaigns=campaigns, candidates=cands, plan_day=plan_day,
                          now=effective_now(plan_day, now=now), options=options, shards=shards,
                          candidate_source=source)

"""Plan-and-store for a set of users: the one path the Dagster asset and the Lambda both call.

Inputs come from where each caller has them (the lake for the daily batch, the Store for the Lambda);
candidates come from the recommender when its index is published, else from the documented cosine
fallback (:mod:`.candidates`). Users are planned in chunks so memory stays bounded; each chunk's plan is
written before the next is computed.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from typing import Any, Literal

import polars as pl

from notify_core.campaigns import ELIGIBILITY_COLUMNS
from notify_core.campaigns import schema as campaign_schema
from notify_core.delivery.feedback import add_campaign_counts
from notify_core.erasure_queue import requeue_erased_since
from notify_core.erasure_register import ErasureRegister, erased_before
from notify_core.errors import CeilingReachedError, NotifyError
from notify_core.lake import Lake
from notify_core.lifecycle import CANCELLED, DELIVERED_STATES, PENDING
from notify_core.malloc_tuning import keep_freed_memory
from notify_core.metrics import counted_plan_generation
from notify_core.recommend.artefacts import ArtefactStore
from notify_core.scheduling.candidate_pool import (
    CandidatePool,
    Reopen,
    pinned_recommender,
    recommended_frame,
    worker_count,
)
from notify_core.scheduling.candidates import (
    LakeEmbeddings,
    candidates_from_embeddings,
    eligible_campaigns,
    lake_embeddings,
)
from notify_core.scheduling.checks import plan_violations
from notify_core.scheduling.exploration import campaign_counts
from notify_core.scheduling.ids import DEFAULT_SHARDS
from notify_core.scheduling.long_cooldowns import older_sends
from notify_core.scheduling.models import CAMPAIGNS, USERS, PlanOptions
from notify_core.scheduling.planner import ChunkInput, Ledger, PlanStats, plan_chunks
from notify_core.scheduling.store import (
    WriteSummary,
    day_items,
    load_state,
    parse_utc,
    plan_item_frame,
    write_plans,
)
from notify_core.scheduling.timezones import SPAN_MINUTES, first_local_midnight, to_minutes
from notify_core.scheduling.writer import PlanWriterProcess, opener_for
from notify_core.schemas import SCHEMAS
from notify_core.store import tables
from notify_core.store.port import Store

log = logging.getLogger(__name__)
CHUNK_USERS = 200_000
# The GIL hand-over interval while a pipelined plan runs. The writer thread's executemany releases the GIL
# around every row's sqlite3_step and must take it back for the next bind; while the planning thread runs
# Python (ids, state decoding), each take-back waits up to the switch interval (CPython's default 5 ms).
# Measured here (an executemany of 600k rows beside a pure-Python thread, load ~8): 15-18 s at 5 ms,
# 11.6 s at 0.5 ms, 8.8 s at 0.1 ms, 3-5 s alone. Restored when the run ends.
PIPELINE_SWITCH_INTERVAL_S = 0.0005


@contextmanager
def gil_handover(interval_s: float | None) -> Iterator[None]:
    """``sys.setswitchinterval(interval_s)`` for the block (process-wide: it is the interpreter's), then
    the previous value back. ``None`` leaves it alone."""
    if interval_s is None:
        yield
        return
    previous = sys.getswitchinterval()
    sys.setswitchinterval(interval_s)
    try:
        yield
    finally:
        sys.setswitchinterval(previous)


@dataclass(frozen=True, slots=True)
class PlanRun:
    plan_day: str
    candidate_source: str
    stats: PlanStats
    writes: WriteSummary
    minute_loads: dict[str, int] = field(default_factory=dict)  # busiest minutes, for reporting
    violations: dict[str, int] = field(default_factory=dict)  # checks.plan_violations, summed over chunks
    seconds: dict[str, float] = field(default_factory=dict)  # wall time per phase: candidates, state, plan, write
    # CPU time of each thread (time.thread_time): "main" (state, candidates, plan) and "write" (the writer's).
    # Beside ``seconds`` it shows how far the pipeline's two threads overlap and how long the writer waited
    # (for the GIL or the disk): write wall minus write CPU.
    cpu_seconds: dict[str, float] = field(default_factory=dict)
    # Where the chunks were written: "process" (:mod:`.writer`; ``cpu_seconds["write"]`` is then that
    # process's CPU), "thread", or "inline" (one chunk, or pipeline off); and the writer process's peak RSS.
    writer: str = "inline"
    writer_peak_rss_mb: float = 0.0
    # users erased while the run was under way, whose plans it wrote back: queued for the erasure sweep again
    erasures_requeued: int = 0

    def metadata(self) -> dict[str, Any]:
        return {
            "plan_day": self.plan_day, "candidate_source": self.candidate_source,
            "users_planned": self.stats.users, "users_with_notifications": self.stats.users_planned,
            "users_reachable": self.stats.users_reachable, "users_below_relevance_floor": self.stats.users_below_floor,
            "notifications_planned": self.stats.notifications, "rows": self.stats.notifications,
            "store_inserted": self.writes.inserted, "store_updated": self.writes.updated + self.writes.moved
            + self.writes.revived, "store_unchanged": self.writes.unchanged, "removed": self.writes.cancelled,
            "cancelled": self.writes.cancelled, "unchanged": self.writes.unchanged,
            "kept_delivered": self.writes.kept_delivered, "write_conflicts": self.writes.conflicts,
            "peak_minute_load": self.stats.peak_minute_load, "capacity_violations": self.stats.capacity_violations,
            "capacity_shifted": self.stats.capacity_shifted, "capacity_dropped": self.stats.capacity_dropped,
            "budget_dropped": self.stats.budget_dropped, "fatigued_users": self.stats.fatigued_users,
            "unknown_timezones": self.stats.unknown_timezones, "plan_seconds": round(self.stats.seconds, 3),
            "exploration_slots": self.stats.exploration_slots, "erasures_requeued": self.erasures_requeued,
        }


def effective_now(plan_day: date, *, now: datetime) -> datetime | None:
    """Planning a day that has begun in some zone (today, a day some zones are still living, or "tomorrow"
    once it has begun east of UTC): nothing before now, and the sends the worker holds count (``load_state``
    with ``now``). A day no zone has begun yet: the whole local day (None), so its plan, affinity and fatigue
    read as of the day's start, whenever the run is made.

    Judged by the day's first local midnight on Earth (:func:`.timezones.first_local_midnight`), not by the
    UTC date: re-planning tomorrow after it began in Auckland once placed sends in its past and counted no
    send in flight there (a sixth notification, the same campaign twice)."""
    return now if now >= first_local_midnight(plan_day) else None


# What eligibility needs of a user beyond the planner's columns (campaigns.eligibility).
_USER_EXTRAS = ("country", "opted_out_categories")


def _user_schema(*names: str) -> dict[str, Any]:
    return {name: SCHEMAS["users"][name] for name in names}


def users_from_lake(lake: Lake) -> pl.DataFrame:
    frame: pl.DataFrame = lake.read("users")
    extra = [c for c in _USER_EXTRAS if c in frame.columns]
    return frame.select(*USERS, *extra)


def campaigns_from_lake(lake: Lake) -> pl.DataFrame:
    frame: pl.DataFrame = lake.read("campaigns")
    return frame


def users_from_store(store: Store, user_ids: Sequence[str]) -> pl.DataFrame:
    items = store.table(tables.USERS).batch_get([(u, tables.PROFILE_SK) for u in dict.fromkeys(user_ids)])
    schema = {**USERS, **_user_schema(*_USER_EXTRAS)}
    rows = [{k: i.get(k) for k in schema} for i in items]
    return pl.DataFrame(rows, schema=schema) if rows else pl.DataFrame(schema=schema)


def campaigns_from_store(store: Store) -> pl.DataFrame:
    """Every campaign (a small table: the scan is the documented exception)."""
    schema = {**CAMPAIGNS, **campaign_schema(*ELIGIBILITY_COLUMNS)}
    rows = []
    for item in store.table(tables.CAMPAIGNS).scan():
        row = {k: item.get(k) for k in schema}
        for key in ("start_date", "end_date"):
            value = row[key]
            row[key] = date.fromisoformat(value) if isinstance(value, str) else value
        rows.append(row)
    return pl.DataFrame(rows, schema=schema) if rows else pl.DataFrame(schema=schema)


CosineFallback = Callable[[list[str], list[str], int], pl.DataFrame]
# Candidates (models.CANDIDATES) of the given users, asked chunk by chunk so a 10M-user day never holds
# every user's candidates (nor the recommender's per-user contexts) at once.
CandidateSource = Callable[[list[str]], pl.DataFrame]


def candidate_source(
    store: Store, campaign_ids: Sequence[str], *, artefacts: ArtefactStore | None, fallback: CosineFallback,
    k: int, now: datetime, workers: int = 1, reopen: Reopen | None = None,
) -> tuple[CandidateSource, str]:
    """The one way the planner gets candidates: a source asked for each chunk's users, and its name.

    The recommender's top ``k`` per user when an index is published; only when none is (a fresh install,
    or no artefact store) the documented cosine fallback over ``campaign_ids``. Errors of a published
    recommender surface here, before the first chunk: a broken index must fail the plan, not quietly turn
    it into a worse one. Every chunk ranks with the version that was current when the source was made: a
    version published during a long run serves the next plan, so one day's plan never mixes two rankings.
    ``workers`` > 1 with a ``reopen`` ranks in that many processes (:class:`.candidate_pool.CandidatePool`,
    which the caller closes); else in this one.
    """
    if artefacts is not None:
        recommender = pinned_recommender(store, artefacts, version=None, now=now)
        if recommender is not None:
            if workers > 1 and reopen is not None:
                version = recommender.holder.snapshot().version
                assert version is not None  # a snapshot with a base has its version
                return CandidatePool(reopen=reopen, version=version, now=now, k=k, workers=workers), "recommender"
            return (lambda user_ids: recommended_frame(recommender, user_ids, k=k, now=now)), "recommender"
        log.info("no published index: planning from the cosine fallback")
    eligible = list(campaign_ids)
    return (lambda user_ids: fallback(user_ids, eligible, k)), "cosine_fallback"


def candidates_for(
    store: Store, user_ids: Sequence[str], campaign_ids: Sequence[str], *, artefacts: ArtefactStore | None,
    fallback: CosineFallback, k: int, now: datetime,
) -> tuple[pl.DataFrame, str]:
    """Every one of ``user_ids``' candidates at once, and where they came from (:func:`candidate_source`
    asked once): for callers that look at a sample, not for a day's plan."""
    source, name = candidate_source(store, campaign_ids, artefacts=artefacts, fallback=fallback, k=k, now=now)
    return source(list(user_ids)), name


def lake_cosine(lake: Lake) -> CosineFallback:
    """The fallback over the lake's user and campaign embeddings (the daily batch): the two tables are read
    on the first chunk and kept for the run; each chunk ranks its own users."""
    read: list[LakeEmbeddings | None] = []

    def cosine(user_ids: list[str], campaign_ids: list[str], k: int) -> pl.DataFrame:
        if not read:
            read.append(lake_embeddings(lake))
        return candidates_from_embeddings(read[0], campaign_ids, user_ids=user_ids, k=k)

    return cosine


def store_cosine(store: Store) -> CosineFallback:
    """The fallback over the embeddings in the Store (the serverless path)."""

    def cosine(user_ids: list[str], campaign_ids: list[str], k: int) -> pl.DataFrame:
        import numpy as np

        from notify_core.embeddings.store import CAMPAIGN, USER, load_embeddings
        from notify_core.scheduling.candidates import cosine_candidates

        uvec = load_embeddings(store, USER, user_ids)
        cvec = load_embeddings(store, CAMPAIGN, campaign_ids)
        have_u = [u for u in user_ids if u in uvec]
        have_c = [c for c in campaign_ids if c in cvec]
        return cosine_candidates(
            have_u, np.stack([uvec[u].vector for u in have_u]) if have_u else np.zeros((0, 1), np.float32),
            have_c, np.stack([cvec[c].vector for c in have_c]) if have_c else np.zeros((0, 1), np.float32), k=k)

    return cosine


@counted_plan_generation
def plan_and_store(
    store: Store, *, users: pl.DataFrame, campaigns: pl.DataFrame, candidates: pl.DataFrame | CandidateSource,
    plan_day: date,
    now: datetime | None = None, options: PlanOptions | None = None, shards: int = DEFAULT_SHARDS,
    chunk_users: int = CHUNK_USERS, candidate_source: str = "given",
    progress: Callable[[int, int], None] | None = None, ledger: Ledger | None = None, pipeline: bool = True,
    switch_interval_s: float | None = PIPELINE_SWITCH_INTERVAL_S, writer_process: bool = True,
    register: ErasureRegister | None = None,
) -> PlanRun:
    """Plan ``users`` in chunks (history and interactions from the Store) and write each chunk's plan.

    ``pipeline`` (with more than one chunk): write chunk n on a writer thread while chunk n+1's state,
    candidates and plan are computed (at most one chunk in flight, so memory stays two chunks). The
    chunks' users are disjoint, so chunk n+1 reads nothing chunk n writes; the ledger is only touched by
    planning, in this thread. Measured at 300k users in 100k chunks: 34 s against 57 s sequential.

    ``writer_process`` (pipelined, and a Store the process can reopen: :func:`.writer.opener_for`): the
    chunks are written by :class:`.writer.PlanWriterProcess`, its own GIL and SQLite connection, on the
    other core; else by a thread. Same writes, same order, one chunk in flight either way.
    ``switch_interval_s``: the GIL hand-over interval while a writer thread runs (:data:`PIPELINE_SWITCH_INTERVAL_S`;
    ``None`` keeps the interpreter's), so the writer's per-row GIL take-backs do not wait 5 ms each.
    ``progress(users_done, users_total)`` is called after each chunk is written (for a live display).
    ``candidates``: a frame of every user's, or a :data:`CandidateSource` asked for each chunk's users.
    ``register``: the erasure register as it stood before ``users`` were read (None: read here, first). A
    user erased after it had nothing planned to delete yet, and this run writes their plans back (which the
    worker would send: no profile means "send"), so after the last write the users erased since are queued
    for the erasure sweep again (:func:`notify_core.erasure_queue.requeue_erased_since`, as ingestion does)."""
    register = register if register is not None else erased_before(store)
    day = plan_day.isoformat()
    campaigns = eligible_campaigns(campaigns, plan_day)
    eligible = pl.col("campaign_id").is_in(campaigns["campaign_id"].implode())
    if isinstance(candidates, pl.DataFrame):
        candidates = candidates.filter(eligible)
    users = users.unique("user_id", keep="first").sort("user_id")
    budgets = budgets_of(campaigns)
    cooldowns = {cid: int(h) for cid, h in campaigns.select("campaign_id", "cooldown_hours").iter_rows() if h}
    ledger = ledger or ledger_of_spending(store, plan_day=plan_day, budgets=budgets, now=now)
    store.tune_for_bulk_writes()  # every chunk writes its plan in bulk from this thread
    if users.height > chunk_users:  # a run at scale (the asset's, `notify run`'s: its own process), not an API
        keep_freed_memory()  # call's few users: each chunk's arrays reuse the last one's memory (.malloc_tuning)
    states: dict[int, Any] = {}
    seconds = dict.fromkeys(("candidates", "state", "plan", "write"), 0.0)
    cpu = dict.fromkeys(("main", "write"), 0.0)
    main_cpu = time.thread_time()

    def chunks() -> Any:
        for k, lo in enumerate(range(0, users.height, chunk_users)):
            part = users.slice(lo, chunk_users)
            ids = part["user_id"].to_list()
            started = time.perf_counter()
            state = states[k] = load_state(store, ids, plan_day=plan_day, now=now)
            older = older_sends(store, ids, plan_day=plan_day, cooldowns=cooldowns)
            square_with_stored(ledger, state.day_items, budgets)
            seconds["state"] += time.perf_counter() - started
            started = time.perf_counter()
            if isinstance(candidates, pl.DataFrame):
                mine = candidates.filter(pl.col("user_id").is_in(part["user_id"].implode()))
            else:
                mine = candidates(ids).filter(eligible)
            seconds["candidates"] += time.perf_counter() - started
            history = pl.concat([state.history, older]) if older.height else state.history
            yield ChunkInput(users=part, candidates=mine, history=history, interactions=state.interactions,
                             scheduled=state.scheduled)

    stats = PlanStats()
    writes = WriteSummary()
    opts = options or PlanOptions()
    violations: dict[str, int] = {}
    counts = (campaign_counts(store, campaigns["campaign_id"].to_list(), plan_day=plan_day)
              if opts.exploration.share > 0 else None)  # the bandit's posterior (.exploration)
    def write(frame: pl.DataFrame, ids: list[str], existing: dict[str, list[Any]],
              items: pl.DataFrame | None = None) -> WriteSummary:
        if pipeline:
            store.tune_for_bulk_writes()  # the writer thread's own connection
        started, thread_cpu = time.perf_counter(), time.thread_time()
        summary = write_plans(store, frame, user_ids=ids, plan_day=day, shards=shards, existing=existing,
                              items=items)
        seconds["write"] += time.perf_counter() - started
        cpu["write"] += time.thread_time() - thread_cpu
        return summary

    reserved: dict[int, dict[tuple[str, str], int]] = {}

    def reserve(k: int, frame: pl.DataFrame, existing: dict[str, list[Any]]) -> None:
        """A batch planned apart from the others (``ledger.counts_planned``) adds what its chunk will take of
        each budget to the ``planned`` counters before writing it, on the condition that no budget is passed:
        of two batches planning the same budget at the same time, the second gets CeilingReachedError with
        nothing written (:func:`plan_for_users` plans it again from the counters as they are then). The
        reservation is taken back once the chunk is written (write_plans adds what it did write)."""
        if not ledger.counts_planned:
            return
        deltas = budget_deltas(frame, existing, budgets, day=day)
        if deltas:
            add_campaign_counts(store, deltas, field="planned", ceilings={key: budgets[key[0]] for key in deltas})
            reserved[k] = deltas

    def written(k: int, summary: WriteSummary) -> None:
        nonlocal writes
        writes = WriteSummary(**{f: getattr(writes, f) + getattr(summary, f) for f in WriteSummary.__slots__})
        deltas = reserved.pop(k, None)
        if deltas:
            add_campaign_counts(store, {key: -n for key, n in deltas.items()}, field="planned")
        if progress is not None:
            progress(min((k + 1) * chunk_users, users.height), users.height)

    pipeline = pipeline and users.height > chunk_users  # one chunk: nothing to overlap
    opener = opener_for(store) if pipeline and writer_process else None
    process = PlanWriterProcess(opener[0], clock=opener[1]) if opener is not None else None
    writer = ThreadPoolExecutor(1, thread_name_prefix="plan-writer") if pipeline and process is None else None
    in_flight: tuple[int, Callable[[], WriteSummary]] | None = None
    process_rss = 0.0

    def hand_over(frame: pl.DataFrame, ids: list[str], existing: dict[str, list[Any]],
                  items: pl.DataFrame | None) -> Callable[[], WriteSummary]:
        """Start one chunk's write; the returned call waits for it (and raises its error)."""
        nonlocal process, writer
        if process is not None and not process.started():  # could not spawn here: keep the writer thread
            process.close()
            process, writer = None, ThreadPoolExecutor(1, thread_name_prefix="plan-writer")
        if process is None:
            assert writer is not None
            return writer.submit(write, frame, ids, existing, items).result
        future = process.submit(plan=frame, user_ids=ids, plan_day=day, shards=shards,
                                existing=existing, items=items)

        def wait() -> WriteSummary:
            nonlocal process_rss
            assert process is not None
            done = process.result(future)
            seconds["write"] += done.wall_s
            cpu["write"] += done.cpu_s
            process_rss = max(process_rss, done.peak_rss_mb)
            return done.summary

        return wait

    finished = False
    with gil_handover(switch_interval_s if writer is not None else None):
        try:
            for k, plan in enumerate(plan_chunks(chunks(), campaigns, plan_day=plan_day, total_users=users.height,
                                                 now=now, options=options, ledger=ledger, campaign_counts=counts)):
                part = users.slice(k * chunk_users, chunk_users)
                ids = part["user_id"].to_list()
                seconds["plan"] += plan.stats.seconds
                found = plan_violations(plan.frame, part, capacity=opts.minute_capacity)
                violations = {name: violations.get(name, 0) + v for name, v in found.items()}
                stats = stats + plan.stats
                existing = states.pop(k).day_items
                reserve(k, plan.frame, existing)
                if not pipeline:
                    written(k, write(plan.frame, ids, existing))
                    continue
                # The items' shape (shards: a blake2 per user) is built here, beside the busy writer.
                items = plan_item_frame(plan.frame, shards=shards) if not plan.frame.is_empty() else None
                if in_flight is not None:  # one chunk in flight: wait for it before handing over the next
                    written(in_flight[0], in_flight[1]())
                in_flight = (k, hand_over(plan.frame, ids, existing, items))
            if in_flight is not None:
                written(in_flight[0], in_flight[1]())
            finished = True
        finally:
            if writer is not None:
                writer.shutdown(wait=True)
            if process is not None:
                process.close()
            if not finished:
                # The chunks written before the failure may hold a user erased meanwhile: queued all the same
                # (the Store may be what failed, so a failure to queue must not replace the run's own error).
                with contextlib.suppress(NotifyError):
                    _requeue_erased(store, register, users, day=day)
    cpu["main"] = time.thread_time() - main_cpu - (0.0 if pipeline else cpu["write"])
    requeued = _requeue_erased(store, register, users, day=day)
    busiest = ledger.loads.argsort()[-3:][::-1]
    loads = {(ledger.base + _minutes(int(m))).strftime("%Y-%m-%dT%H:%M"): int(ledger.loads[m])
             for m in busiest if ledger.loads[m] > 0}
    stats = replace(stats, peak_minute_load=ledger.peak(), capacity_violations=ledger.violations(opts.minute_capacity))
    violations["over_capacity"] = stats.capacity_violations  # across chunks, from the shared ledger
    return PlanRun(plan_day=day, candidate_source=candidate_source, stats=stats, writes=writes, minute_loads=loads,
                   violations=violations, seconds=seconds, cpu_seconds=cpu,
                   writer="process" if process is not None else "thread" if writer is not None else "inline",
                   writer_peak_rss_mb=process_rss, erasures_requeued=len(requeued))


def _requeue_erased(store: Store, register: ErasureRegister, users: pl.DataFrame, *, day: str) -> list[str]:
    """The run's users erased since ``register`` was read, queued for the sweep again (see
    :func:`plan_and_store`)."""
    requeued = requeue_erased_since(store, register, users["user_id"].to_list())
    if requeued:  # by count only: the ids are the erased users'
        log.warning("users erased during this plan run queued for the erasure sweep again",
                    extra={"plan_day": day, "users": len(requeued)})
    return requeued


def _minutes(m: int) -> timedelta:
    return timedelta(minutes=m)


def plan_from_lake(
    store: Store, lake: Lake, *, plan_day: date, now: datetime, options: PlanOptions | None = None,
    artefacts: ArtefactStore | None = None, k: int = 20, shards: int = DEFAULT_SHARDS,
    progress: Callable[[int, int], None] | None = None, user_ids: Collection[str] | None = None,
    chunk_users: int = CHUNK_USERS, candidate_workers: int = 1, reopen: Reopen | None = None,
) -> PlanRun:
    """The daily batch: every user in the lake (:func:`candidate_source` chooses the candidates, chunk by chunk).

    ``now`` is the caller's clock: planning a day that has begun somewhere places nothing before it
    (:func:`effective_now`).
    ``user_ids`` re-plans only those users (the ones whose vectors changed since the day was planned);
    the others' plans stay as they are and count against the minute capacity and the campaign budgets
    (:func:`ledger_of_others`). ``candidate_workers`` (0: one per core) ranks the recommender's candidates in
    that many processes, each opening its backends with ``reopen``, once the run has enough users to pay for
    them (:func:`.candidate_pool.worker_count`)."""
    register = erased_before(store)  # before the users: who is erased after this is queued again after the run
    users = users_from_lake(lake)
    ledger = None
    if user_ids is not None:
        chosen = pl.col("user_id").is_in(pl.Series(sorted(user_ids), dtype=pl.String))
        ledger = ledger_of_others(store, users.filter(~chosen)["user_id"].to_list(), plan_day=plan_day,
                                  campaigns=eligible_campaigns(campaigns_from_lake(lake), plan_day))
        users = users.filter(chosen)
    return _plan(store, users=users, campaigns=campaigns_from_lake(lake), plan_day=plan_day,
                 now=now, options=options, artefacts=artefacts, fallback=lake_cosine(lake), k=k, shards=shards,
                 chunk_users=chunk_users, progress=progress, ledger=ledger,
                 candidate_workers=candidate_workers, reopen=reopen, register=register)


def plan_for_users(
    store: Store, user_ids: Sequence[str], *, plan_day: date, now: datetime,
    options: PlanOptions | None = None, artefacts: ArtefactStore | None = None, k: int = 20,
    shards: int = DEFAULT_SHARDS, chunk_users: int = CHUNK_USERS, candidate_workers: int = 1,
    reopen: Reopen | None = None,
) -> PlanRun:
    """The serverless path (Lambda ``generate_schedule``): a batch of users, everything from the Store.

    ``now`` is the caller's clock, and ``candidate_workers`` / ``reopen`` as for :func:`plan_from_lake`."""
    register = erased_before(store)  # before the profiles: see plan_and_store
    users = users_from_store(store, user_ids)
    campaigns = campaigns_from_store(store)
    budgets = budgets_of(eligible_campaigns(campaigns, plan_day))
    for attempt in range(1, BUDGET_RACE_ATTEMPTS + 1):
        try:
            return _plan(store, users=users, campaigns=campaigns, plan_day=plan_day, now=now, options=options,
                         artefacts=artefacts, fallback=store_cosine(store), k=k, shards=shards,
                         chunk_users=chunk_users, candidate_workers=candidate_workers, reopen=reopen,
                         register=register, ledger=ledger_of_planned(store, plan_day=plan_day, budgets=budgets))
        except CeilingReachedError as exc:
            if attempt == BUDGET_RACE_ATTEMPTS:
                raise
            log.info("another batch planned a budget first: planning this batch again",
                     extra={"plan_day": plan_day.isoformat(), "attempt": attempt, "campaigns": len(exc.over)})
    raise AssertionError("unreachable")  # the loop returns or raises


def _plan(
    store: Store, *, users: pl.DataFrame, campaigns: pl.DataFrame, plan_day: date, now: datetime,
    options: PlanOptions | None, artefacts: ArtefactStore | None, fallback: CosineFallback, k: int, shards: int,
    chunk_users: int, progress: Callable[[int, int], None] | None = None, ledger: Ledger | None = None,
    candidate_workers: int = 1, reopen: Reopen | None = None, register: ErasureRegister | None = None,
) -> PlanRun:
    campaigns = eligible_campaigns(campaigns, plan_day)
    source, name = candidate_source(store, campaigns["campaign_id"].to_list(), artefacts=artefacts,
                                    fallback=fallback, k=k, now=now, reopen=reopen,
                                    workers=worker_count(candidate_workers, users=users.height))
    try:
        return plan_and_store(store, users=users, campaigns=campaigns, candidates=source, plan_day=plan_day,
                              now=effective_now(plan_day, now=now), options=options, shards=shards,
                              chunk_users=chunk_users, candidate_source=name, progress=progress, ledger=ledger,
                              register=register)
    finally:
        if isinstance(source, CandidatePool):
            source.close()


def budgets_of(campaigns: pl.DataFrame) -> dict[str, int]:
    """Each campaign's ``daily_budget``, for those that have one."""
    return {cid: int(b) for cid, b in campaigns.select("campaign_id", "daily_budget").iter_rows() if b is not None}


def ledger_of_spending(store: Store, *, plan_day: date, budgets: dict[str, int], now: datetime | None) -> Ledger:
    """The ledger of a plan of all the day's users: each budget less what the day's sends have used by
    ``now`` (the ``budget_spent`` counters the delivery worker keeps by plan day: one read per budgeted
    campaign, not one per user). Before the day has begun (``now`` None) nothing can have been sent.

    Sends after ``now`` (and those whose counts a worker had not flushed yet, a pass's worth) are charged
    chunk by chunk as the run reads its users (:meth:`Ledger.charge_kept`)."""
    if now is None:
        return Ledger(plan_day)
    ledger = Ledger(plan_day, spent_before=now)
    for cid, n in _day_counters(store, plan_day=plan_day, campaign_ids=budgets, field="budget_spent").items():
        ledger.charge(cid, n, budget=budgets[cid])
    return ledger


def ledger_of_planned(store: Store, *, plan_day: date, budgets: dict[str, int]) -> Ledger:
    """The ledger of a batch of the day's users planned apart from the others (the Lambda's
    :func:`plan_for_users`): each budget less everything planned for the day so far, every user's (the
    ``planned`` counters :func:`.store.write_plans` keeps: pending, in flight and sent), so one batch after
    another never plans past a budget; each chunk credits back its own users' pending notifications, which it
    decides again. Batches that run at the same time each read before the others write, so each may take
    what is left."""
    ledger = Ledger(plan_day, counts_planned=True)
    for cid, n in _day_counters(store, plan_day=plan_day, campaign_ids=budgets, field="planned").items():
        ledger.charge(cid, n, budget=budgets[cid])
    return ledger


def _day_counters(store: Store, *, plan_day: date, campaign_ids: Collection[str],
                  field: Literal["budget_spent", "planned"]) -> dict[str, int]:
    """``field`` of each campaign's ``campaign_stats`` row of ``plan_day`` (counters kept by plan day, see
    :data:`notify_core.delivery.feedback.Counter`): one batch read, absent rows left out."""
    if not campaign_ids:
        return {}
    rows = store.table(tables.CAMPAIGN_STATS).batch_get([(cid, plan_day.isoformat()) for cid in campaign_ids],
                                                       consistent=True)
    return {str(row["pk"]): int(row.get(field) or 0) for row in rows}


def square_with_stored(ledger: Ledger, day_items: dict[str, list[Any]], budgets: dict[str, int]) -> None:
    """Square ``ledger``'s budgets with a chunk's users' stored notifications of the day (see :class:`Ledger`):
    credit back the pending ones when it counts all that was planned, else charge the kept ones (sent, or
    held by the delivery worker) that its counters did not hold."""
    if ledger.counts_planned:
        for items in day_items.values():
            for item in items:
                budget = budgets.get(str(item["campaign_id"]))
                if budget is not None and item.get("status") == PENDING:
                    ledger.credit(str(item["campaign_id"]), 1, budget=budget)
        return
    kept = ((str(item["campaign_id"]), _sent_at(item)) for items in day_items.values() for item in items
            if item.get("status") in DELIVERED_STATES)
    ledger.charge_kept(kept, budgets)


def budget_deltas(frame: pl.DataFrame, existing: dict[str, list[Any]], budgets: dict[str, int], *,
                  day: str) -> dict[tuple[str, str], int]:
    """What a chunk's plan adds to each budgeted campaign's ``planned`` count of ``day``: its notifications
    less its users' pending ones it replaces (``existing``), where that is more than nothing."""
    added: dict[str, int] = {}
    if not frame.is_empty():
        for cid, n in frame.group_by("campaign_id").len().iter_rows():
            if cid in budgets:
                added[cid] = int(n)
    for items in existing.values():
        for item in items:
            cid = str(item["campaign_id"])
            if cid in added and item.get("status") == PENDING:
                added[cid] -= 1
    return {(cid, day): n for cid, n in added.items() if n > 0}


def _sent_at(item: dict[str, Any]) -> datetime | None:
    """When a kept notification was sent (None while in flight, or before the worker's flush says so)."""
    sent_at = item.get("sent_at")
    return parse_utc(str(sent_at)) if sent_at else None


def ledger_of_others(store: Store, user_ids: Sequence[str], *, plan_day: date, campaigns: pl.DataFrame) -> Ledger:
    """The day's shared ledger as the stored plans of ``user_ids`` leave it (their minute loads, the
    campaign budgets they use), so re-planning only some users keeps the capacity and budget rules of a
    full re-plan. One partition read per user: less than a full re-plan reads (:func:`load_state`). The
    re-planned users' own sends are charged as their chunks are read (``spent_before`` None)."""
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
    for cid, budget in budgets_of(campaigns).items():
        ledger.charge(cid, used.get(cid, 0), budget=budget)
    return ledger


BUDGET_RACE_ATTEMPTS = 5  # plans of one batch when concurrent batches keep taking a budget first (then a 409)
PLAN_WINDOW_DAYS = 366  # a plan day more than a year from today is a mistake (or the calendar's edge: 500s)


def check_plan_day(plan_day: date, *, today: date) -> date:
    """``plan_day`` if within :data:`PLAN_WINDOW_DAYS` of ``today``, else ValidationError (a 400, not the
    OverflowError that 0001-01-01 or 9999-12-31 would raise deep in the planner)."""
    from notify_core.errors import ValidationError

    if abs((plan_day - today).days) > PLAN_WINDOW_DAYS:
        low, high = today - timedelta(days=PLAN_WINDOW_DAYS), today + timedelta(days=PLAN_WINDOW_DAYS)
        raise ValidationError(f"plan_day must be within {low.isoformat()}..{high.isoformat()}")
    return plan_day

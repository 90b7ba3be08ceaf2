"""The 24-hour planner: per user, the best notifications of their local day, placed, not filtered.

Vectorised over users with numpy: every per-user quantity is a row of an ``(users, blocks)`` or
``(users, candidates)`` matrix, and the greedy below runs one column (candidate rank) at a time for all
users at once. Memory is O(users x (26 + 4 x candidates)); :func:`plan_chunks` bounds it for 10M users.

What the planner guarantees (the property tests check each one):

1. **Caps.** A user gets at most ``min(daily_cap, 5) - already sent today`` notifications, lowered by
   fatigue (never below one for a user whose cap allows one), and never more than ``max_per_day``.
2. **Windows.** Every notification is at a whole UTC minute inside a local clock hour (the user's own
   zone, DST included) that is not a quiet hour, inside the user's local plan day, and not before ``now``.
3. **Gaps and cooldowns.** Any two notifications of a user (planned, or planned vs already sent, or vs
   planned for the day before or after) are at least ``min_gap_minutes`` apart; a campaign is never
   placed before ``last send + cooldown_hours`` nor within ``cooldown_hours`` before its notification on
   a later day that was planned first, and never twice in one plan day.
4. **Greedy by expected value.** Per user, candidates are taken in descending *base score*
   (relevance x priority weight, ties by campaign id; with exploration on, the relevance becomes the
   bandit's posterior CTR on the relevance scale and one explored candidate may lead: :mod:`.exploration`).
   Each takes the free block with the highest send-time affinity (earliest on ties) and is kept iff its
   expected value there,
   ``base x affinity - fatigue penalty``, is > 0 and the cap is not reached. So a higher-scored candidate
   is never displaced by a lower-scored one except when it had no feasible block (windows, gaps, its
   cooldown) or its campaign's budget ran out; and among kept notifications without a cooldown, the
   higher score got an equal-or-better block, hence an equal-or-higher expected value. When gaps do not
   bind this assignment maximises the user's total expected value (rearrangement inequality); with
   binding gaps it is the greedy approximation, not a proven optimum.
5. **Campaign budgets.** A campaign over its daily budget keeps its highest-EV assignments; users who
   lost one are re-planned without the exhausted campaign (up to ``budget_rounds`` rounds, then the
   excess is dropped).
6. **Minute capacity.** No minute gets more than ``minute_capacity`` notifications. Higher EV keeps its
   minute; the rest move to the nearest minute with room in the same local hour (which keeps every rule
   above); only if that hour is full do they move to another feasible hour of the user, and only if no
   feasible hour has room are they dropped (reported as ``capacity_dropped``).
7. **Determinism.** The same inputs give the same plan: ties break on ids, the minute inside an hour is
   a blake2b hash of the user, and ``notification_id`` = blake2b(user, campaign, plan day, slot), where
   slot is the block index in the user's local day.

Chunks of one plan day share a :class:`Ledger` (minute loads, budgets left); each chunk may use its
proportional share of every campaign's remaining budget, so budgets go to high-EV users of every
chunk, not to whichever chunk runs first (chunks are hash samples of users, so their EV distributions
match).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta

import numpy as np
import numpy.typing as npt
import polars as pl

from notify_core.campaigns import DEFAULT_PRIORITY, MAX_PRIORITY, MIN_PRIORITY
from notify_core.errors import ValidationError
from notify_core.scheduling import affinity as aff_mod
from notify_core.scheduling import exploration as explore
from notify_core.scheduling.candidates import drop_ineligible
from notify_core.scheduling.fatigue import fatigue_of
from notify_core.scheduling.ids import notification_ids_of, user_hashes
from notify_core.scheduling.models import (
    CAMPAIGNS,
    CANDIDATES,
    HISTORY,
    INTERACTIONS,
    PLAN,
    USERS,
    PlanOptions,
    conform,
)
from notify_core.scheduling.timezones import SPAN_MINUTES, DayBlocks, base_of, day_blocks, is_known_zone, to_minutes

I32 = npt.NDArray[np.int32]
I64 = npt.NDArray[np.int64]
F32 = npt.NDArray[np.float32]
B = npt.NDArray[np.bool_]

NO_COOLDOWN = np.iinfo(np.int32).min // 2
NO_LATER = np.iinfo(np.int32).max // 2  # no later notification of the campaign bounds the block's end
UNLIMITED = np.int64(1) << np.int64(62)


class Ledger:
    """What the chunks of one plan day share: deliveries per minute, and campaign budgets left.

    How the budgets square with what the Store already holds for the day, chunk by chunk as the chunks'
    users are read (the caller's :meth:`charge_kept` or :meth:`credit`):

    * ``spent_before``: the budgets already count every notification of the day sent before this instant
      (read from the campaign counters then); a notification a chunk's user keeps (sent or in flight) is
      charged to its campaign unless it was sent before it. None: no send is counted yet, so every kept one
      is charged.
    * ``counts_planned``: the budgets count everything planned for the day, every user's (a batch planned
      apart from the rest); a chunk's users' pending notifications, which the chunk decides again, are
      credited back instead."""

    def __init__(self, plan_day: date, *, spent_before: datetime | None = None, counts_planned: bool = False) -> None:
        self.plan_day = plan_day
        self.base = base_of(plan_day)
        self.loads = np.zeros(SPAN_MINUTES, dtype=np.int64)
        self.budget_left: dict[str, int] = {}
        self.spent_before = spent_before
        self.counts_planned = counts_planned

    def left(self, campaign_id: str, budget: int) -> int:
        """What ``campaign_id`` (``daily_budget`` ``budget``) has left of the day: the whole budget until
        something is charged to it."""
        return self.budget_left.setdefault(campaign_id, max(budget, 0))

    def charge(self, campaign_id: str, n: int, *, budget: int) -> None:
        self.budget_left[campaign_id] = max(self.left(campaign_id, budget) - n, 0)

    def credit(self, campaign_id: str, n: int, *, budget: int) -> None:
        """Give back ``n`` that the budget counted and this run decides again (never past the budget)."""
        self.budget_left[campaign_id] = min(self.left(campaign_id, budget) + n, max(budget, 0))

    def charge_kept(self, kept: Iterable[tuple[str, datetime | None]], budgets: Mapping[str, int]) -> None:
        """Charge the notifications of the day a re-plan keeps, as (campaign_id, sent at: None while in
        flight) pairs, that the budgets do not count yet (:attr:`spent_before`). A re-plan cannot take them
        back, so a campaign's budget for the rest of the day is what they left: a full re-plan at noon used
        to plan a campaign's whole budget again on top of its morning's sends."""
        counted = self.spent_before
        for campaign_id, sent_at in kept:
            budget = budgets.get(campaign_id)
            if budget is not None and (counted is None or sent_at is None or sent_at >= counted):
                self.charge(campaign_id, 1, budget=budget)

    def peak(self) -> int:
        return int(self.loads.max(initial=0))

    def violations(self, capacity: int) -> int:
        return int((self.loads > capacity).sum())


@dataclass(frozen=True, slots=True)
class PlanStats:
    users: int = 0
    users_planned: int = 0  # users who got at least one notification
    # users who could have got one: a free slot left in their day (window after now, under their cap) and
    # at least one eligible candidate, whatever its relevance (the plan's reach check: checks.reaches_users)
    users_reachable: int = 0
    users_below_floor: int = 0  # of those, users whose every eligible candidate had relevance <= 0
    notifications: int = 0
    candidates: int = 0
    budget_dropped: int = 0
    budget_replanned_users: int = 0
    capacity_shifted: int = 0  # moved to another minute of the same hour
    capacity_rehomed: int = 0  # moved to another hour of the user
    capacity_dropped: int = 0
    peak_minute_load: int = 0
    capacity_violations: int = 0
    unknown_timezones: int = 0
    fatigued_users: int = 0
    seconds: float = 0.0
    exploration_slots: int = 0  # notifications that are a Thompson draw (see .exploration)

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)

    def __add__(self, other: PlanStats) -> PlanStats:
        values = {k: v + getattr(other, k) for k, v in asdict(self).items()}
        values["peak_minute_load"] = max(self.peak_minute_load, other.peak_minute_load)
        values["capacity_violations"] = max(self.capacity_violations, other.capacity_violations)
        return PlanStats(**values)


@dataclass(frozen=True, slots=True)
class Plan:
    frame: pl.DataFrame  # models.PLAN
    stats: PlanStats


@dataclass(frozen=True, slots=True)
class ChunkInput:
    users: pl.DataFrame
    candidates: pl.DataFrame
    history: pl.DataFrame | None = None
    interactions: pl.DataFrame | None = None
    scheduled: pl.DataFrame | None = None  # see plan_users


@dataclass(slots=True)
class _Picks:
    user: I64 = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    rank: I64 = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    block: I64 = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    ev: F32 = field(default_factory=lambda: np.zeros(0, dtype=np.float32))

    def take(self, rows: B | I64) -> _Picks:
        """The picks a mask keeps, or the picks at row numbers (in their order)."""
        return _Picks(self.user[rows], self.rank[rows], self.block[rows], self.ev[rows])

    def extend(self, other: _Picks) -> None:
        self.user = np.concatenate([self.user, other.user])
        self.rank = np.concatenate([self.rank, other.rank])
        self.block = np.concatenate([self.block, other.block])
        self.ev = np.concatenate([self.ev, other.ev])


@dataclass(slots=True)
class _Matrices:
    """Per-user rows (users sorted by id) the greedy reads; see the module docstring."""

    allowed: B  # (n, blocks): inside windows, after now, clear of sends' gaps
    affinity: F32  # (n, blocks): lift of the block's local hour
    start: I32  # (n, blocks): first minute
    end: I32  # (n, blocks): last minute
    cap: I32  # (n,)
    penalty: F32  # (n,)
    cand_c: I32  # (n, R): campaign index, -1 = none
    cand_base: F32  # (n, R)
    cand_rel: F32  # (n, R)
    cand_cd: I32  # (n, R): first minute the cooldown allows
    # (n, R): last minute a block may end by, for the cooldown of the campaign's notification on a later day
    # planned first (see plan_users' ``scheduled``); None while no candidate has one (a plan of tomorrow)
    cand_hi: I32 | None = None


def _quiet_mask(hour: npt.NDArray[np.int8], qs: I32, qe: I32) -> B:
    h = hour.astype(np.int16)
    s = qs.astype(np.int16)[:, None]
    e = qe.astype(np.int16)[:, None]
    has = ((qs >= 0) & (qe >= 0) & (qs != qe))[:, None]
    inside = np.where(s < e, (h >= s) & (h < e), (h >= s) | (h < e))
    mask: B = has & inside & (h >= 0)
    return mask


def _hours(users: pl.DataFrame, column: str) -> I32:
    values = users[column].fill_null(-1).to_numpy().astype(np.int32)
    bad = (values < -1) | (values > 23)
    if bad.any():
        raise ValidationError(f"{int(bad.sum())} user(s) have {column} outside 0..23")
    return values


def _minutes_since(series: pl.Series, base: datetime) -> I64:
    """UTC datetimes -> integer minutes since ``base`` (floored)."""
    micros = series.dt.convert_time_zone("UTC").dt.epoch("us").to_numpy().astype(np.int64)
    base_us = int(base.timestamp()) * 1_000_000
    minutes: I64 = np.floor_divide(micros - base_us, 60_000_000)
    return minutes


def _greedy(rows: I64, mx: _Matrices, campaign_open: B, gap: int) -> _Picks:
    """Candidates by rank, all users at once; see guarantee 4 in the module docstring."""
    if rows.size == 0 or mx.cand_c.shape[1] == 0:
        return _Picks()
    avail = mx.allowed[rows]
    aff = mx.affinity[rows]
    start = mx.start[rows]
    end = mx.end[rows]
    cap = mx.cap[rows]
    pen = mx.penalty[rows]
    count = np.zeros(rows.size, dtype=np.int32)
    out_u, out_r, out_b, out_ev = [], [], [], []
    cols = np.arange(avail.shape[1])
    for r in range(mx.cand_c.shape[1]):
        cc = mx.cand_c[rows, r]
        act = (count < cap) & (cc >= 0)
        act[act] = campaign_open[cc[act]]
        idx = np.flatnonzero(act)
        if idx.size == 0:
            if not (count < cap).any():
                break
            continue
        mask = avail[idx]
        cd = mx.cand_cd[rows[idx], r]
        cooling = cd > NO_COOLDOWN
        if cooling.any():
            mask = mask & ((start[idx] >= cd[:, None]) | ~cooling[:, None])
        if mx.cand_hi is not None:
            hi = mx.cand_hi[rows[idx], r]
            capped = hi < NO_LATER
            if capped.any():
                mask = mask & ((end[idx] <= hi[:, None]) | ~capped[:, None])
        score = np.where(mask, aff[idx], -np.inf)
        b = score.argmax(axis=1)
        best = score[np.arange(idx.size), b]
        with np.errstate(invalid="ignore"):  # a relevance that rounds to 0 times -inf (no block) is NaN
            ev = mx.cand_base[rows[idx], r] * best - pen[idx]
        ok = np.isfinite(best) & (ev > 0)
        idx, b, ev = idx[ok], b[ok], ev[ok].astype(np.float32)
        if idx.size == 0:
            continue
        sb = start[idx, b][:, None]
        eb = end[idx, b][:, None]
        conflict = (start[idx] < eb + gap) & (end[idx] > sb - gap) | (cols[None, :] == b[:, None])
        avail[idx] &= ~conflict  # idx is unique within one rank, so the fancy update is exact
        count[idx] += 1
        out_u.append(rows[idx])
        out_r.append(np.full(idx.size, r, dtype=np.int64))
        out_b.append(b.astype(np.int64))
        out_ev.append(ev)
    if not out_u:
        return _Picks()
    return _Picks(np.concatenate(out_u), np.concatenate(out_r), np.concatenate(out_b), np.concatenate(out_ev))


def _rank_within(group: I64, ev: F32, tie: I64) -> I64:
    """0-based rank of each row inside its group, by descending ev then ascending tie."""
    order = np.lexsort((tie, -ev, group))
    g = group[order]
    first = np.r_[0, np.flatnonzero(g[1:] != g[:-1]) + 1]
    starts = np.repeat(first, np.diff(np.r_[first, g.size]))
    rank = np.empty(group.size, dtype=np.int64)
    rank[order] = np.arange(group.size) - starts
    return rank


def _budget_pass(
    mx: _Matrices, users_todo: I64, quota: I64, gap: int, rounds: int,
) -> tuple[_Picks, int, int]:
    """Greedy plus campaign budgets (guarantee 5); returns picks, dropped, re-planned users."""
    accepted = _Picks()
    dropped = 0
    replanned = 0
    todo = users_todo
    for round_ in range(rounds + 1):
        picks = _greedy(todo, mx, quota > 0, gap)
        if picks.user.size == 0:
            break
        pc = mx.cand_c[picks.user, picks.rank].astype(np.int64)
        counts = np.bincount(pc, minlength=quota.size)
        over = counts > quota
        if not over.any():
            accepted.extend(picks)
            quota -= counts
            break
        # Ranked only inside the campaigns over their quota (a rank depends on its own group alone): sorting
        # every pick of a chunk cost ~10 % of planning when a few budgeted campaigns ran out.
        at = np.flatnonzero(over[pc])
        drop = np.zeros(pc.size, dtype=bool)
        drop[at] = _rank_within(pc[at], picks.ev[at], picks.user[at]) >= quota[pc[at]]
        if round_ == rounds:  # last round: drop the excess, no more re-planning
            keep = ~drop
            dropped += int(drop.sum())
        else:
            hit = np.zeros(mx.cap.size, dtype=bool)
            hit[picks.user[drop]] = True
            keep = ~hit[picks.user]
            todo = np.unique(picks.user[drop])
            replanned += int(todo.size)
        kept = picks.take(keep)
        accepted.extend(kept)
        quota -= np.bincount(pc[keep], minlength=quota.size)
        if round_ == rounds:
            break
    return accepted, dropped, replanned


def _capacity_pass(
    mx: _Matrices, picks: _Picks, minute: I64, ledger: Ledger, capacity: int, gap: int,
) -> tuple[_Picks, I64, int, int, int]:
    """Guarantee 6: keep the highest EV in each minute, move the rest (same hour first), drop last."""
    loads = ledger.loads
    if picks.user.size == 0:
        return picks, minute, 0, 0, 0
    rank = _rank_within(minute, picks.ev, picks.user)
    fits = loads[minute] + rank < capacity
    np.add.at(loads, minute[fits], 1)
    overflow = np.flatnonzero(~fits)
    if overflow.size == 0:
        return picks, minute, 0, 0, 0
    minute = minute.copy()
    block = picks.block.copy()
    ev = picks.ev.copy()
    keep = np.ones(picks.user.size, dtype=bool)
    shifted = rehomed = lost = 0
    by_user = np.argsort(picks.user, kind="stable")
    sorted_users = picks.user[by_user]
    for i in overflow[np.lexsort((picks.user[overflow], -picks.ev[overflow]))]:
        u, b = int(picks.user[i]), int(block[i])
        s, e = int(mx.start[u, b]), int(mx.end[u, b])
        free = np.flatnonzero(loads[s : e + 1] < capacity)
        if free.size:
            j = int(free[np.argmin(np.abs(free - (minute[i] - s)))])
            minute[i] = s + j
            loads[s + j] += 1
            shifted += 1
            continue
        # The hour is full: another hour of this user that keeps windows, gaps and the cooldown.
        lo, hi = np.searchsorted(sorted_users, [u, u + 1])
        others = [int(k) for k in by_user[lo:hi] if k != i and keep[k]]
        ok = mx.allowed[u].copy()
        for k in others:
            ob = int(block[k])
            ok &= ~((mx.start[u] < mx.end[u, ob] + gap) & (mx.end[u] > mx.start[u, ob] - gap))
            ok[ob] = False
        cd = int(mx.cand_cd[u, picks.rank[i]])
        if cd > NO_COOLDOWN:
            ok &= mx.start[u] >= cd
        hi = int(mx.cand_hi[u, picks.rank[i]]) if mx.cand_hi is not None else NO_LATER
        if hi < NO_LATER:
            ok &= mx.end[u] <= hi
        placed = False
        for nb in sorted(np.flatnonzero(ok).tolist(), key=lambda x: (-float(mx.affinity[u, x]), x)):
            ns, ne = int(mx.start[u, nb]), int(mx.end[u, nb])
            free = np.flatnonzero(loads[ns : ne + 1] < capacity)
            new_ev = float(mx.cand_base[u, picks.rank[i]] * mx.affinity[u, nb] - mx.penalty[u])
            if free.size and new_ev > 0:
                offset = (minute[i] - s) % (ne - ns + 1)
                j = int(free[np.argmin(np.abs(free - offset))])
                minute[i], block[i], ev[i] = ns + j, nb, new_ev
                loads[ns + j] += 1
                rehomed += 1
                placed = True
                break
        if not placed:
            keep[i] = False
            lost += 1
    moved = _Picks(picks.user, picks.rank, block, ev)
    return moved.take(keep), minute[keep], shifted, rehomed, lost


def _history_frames(
    history: pl.DataFrame, index: pl.DataFrame, campaigns: pl.DataFrame, base: datetime,
) -> pl.DataFrame:
    """History joined to user and campaign indices, with minutes since base (``_planned``: the row is a
    notification not sent yet, from plan_users' ``scheduled``; False when the column is absent)."""
    if history.is_empty():
        return pl.DataFrame(schema={"_u": pl.UInt32, "campaign_id": pl.String, "t": pl.Int64, "cooldown": pl.Int32,
                                    "_planned": pl.Boolean})
    if "_planned" not in history.columns:
        history = history.with_columns(pl.lit(False).alias("_planned"))
    h = history.join(index, on="user_id", how="inner")
    h = h.join(campaigns.select("campaign_id", pl.col("cooldown_hours").fill_null(0).alias("cooldown")),
               on="campaign_id", how="left")
    return h.select("_u", "campaign_id", pl.Series("t", _minutes_since(h["sent_at"], base)),
                    pl.col("cooldown").fill_null(0), "_planned")


def plan_users(
    candidates: pl.DataFrame,
    users: pl.DataFrame,
    campaigns: pl.DataFrame,
    *,
    plan_day: date,
    history: pl.DataFrame | None = None,
    interactions: pl.DataFrame | None = None,
    now: datetime | None = None,
    options: PlanOptions | None = None,
    prior: F32 | None = None,
    ledger: Ledger | None = None,
    budget_share: float | None = None,
    campaign_counts: pl.DataFrame | None = None,
    scheduled: pl.DataFrame | None = None,
) -> Plan:
    """Plan ``users``' local ``plan_day``; see the module docstring for what the plan guarantees.

    ``now``: nothing is placed before it (re-planning during the day); None plans the whole day.
    ``prior``: the population hour distribution (24 floats summing to 1); None = computed from
    ``interactions``. Pass one prior to every chunk of a chunked run. ``ledger``/``budget_share``: see
    :func:`plan_chunks`. ``campaign_counts`` (models.CAMPAIGN_COUNTS): delivered/clicked per campaign, for
    the exploration posterior (:mod:`.exploration`; with ``options.exploration.share`` 0 and no counts the
    plan is exactly the relevance-based one). ``scheduled`` (models.HISTORY): the neighbouring plan days'
    notifications not sent yet; gaps and cooldowns hold against them as against ``history``, in both
    directions, but they are not sends: fatigue does not count them.
    """
    started = time.perf_counter()
    opts = options or PlanOptions()
    ledger = ledger if ledger is not None else Ledger(plan_day)
    if ledger.plan_day != plan_day:
        raise ValidationError(f"ledger is for {ledger.plan_day}, not {plan_day}")
    base = ledger.base
    day = plan_day.isoformat()
    as_of = now if now is not None else datetime.combine(plan_day, datetime.min.time(), tzinfo=UTC)
    if as_of.tzinfo is None:
        raise ValidationError("now must be timezone-aware")

    users = conform(users, USERS, name="users").unique("user_id", keep="first").sort("user_id")
    users = users.filter(pl.col("user_id").is_not_null())
    n = users.height
    known = [z for z in users["timezone"].drop_nulls().unique().to_list() if is_known_zone(z)]
    unknown = int(users.select((~pl.col("timezone").is_in(known) | pl.col("timezone").is_null()).sum()).item())
    users = users.with_columns(
        pl.when(pl.col("timezone").is_in(known)).then(pl.col("timezone")).otherwise(pl.lit("UTC")).alias("timezone"))
    zones = sorted(set(users["timezone"].unique().to_list()))
    blocks: DayBlocks = day_blocks(zones, plan_day)
    tz = users["timezone"].cast(pl.Enum(zones)).to_physical().to_numpy().astype(np.int64) if n else \
        np.zeros(0, dtype=np.int64)
    index = users.select("user_id").with_row_index("_u")
    gap = int(opts.min_gap_minutes)

    start = blocks.start[tz]
    length = blocks.length[tz]
    end = start + length - 1
    hour = blocks.hour[tz]
    allowed = (length > 0) & ~_quiet_mask(hour, _hours(users, "quiet_start_hour"), _hours(users, "quiet_end_hour"))
    if now is not None:
        allowed &= start >= to_minutes(now, base)

    campaigns = conform(campaigns, CAMPAIGNS, name="campaigns").unique("campaign_id", keep="first").sort("campaign_id")
    ncamp = campaigns.height

    # history: already sent today, gaps to those sends, cooldowns, campaigns already sent today
    past = conform(history, HISTORY, name="history")
    ahead = conform(scheduled, HISTORY, name="scheduled")
    both = pl.concat([past.with_columns(pl.lit(False).alias("_planned")),
                      ahead.with_columns(pl.lit(True).alias("_planned"))]) if ahead.height else past
    hist = _history_frames(both, index, campaigns, base)
    sent_today = np.zeros(n, dtype=np.int32)
    cooldowns = pl.DataFrame(schema={"_u": pl.UInt32, "campaign_id": pl.String, "cd": pl.Int64, "hi": pl.Int64,
                                     "today": pl.Boolean})
    if hist.height:
        hu = hist["_u"].to_numpy().astype(np.int64)
        ht = hist["t"].to_numpy()
        today = (ht >= blocks.day_start[tz[hu]]) & (ht < blocks.day_end[tz[hu]])
        # a later day's notification, planned first (a send's time is a send's: it only ever opens a cooldown)
        later = (ht >= blocks.day_end[tz[hu]]) & hist["_planned"].to_numpy()
        sent_today = np.bincount(hu[today], minlength=n).astype(np.int32)
        near = (ht >= blocks.day_start[tz[hu]] - gap) & (ht < blocks.day_end[tz[hu]] + gap)
        near_frame = pl.DataFrame({"u": hu[near], "t": ht[near]}).with_columns(
            pl.int_range(pl.len()).over("u").alias("k"))
        for _k, part in near_frame.partition_by("k", as_dict=True).items():
            pu = part["u"].to_numpy()
            pt = part["t"].to_numpy()[:, None]
            allowed[pu] &= ~((start[pu] < pt + gap) & (end[pu] > pt - gap))
        # A send (or an earlier day's notification) opens the campaign again ``cooldown`` after it; a later
        # day's closes it ``cooldown`` before it (cooldown 0: no bound either way).
        cool = pl.col("cooldown").cast(pl.Int64) * 60
        cooldowns = (hist.with_columns(pl.Series("today", today), pl.Series("later", later))
                     .group_by("_u", "campaign_id")
                     .agg((pl.col("t") + cool).filter(~pl.col("later")).max().alias("cd"),
                          (pl.col("t") - cool).filter(pl.col("later") & (pl.col("cooldown") > 0)).min().alias("hi"),
                          pl.col("today").any()))

    inter = conform(interactions, INTERACTIONS, name="interactions")
    fat = fatigue_of(users, past, inter, as_of=as_of, options=opts.fatigue)
    cap = users["daily_cap"].fill_null(opts.max_per_day).to_numpy().astype(np.int32).clip(0, opts.max_per_day)
    cap_after = np.maximum(np.minimum(cap, 1), cap - fat.cap_reduction)
    cap_eff = np.maximum(cap_after - sent_today, 0).astype(np.int32)

    counts = aff_mod.hour_counts(inter, users, as_of=as_of, lookback_days=opts.affinity_lookback_days)
    pop = prior if prior is not None else aff_mod.population_prior(counts)
    lift = aff_mod.shrunk_lift(counts, np.asarray(pop, dtype=np.float32), strength=opts.affinity_strength)
    del counts
    block_aff = np.take_along_axis(lift, hour.clip(0).astype(np.intp), axis=1)
    del lift

    # candidates -> dense (users, rank) matrices, best base score first
    cands = drop_ineligible(conform(candidates, CANDIDATES, name="candidates").select(list(CANDIDATES)),
                            users=users, campaigns=campaigns, day=plan_day)
    camp_index = campaigns.select(
        "campaign_id", pl.int_range(pl.len(), dtype=pl.Int32).alias("_c"),
        pl.col("priority").fill_null(DEFAULT_PRIORITY).clip(MIN_PRIORITY, MAX_PRIORITY).replace_strict(
            [1, 2, 3, 4, 5], list(opts.priority_weights), return_dtype=pl.Float32).alias("_w"))
    relevant = pl.col("relevance").is_finite() & (pl.col("relevance") > 0)
    lz = (cands.lazy()
         .filter(relevant)
         .join(index.lazy(), on="user_id", how="inner")
         .join(camp_index.lazy(), on="campaign_id", how="inner")
         .with_columns((pl.col("relevance").cast(pl.Float32) * pl.col("_w")).alias("_base")))
    if cooldowns.height:
        lz = (lz.join(cooldowns.lazy(), on=["_u", "campaign_id"], how="left")
             .filter(~pl.col("today").fill_null(False)))
    else:
        lz = lz.with_columns(pl.lit(None, dtype=pl.Int64).alias("cd"), pl.lit(None, dtype=pl.Int64).alias("hi"))
    explorers = np.zeros(n, dtype=bool)
    if explore.is_active(opts.exploration, campaign_counts):  # the expected value from the bandit's posterior
        scored = explore.rescore(
            lz.select("_u", "_c", "_w", "_base", "relevance", "cd", "hi").collect(),
            user_ids=users["user_id"].to_list(),
            campaign_ids=campaigns["campaign_id"].to_list(), caps=cap_eff, counts=campaign_counts,
            plan_day=plan_day, options=opts.exploration)
        lz, explorers = scored.candidates.lazy(), scored.explorers
    c = (lz.select("_u", "_c", "_base", "relevance", "cd", "hi")
         .sort(["_u", "_base", "_c"], descending=[False, True, False])
         .with_columns(pl.int_range(pl.len()).over("_u").alias("_r"))
         .filter(pl.col("_r") < opts.max_candidates)
         .collect())
    n_candidates = c.height
    width = int(c["_r"].max() or 0) + 1 if c.height else 0  # type: ignore[arg-type]
    cu = c["_u"].to_numpy().astype(np.int64)
    cr = c["_r"].to_numpy().astype(np.int64)
    cand_c = np.full((n, width), -1, dtype=np.int32)
    cand_base = np.zeros((n, width), dtype=np.float32)
    cand_rel = np.zeros((n, width), dtype=np.float32)
    cand_cd = np.full((n, width), NO_COOLDOWN, dtype=np.int32)
    cand_c[cu, cr] = c["_c"].to_numpy()
    cand_base[cu, cr] = c["_base"].to_numpy()
    cand_rel[cu, cr] = c["relevance"].to_numpy().astype(np.float32)
    cand_cd[cu, cr] = c["cd"].fill_null(NO_COOLDOWN).to_numpy().astype(np.int32)
    cand_hi = None
    if c["hi"].null_count() < c.height:
        cand_hi = np.full((n, width), NO_LATER, dtype=np.int32)
        cand_hi[cu, cr] = c["hi"].fill_null(NO_LATER).to_numpy().astype(np.int32)
    del c, cu, cr

    has_relevant = cand_c[:, 0] >= 0 if width else np.zeros(n, dtype=bool)
    below_floor = _only_below_floor(cands.filter(~relevant), index, n) & ~has_relevant
    has_room = (cap_eff > 0) & allowed.any(axis=1)

    mx = _Matrices(allowed=allowed, affinity=block_aff, start=start, end=end, cap=cap_eff, penalty=fat.penalty,
                   cand_c=cand_c, cand_base=cand_base, cand_rel=cand_rel, cand_cd=cand_cd, cand_hi=cand_hi)

    # budgets: this chunk's share of what the day has left
    budget = campaigns["daily_budget"].to_list()
    ids = campaigns["campaign_id"].to_list()
    quota = np.empty(ncamp, dtype=np.int64)
    for k, (cid, b) in enumerate(zip(ids, budget, strict=True)):
        if b is None:
            quota[k] = UNLIMITED
            continue
        left = ledger.left(cid, int(b))
        quota[k] = left if budget_share is None else min(left, math.ceil(left * budget_share))
    quota_before = quota.copy()
    todo = np.flatnonzero((cap_eff > 0) & (cand_c[:, 0] >= 0)) if width else np.zeros(0, dtype=np.int64)
    picks, budget_dropped, replanned = _budget_pass(mx, todo.astype(np.int64), quota, gap, opts.budget_rounds)

    # minute inside the block: a stable per-user offset, so users spread evenly over each hour
    hashes = user_hashes(users["user_id"].to_list()) if picks.user.size else np.zeros(n, dtype=np.uint64)
    mix = np.uint64((plan_day.toordinal() * 2654435761) % (1 << 32))
    pu, pb = picks.user, picks.block
    span = (mx.end[pu, pb] - mx.start[pu, pb] + 1).astype(np.uint64)
    offset = ((hashes[pu] >> np.uint64(20)) + mix) % span
    minute = mx.start[pu, pb].astype(np.int64) + offset.astype(np.int64)
    picks, minute, shifted, rehomed, lost = _capacity_pass(mx, picks, minute, ledger, opts.minute_capacity, gap)

    # what the budget actually used (capacity may have dropped some): charge the ledger
    pc = cand_c[picks.user, picks.rank].astype(np.int64)
    used = np.bincount(pc, minlength=ncamp)
    for limited in np.flatnonzero(quota_before < UNLIMITED).tolist():
        cid = ids[limited]
        ledger.budget_left[cid] = max(ledger.budget_left[cid] - int(used[limited]), 0)

    frame = _plan_frame(users, campaigns, picks, minute, mx, day, base)
    touched = np.unique(minute)
    stats = PlanStats(
        users=n, users_planned=int(np.count_nonzero(np.bincount(picks.user, minlength=n))),  # np.unique sorted them
        notifications=int(picks.user.size),
        users_reachable=int((has_room & (has_relevant | below_floor)).sum()),
        users_below_floor=int((has_room & below_floor).sum()),
        candidates=n_candidates, budget_dropped=budget_dropped, budget_replanned_users=replanned,
        capacity_shifted=shifted, capacity_rehomed=rehomed, capacity_dropped=lost,
        peak_minute_load=int(ledger.loads[touched].max(initial=0)),
        capacity_violations=int((ledger.loads[touched] > opts.minute_capacity).sum()),
        unknown_timezones=unknown, fatigued_users=int((fat.ignored > 0).sum()),
        seconds=time.perf_counter() - started,
        exploration_slots=int((explorers[picks.user] & (picks.rank == 0)).sum()),
    )
    return Plan(frame=frame, stats=stats)


def _only_below_floor(below: pl.DataFrame, index: pl.DataFrame, n: int) -> npt.NDArray[np.bool_]:
    """Per user: whether an eligible candidate of theirs was dropped by the relevance floor (``below``: the
    eligible candidates with relevance <= 0 or not finite; normally none, so this costs nothing)."""
    out = np.zeros(n, dtype=bool)
    if below.height:
        out[below.select("user_id").unique().join(index, on="user_id", how="inner")["_u"].to_numpy()] = True
    return out


def _plan_frame(users: pl.DataFrame, campaigns: pl.DataFrame, picks: _Picks, minute: I64, mx: _Matrices,
                day: str, base: datetime) -> pl.DataFrame:
    if picks.user.size == 0:
        return pl.DataFrame(schema=PLAN)
    # In (user_id, send_at) order: users are sorted by id, so their row numbers and the minutes sort the
    # same way, and two integer keys sort in numpy for a fraction of polars' string sort of the frame.
    order = np.lexsort((minute, picks.user))
    picks, minute = picks.take(order), minute[order]
    user_ids = users["user_id"].gather(picks.user)
    campaign_ids = campaigns["campaign_id"].gather(mx.cand_c[picks.user, picks.rank].astype(np.int64))
    base_us = int(base.timestamp()) * 1_000_000
    send_at = pl.Series("send_at", minute * 60_000_000 + base_us).cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
    slots = picks.block.astype(np.int32)
    nids = notification_ids_of(user_ids, campaign_ids, day, pl.Series(slots))
    frame = pl.DataFrame({
        "user_id": user_ids, "campaign_id": campaign_ids, "notification_id": nids,
        "plan_day": pl.Series([day] * picks.user.size, dtype=pl.String), "slot": slots, "send_at": send_at,
        "expected_value": picks.ev.astype(np.float64),
        "relevance": mx.cand_rel[picks.user, picks.rank].astype(np.float64),
        "affinity": mx.affinity[picks.user, picks.block].astype(np.float64),
    }, schema=PLAN)
    return frame


def plan_chunks(
    chunks: Iterable[ChunkInput],
    campaigns: pl.DataFrame,
    *,
    plan_day: date,
    total_users: int,
    now: datetime | None = None,
    options: PlanOptions | None = None,
    prior: F32 | None = None,
    ledger: Ledger | None = None,
    campaign_counts: pl.DataFrame | None = None,
) -> Iterator[Plan]:
    """Plan users chunk by chunk (memory bounded by the chunk), sharing one ledger.

    Each chunk may use ``chunk users / users left`` of every campaign's remaining budget, and every
    minute's remaining capacity first-come (the ledger carries loads across chunks, so the capacity
    bound holds for the whole day). Callers make chunks hash samples of users (e.g. by ``hash(user) %
    chunks``) so each chunk is representative; ``prior`` should be the whole population's.
    """
    ledger = ledger if ledger is not None else Ledger(plan_day)
    left = total_users
    for chunk in chunks:
        share = min(1.0, chunk.users.height / left) if left > 0 else 1.0
        yield plan_users(chunk.candidates, chunk.users, campaigns, plan_day=plan_day, history=chunk.history,
                         interactions=chunk.interactions, now=now, options=options, prior=prior, ledger=ledger,
                         budget_share=share, campaign_counts=campaign_counts, scheduled=chunk.scheduled)
        left -= chunk.users.height


def plan_window(plan_day: date) -> tuple[datetime, datetime]:
    """The UTC instants any user's local ``plan_day`` can touch (UTC-12 .. UTC+14)."""
    start = datetime.combine(plan_day, datetime.min.time(), tzinfo=UTC)
    return start - timedelta(hours=14), start + timedelta(days=1, hours=12)

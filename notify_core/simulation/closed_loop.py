"""A closed-loop simulator: synthetic users answer notifications, through the real plan -> send -> feedback path.

A tool to compare policies, not a promise of live numbers: every number it prints follows from the
response model below, whose constants are assumptions (documented, in :class:`SimOptions`).

**Users and their latent preferences** come from the real purchase data (the Online Retail export, read
with the repo's loader :mod:`notify_core.sources.online_retail`): the ``users`` customers with the most
order lines. A user's true preference for a campaign is

    pref(u, c) = clip(0.8 x cat_share(u, c) + 0.2 x bought(u, c) + N(0, noise), 0, 1)

``cat_share`` = the share of the user's purchase lines in the campaign's category, ``bought`` = 1 if
they bought one of its products. Their **active hours** are the local hours of their purchases.

**What each policy proposes** (the planner then places them; caps, gaps, cooldowns and windows apply):

* ``notify``: the relevance is the same formula on the *first half* of the user's purchases (what a
  recommender trained on the past would know; no noise), with the planner's fatigue rules and the
  campaign bandit (:mod:`notify_core.scheduling.exploration`, ``exploration_share``).
* ``cap_and_drop``: every user gets the most popular campaigns (by buyers) up to the cap; the rest is
  dropped; no fatigue rules (what Braze/Novu-style frequency capping does).
* ``random``: eligible campaigns in a random order per user and day; no fatigue rules.

**Responses** to each delivered notification, with ``n24`` = notifications the user got in the 24 h
before it and ``act(h)`` = the user's purchase-hour share at the local send hour, smoothed:

    p_click = ctr_max x pref x (0.5 + 0.5 x act(h) / max act) / (1 + fatigue_per_notification x n24)
    p_opt_out (if not clicked) = opt_out_base x (1 + n24) x (1 - pref)

A click is a real tracking click (:func:`notify_core.delivery.tracking.track`, a few minutes after the
send) whose event the real consumer writes; an opt-out removes the user from every later plan.

**The loop, per simulated day:** :func:`notify_core.scheduling.service.plan_and_store` plans the local
day (history and interactions from the Store), the real :class:`~notify_core.delivery.worker.DeliveryWorker`
sends through the outbox channel hour by hour under a :class:`~notify_core.clock.ManualClock`, users
answer, the consumer persists the clicks, and the next day's plan reads them (fatigue, affinity, the
bandit's campaign counts). Each policy gets its own Store, log and outbox.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import polars as pl

from notify_core.clock import ManualClock
from notify_core.delivery.channels import Message, OutboxChannel, SendResult
from notify_core.delivery.summary import WorkerOptions
from notify_core.delivery.tracking import TRACKING_PURPOSE, track
from notify_core.delivery.worker import DeliveryWorker
from notify_core.errors import ValidationError
from notify_core.events.consumer import EventConsumer
from notify_core.scheduling.models import CAMPAIGNS, CANDIDATES, USERS, ExplorationOptions, FatigueOptions, PlanOptions
from notify_core.scheduling.service import plan_and_store
from notify_core.security.keyring import ephemeral_keyring
from notify_core.sources.online_retail import SOURCE_TIMEZONE, map_online_retail, read_source
from notify_core.sources.synthetic import generate_campaigns
from notify_core.store import tables
from notify_core.store.sqlite import SqliteStore
from notify_core.stream.local_log import LocalLog

POLICIES = ("notify", "cap_and_drop", "random")
ZONE = SOURCE_TIMEZONE  # the shop's customers are planned in the shop's zone
SHARDS = 1  # one schedules partition per minute: a simulated day is small, and 16 would scan 16x the minutes


@dataclass(frozen=True, slots=True, kw_only=True)
class SimOptions:
    """The simulation's size and the response model's constants (assumptions, see the module docstring)."""

    users: int = 2000
    days: int = 30
    campaigns: int = 40  # the category campaigns plus the most-ordered product campaigns, up to this many
    daily_cap: int = 3  # every user's cap (the cap-and-drop policy's cap too)
    seed: int = 7
    start_day: date = date(2026, 1, 5)  # a Monday; the simulation's own calendar (ManualClock)
    ctr_max: float = 0.35  # click probability for pref 1 at the user's most active hour, unfatigued
    fatigue_per_notification: float = 0.35
    opt_out_base: float = 0.0005
    noise: float = 0.05
    exploration_share: float = 0.1
    worker_concurrency: int = 4

    def __post_init__(self) -> None:
        if self.users < 1 or self.days < 1 or self.campaigns < 2 or not 1 <= self.daily_cap <= 5:
            raise ValidationError("users >= 1, days >= 1, campaigns >= 2 and daily_cap 1..5 are required")


@dataclass(slots=True)
class DayRow:
    day: str
    planned: int = 0
    delivered: int = 0
    failed: int = 0
    clicks: int = 0
    opt_outs: int = 0
    active_users: int = 0

    @property
    def ctr(self) -> float:
        return self.clicks / self.delivered if self.delivered else 0.0


@dataclass(slots=True)
class SimResult:
    policy: str
    days: list[DayRow] = field(default_factory=list)
    seconds: float = 0.0
    opted_out: dict[str, str] = field(default_factory=dict)  # user -> the day they opted out

    def totals(self) -> dict[str, float | int | str]:
        delivered = sum(d.delivered for d in self.days)
        clicks = sum(d.clicks for d in self.days)
        opt_outs = sum(d.opt_outs for d in self.days)
        users = self.days[0].active_users if self.days else 0
        failed = sum(d.failed for d in self.days)
        return {"policy": self.policy, "delivered": delivered, "clicks": clicks,
                "ctr": round(clicks / max(delivered, 1), 4),
                "opt_outs": opt_outs, "opt_out_rate": round(opt_outs / max(users, 1), 4),
                "opt_outs_per_1k_delivered": round(1000 * opt_outs / max(delivered, 1), 3),
                "failed": failed, "failed_rate": round(failed / max(delivered + failed, 1), 4),
                "seconds": round(self.seconds, 1)}

    def as_dict(self) -> dict[str, Any]:
        return {"totals": self.totals(), "days": [{**asdict(d), "ctr": round(d.ctr, 4)} for d in self.days]}


@dataclass(frozen=True, slots=True)
class World:
    """The synthetic population: users, campaigns, true preferences, what Notify knows, active hours."""

    user_ids: list[str]
    campaigns: pl.DataFrame  # models.CAMPAIGNS (+ category)
    pref: np.ndarray[Any, np.dtype[np.float64]]  # (users, campaigns): the truth
    known: np.ndarray[Any, np.dtype[np.float64]]  # (users, campaigns): first-half estimate (Notify's relevance)
    popularity: np.ndarray[Any, np.dtype[np.float64]]  # (campaigns,) buyers, normalised to max 1
    activity: np.ndarray[Any, np.dtype[np.float64]]  # (users, 24) local-hour purchase shares, smoothed


def _unit(*parts: object) -> float:
    return int.from_bytes(hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=8).digest(),
                          "little") / 2.0**64


def build_world(source: Path, *, options: SimOptions) -> World:
    """Users, campaigns and latent preferences from the purchase export (see the module docstring)."""
    tables_ = map_online_retail(read_source(source))
    purchases = tables_.purchases.filter(~pl.col("is_return") & pl.col("user_id").is_not_null())
    products = tables_.products
    campaigns = generate_campaigns(products, tables_.purchases, seed=options.seed)
    cats = campaigns.filter(pl.col("campaign_id").str.starts_with("cat-"))
    others = campaigns.filter(~pl.col("campaign_id").str.starts_with("cat-") & ~pl.col("campaign_id").str.starts_with(
        "bundle-"))
    chosen = pl.concat([cats, others]).head(options.campaigns).with_columns(
        pl.lit(None, dtype=pl.Date).alias("start_date"), pl.lit(None, dtype=pl.Date).alias("end_date"),
        pl.lit(None, dtype=pl.Int64).alias("daily_budget"), pl.lit("active").alias("status"),
        pl.lit([], dtype=pl.List(pl.String)).alias("target_countries")).sort("campaign_id")
    lines = purchases.join(products.select("product_id", "category"), on="product_id", how="left")
    top = (lines.group_by("user_id").len().sort(["len", "user_id"], descending=[True, False])
           .head(options.users)["user_id"].sort().to_list())
    lines = lines.filter(pl.col("user_id").is_in(top))
    median = lines.group_by("user_id").agg(pl.col("ts").median().alias("mid"))
    lines = lines.join(median, on="user_id").with_columns((pl.col("ts") <= pl.col("mid")).alias("early"))
    uidx = {u: i for i, u in enumerate(top)}
    n, m = len(top), chosen.height

    def shares(frame: pl.DataFrame) -> np.ndarray[Any, np.dtype[np.float64]]:
        out = np.zeros((n, m))
        totals = frame.group_by("user_id").len().rename({"len": "total"})
        per_cat = frame.group_by("user_id", "category").len().join(totals, on="user_id")
        cat_share = {(u, c): k / t for u, c, k, t in per_cat.iter_rows()}
        bought = set(frame.select("user_id", "product_id").unique().iter_rows())
        for j, (cat, pids) in enumerate(chosen.select("category", "product_ids").iter_rows()):
            for u, i in uidx.items():
                hit = any((u, p) in bought for p in (pids or []))
                out[i, j] = 0.8 * cat_share.get((u, cat), 0.0) + 0.2 * hit
        return out

    rng = np.random.default_rng(options.seed)
    pref = np.clip(shares(lines) + rng.normal(0, options.noise, (n, m)), 0.0, 1.0)
    known = shares(lines.filter(pl.col("early")))
    buyers = dict(purchases.group_by("product_id").agg(pl.col("user_id").n_unique()).iter_rows())  # all customers
    pop = np.array([sum(buyers.get(p, 0) for p in (pids or [])) for pids in chosen["product_ids"].to_list()],
                   dtype=np.float64)
    pop = pop / max(pop.max(), 1.0)
    hours = lines.select("user_id", pl.col("ts").dt.convert_time_zone(ZONE).dt.hour().alias("h"))
    activity = np.full((n, 24), 0.2)  # smoothing: every hour is a little active
    for u, h, k in hours.group_by("user_id", "h").len().iter_rows():
        activity[uidx[u], h] += k
    activity /= activity.sum(axis=1, keepdims=True)
    return World(user_ids=top, campaigns=chosen, pref=pref, known=known, popularity=pop, activity=activity)


class _Recording:
    """The outbox channel, keeping each delivered message for the simulated users to answer."""

    def __init__(self, inner: OutboxChannel) -> None:
        self.inner = inner
        self.name = inner.name
        self.messages: list[Message] = []

    def send(self, message: Message, *, idempotency_key: str) -> SendResult:
        result = self.inner.send(message, idempotency_key=idempotency_key)
        if result.ok:
            self.messages.append(message)
        return result

    def close(self) -> None:
        self.inner.close()


def _candidates(world: World, policy: str, active: Sequence[int], day: date) -> pl.DataFrame:
    ids = world.user_ids
    cids = world.campaigns["campaign_id"].to_list()
    rows: list[tuple[str, str, float]] = []
    for i in active:
        for j, cid in enumerate(cids):
            if policy == "notify":
                score = float(world.known[i, j])
            elif policy == "cap_and_drop":
                score = float(world.popularity[j])
            else:
                score = _unit("random", ids[i], cid, day)
            if score > 0:
                rows.append((ids[i], cid, max(score, 1e-6)))
    return pl.DataFrame(rows, schema=CANDIDATES, orient="row")


def _plan_options(policy: str, options: SimOptions) -> PlanOptions:
    if policy == "notify":
        return PlanOptions(exploration=ExplorationOptions(share=options.exploration_share))
    no_fatigue = FatigueOptions(max_cap_reduction=0, penalty_per_ignore=0.0)
    return PlanOptions(fatigue=no_fatigue)


def run_policy(world: World, policy: str, *, workdir: Path, options: SimOptions,
               progress: Callable[[str], None] | None = None) -> SimResult:
    """``options.days`` simulated days of one policy through the real planner, worker and feedback loop."""
    if policy not in POLICIES:
        raise ValidationError(f"unknown policy {policy!r}; one of {POLICIES}")
    started = time.perf_counter()
    folder = workdir / policy
    if folder.exists() and any(folder.iterdir()):
        # an earlier (or killed) run's Store would leak its history into this one's plans
        raise ValidationError(f"{folder} holds an earlier simulation; give an empty --workdir")
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    start = datetime.combine(options.start_day, datetime.min.time(), tzinfo=UTC) - timedelta(hours=2)
    clock = ManualClock(start)
    click_clock = ManualClock(start)  # stamps the tracking events at each click's own time
    store = SqliteStore(folder / "store.sqlite", clock=clock)
    log = LocalLog(folder / "log.sqlite", poll_interval=0.002)
    keys = ephemeral_keyring(TRACKING_PURPOSE, now=start)
    channel = _Recording(OutboxChannel(folder / "outbox" / "outbox.jsonl", clock=clock))
    worker = DeliveryWorker(store, channel, public_base_url="https://sim.invalid", clock=clock, tracking_keys=keys,
                            # delivered hour by hour (below): each send up to an hour late by this clock is on time
                            options=WorkerOptions(concurrency=options.worker_concurrency, lookback_minutes=61,
                                                  max_late_s=61 * 60.0, heartbeat_s=0, prefetch_s=0, shards=SHARDS))
    consumer = EventConsumer(stream=log, store=store, landing=None, clock=click_clock, group="sim", max_batch=5000)
    rng = np.random.default_rng([options.seed, POLICIES.index(policy)])
    ids = world.user_ids
    index = {u: i for i, u in enumerate(ids)}
    cids = world.campaigns["campaign_id"].to_list()
    cindex = {c: j for j, c in enumerate(cids)}
    store.table(tables.USERS).batch_put({"pk": u, "sk": tables.PROFILE_SK, "user_id": u, "first_name": "Customer",
                                         "timezone": ZONE} for u in ids)
    store.table(tables.CAMPAIGNS).batch_put({**r, "pk": r["campaign_id"], "sk": tables.CAMPAIGN_SK,
                                             "start_date": None, "end_date": None}
                                            for r in world.campaigns.drop("product_ids", "target_countries",
                                                                          strict=False).to_dicts())
    opted_out = np.zeros(len(ids), dtype=bool)
    recent: list[list[float]] = [[] for _ in ids]  # delivery times (epoch s) per user
    zone = ZoneInfo(ZONE)
    result = SimResult(policy)
    plan_opts = _plan_options(policy, options)
    camps = world.campaigns.select(*CAMPAIGNS, "category")
    try:
        for d in range(options.days):
            day = options.start_day + timedelta(days=d)
            active = np.flatnonzero(~opted_out).tolist()
            row = DayRow(day.isoformat(), active_users=len(active))
            users = pl.DataFrame([{"user_id": ids[i], "timezone": ZONE, "daily_cap": options.daily_cap,
                                   "quiet_start_hour": None, "quiet_end_hour": None} for i in active], schema=USERS)
            day_start = datetime.combine(day, datetime.min.time(), tzinfo=zone).astimezone(UTC)
            day_end = datetime.combine(day + timedelta(days=1), datetime.min.time(), tzinfo=zone).astimezone(UTC)
            # The clock only moves forward: the worker marks passed minutes done, so the plan is written
            # before any minute of its day has been scanned, and the last step stops at 23:59 local.
            clock.set(day_start - timedelta(seconds=30))
            cands = _candidates(world, policy, active, day)
            run = plan_and_store(store, users=users, campaigns=camps, candidates=cands, plan_day=day, options=plan_opts,
                                 shards=SHARDS)
            row.planned = run.stats.notifications
            step = day_start
            while step < day_end - timedelta(minutes=1):  # deliver hour by hour through the local day
                step = min(step + timedelta(hours=1), day_end - timedelta(minutes=1))
                clock.set(step)
                summary = worker.run_until_idle()
                row.failed += summary.dead_lettered
            messages, channel.messages = channel.messages, []
            row.delivered = len(messages)
            for msg in sorted(messages, key=lambda x: (x.send_at, x.notification_id)):
                i, j = index[msg.user_id], cindex[msg.campaign_id]
                sent = datetime.fromisoformat(msg.send_at.replace("Z", "+00:00"))
                ts = sent.timestamp()
                n24 = sum(1 for t in recent[i] if ts - 86400 <= t < ts)
                recent[i] = [t for t in recent[i] if t >= ts - 86400] + [ts]
                act = world.activity[i]
                tod = 0.5 + 0.5 * act[sent.astimezone(zone).hour] / act.max()
                p_click = options.ctr_max * world.pref[i, j] * tod / (1 + options.fatigue_per_notification * n24)
                if rng.random() < p_click:
                    click_clock.set(ts + 60 * (1 + int(rng.integers(0, 20))))
                    token = msg.link.rsplit("/t/", 1)[1]
                    track(store, log, token=token, kind="click", keys=keys, clock=click_clock)
                    row.clicks += 1
                elif not opted_out[i] and rng.random() < options.opt_out_base * (1 + n24) * (1 - world.pref[i, j]):
                    opted_out[i] = True
                    result.opted_out[msg.user_id] = row.day
                    row.opt_outs += 1
            while True:  # the consumer writes the click events the next plan reads
                out = consumer.run_once()
                if out is None or out.persisted == 0:
                    break
            result.days.append(row)
            if progress is not None:
                progress(f"{policy} {row.day}: planned {row.planned} delivered {row.delivered} clicks {row.clicks} "
                         f"ctr {row.ctr:.3f} opt-outs {row.opt_outs}")
    finally:
        worker.close()
        consumer.close()
        channel.close()
        log.close()
        store.close()
    result.seconds = time.perf_counter() - started
    return result


def simulate(source: Path, *, workdir: Path, options: SimOptions, policies: Sequence[str] = POLICIES,
             progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Every policy on the same world; the JSON-ready report (options, totals, per-day rows)."""
    world = build_world(source, options=options)
    results = [run_policy(world, p, workdir=workdir, options=options, progress=progress) for p in policies]
    opts = {k: (v.isoformat() if isinstance(v, date) else v) for k, v in asdict(options).items()}
    return {"options": opts, "users": len(world.user_ids), "campaigns": world.campaigns.height,
            "policies": {r.policy: r.as_dict() for r in results}}


def markdown_table(report: dict[str, Any]) -> str:
    """The totals as a Markdown table (CTR, opt-outs, failures per policy)."""
    lines = ["| policy | delivered | clicks | CTR | opt-outs | opt-out rate (users) | opt-outs / 1k sent | failed |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, res in report["policies"].items():
        t = res["totals"]
        lines.append(f"| {name} | {t['delivered']:,} | {t['clicks']:,} | {100 * t['ctr']:.2f} % | {t['opt_outs']} | "
                     f"{100 * t['opt_out_rate']:.2f} % | {t['opt_outs_per_1k_delivered']:.2f} | {t['failed']} |")
    return "\n".join(lines)


def write_report(report: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")

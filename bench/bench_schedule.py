"""Scheduling benchmark: the planner at 1M and 10M users, and 1M end to end (ANN candidates + plan + Store).

    .venv/bin/python -m bench.bench_schedule            # 1M planning (x3), 10M chunked, 1M end to end
    .venv/bin/python -m bench.bench_schedule --quick    # 100k planning, 1M chunked, 100k end to end

Synthetic, seeded data: users in a realistic time-zone mix (half-hour and 45-minute offsets, both
hemispheres' DST), caps 1..5, quiet hours mostly 22-08; 1,000 campaigns with priorities, cooldowns and
a few budgets; 20 candidates per user; ~2 engagement events per user (evening-heavy) for affinity and
0.3 sends per user yesterday (cooldowns, fatigue). The plan day is 2027-03-28, an EU DST change.

End to end: user and campaign vectors (384-d, clustered) -> the campaign ANN index
(notify_core.recommend.index.build_index, the recommender's builder) -> top-20 per user by batch
search -> plan -> SQLite Store (plans + schedules tables, through scheduling.store.write_plans, the
same code the asset and Lambda use). The recommender's repeat-purchase signal is not in it (its batch
API did not exist yet). The machine has 2 cores shared with other work: timings are medians of
repeats where repeated, and noisy.
"""

from __future__ import annotations

import argparse
import gc
import resource
import shutil
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from bench.common import median, report
from notify_core.scheduling import ChunkInput, Ledger, PlanOptions, plan_chunks, plan_users
from notify_core.scheduling.affinity import population_prior
from notify_core.scheduling.models import CAMPAIGNS, CANDIDATES, HISTORY, INTERACTIONS, USERS

PLAN_DAY = date(2027, 3, 28)  # an EU DST change, in the future (items carry a TTL a few days out)
ZONES = [  # (zone, weight)
    ("Europe/London", 14), ("Europe/Berlin", 12), ("Europe/Paris", 8), ("America/New_York", 12),
    ("America/Chicago", 6), ("America/Los_Angeles", 7), ("America/Sao_Paulo", 4), ("Asia/Kolkata", 8),
    ("Asia/Tokyo", 5), ("Asia/Shanghai", 5), ("Australia/Sydney", 3), ("Australia/Adelaide", 1),
    ("Asia/Kathmandu", 1), ("Africa/Lagos", 3), ("Asia/Dubai", 2), ("America/St_Johns", 1), ("UTC", 2),
    ("Pacific/Auckland", 1), ("Asia/Singapore", 3), ("Europe/Madrid", 2),
]
N_CAMPAIGNS = 1_000
K = 20


def rss_mb() -> float:
    """Peak resident set of this process so far (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def campaigns_frame(seed: int = 1) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    budgets = np.where(rng.random(N_CAMPAIGNS) < 0.05, rng.integers(1_000, 20_000, N_CAMPAIGNS), -1)
    return pl.DataFrame({
        "campaign_id": [f"c{i:05d}" for i in range(N_CAMPAIGNS)],
        "priority": rng.integers(1, 6, N_CAMPAIGNS).astype(np.int32),
        "cooldown_hours": rng.choice([0, 24, 48, 72], N_CAMPAIGNS).astype(np.int32),
        "daily_budget": pl.Series(budgets).replace(-1, None).cast(pl.Int64),
    }, schema=CAMPAIGNS)


def users_frame(lo: int, hi: int, seed: int) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    n = hi - lo
    names = [z for z, _ in ZONES]
    weights = np.array([w for _, w in ZONES], dtype=float)
    tz = rng.choice(len(names), n, p=weights / weights.sum())
    quiet = rng.choice(4, n, p=[0.6, 0.2, 0.1, 0.1])  # 22-8, 23-7, 21-9, none
    qs = np.array([22, 23, 21, -1])[quiet]
    qe = np.array([8, 7, 9, -1])[quiet]
    return pl.DataFrame({
        "user_id": [f"u{i:09d}" for i in range(lo, hi)],
        "timezone": pl.Series(names).gather(tz),
        "daily_cap": rng.integers(1, 6, n).astype(np.int32),
        "quiet_start_hour": pl.Series(qs).replace(-1, None).cast(pl.Int32),
        "quiet_end_hour": pl.Series(qe).replace(-1, None).cast(pl.Int32),
    }, schema=USERS)


def candidates_frame(users: pl.DataFrame, seed: int) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    n = users.height
    camp = rng.integers(0, N_CAMPAIGNS, (n, K))
    rel = np.clip(rng.beta(2, 5, (n, K)), 0.01, 1.0)
    cids = pl.Series([f"c{i:05d}" for i in range(N_CAMPAIGNS)])
    frame = pl.DataFrame({
        "user_id": users["user_id"].gather(np.repeat(np.arange(n), K)),
        "campaign_id": cids.gather(camp.ravel()),
        "relevance": rel.ravel(),
    }, schema=CANDIDATES)
    return frame.unique(["user_id", "campaign_id"], keep="first", maintain_order=True)


def interactions_frame(users: pl.DataFrame, seed: int) -> pl.DataFrame:
    """~2 events per user over the last 60 days, concentrated in local evenings (approximated in UTC)."""
    rng = np.random.default_rng(seed)
    n_events = users.height * 2
    who = rng.integers(0, users.height, n_events)
    hour = np.where(rng.random(n_events) < 0.6, rng.normal(19, 2, n_events), rng.uniform(0, 24, n_events)) % 24
    day = rng.integers(1, 60, n_events)
    base = datetime.combine(PLAN_DAY, datetime.min.time(), tzinfo=UTC)
    micros = int(base.timestamp() * 1e6) - day * 86_400_000_000 + (hour * 3_600_000_000).astype(np.int64)
    types = pl.Series(["click", "notification_open", "campaign_view"]).gather(rng.integers(0, 3, n_events))
    return pl.DataFrame({
        "user_id": users["user_id"].gather(who),
        "ts": pl.Series(micros).cast(pl.Datetime("us")).dt.replace_time_zone("UTC"),
        "type": types,
    }, schema=INTERACTIONS)


def history_frame(users: pl.DataFrame, seed: int) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    m = int(users.height * 0.3)
    who = rng.integers(0, users.height, m)
    sent = datetime.combine(PLAN_DAY - timedelta(days=1), datetime.min.time(), tzinfo=UTC)
    micros = int(sent.timestamp() * 1e6) + rng.integers(0, 86_400, m).astype(np.int64) * 1_000_000
    return pl.DataFrame({
        "user_id": users["user_id"].gather(who),
        "campaign_id": pl.Series([f"c{i:05d}" for i in range(N_CAMPAIGNS)]).gather(rng.integers(0, N_CAMPAIGNS, m)),
        "sent_at": pl.Series(micros).cast(pl.Datetime("us")).dt.replace_time_zone("UTC"),
        "interacted": rng.random(m) < 0.2,
    }, schema=HISTORY)


def chunk(lo: int, hi: int, seed: int) -> ChunkInput:
    users = users_frame(lo, hi, seed)
    return ChunkInput(users=users, candidates=candidates_frame(users, seed + 1),
                      history=history_frame(users, seed + 2), interactions=interactions_frame(users, seed + 3))


def options(n_users: int) -> PlanOptions:
    # ~3 per user spread over the day: a capacity that binds at the evening peak of the biggest zones
    return PlanOptions(minute_capacity=max(50, n_users // 250))


def bench_planning(n: int, repeats: int) -> dict[str, Any]:
    data = chunk(0, n, 11)
    camps = campaigns_frame()
    prior = population_prior(np.ones((1, 24), dtype=np.float32))
    walls, cpus, stats = [], [], None
    for _ in range(repeats):
        gc.collect()
        c0, t0 = cpu_s(), time.perf_counter()
        plan = plan_users(data.candidates, data.users, camps, plan_day=PLAN_DAY, history=data.history,
                          interactions=data.interactions, options=options(n), prior=None)
        walls.append(time.perf_counter() - t0)
        cpus.append(cpu_s() - c0)
        stats = plan.stats
    del prior
    assert stats is not None
    wall, cpu = median(walls), median(cpus)
    return {"users": n, "wall_s": wall, "walls": walls, "cpu_s": cpu, "users_per_s": n / wall,
            "users_per_core_s": n / cpu, "notifications": stats.notifications, "stats": stats.as_dict(),
            "peak_rss_mb": rss_mb()}


def bench_chunked(n: int, chunk_size: int) -> dict[str, Any]:
    camps = campaigns_frame()
    ledger = Ledger(PLAN_DAY)
    bounds = [(lo, min(lo + chunk_size, n)) for lo in range(0, n, chunk_size)]
    gen_s = 0.0
    plan_s = 0.0
    notifications = 0
    cpu0 = cpu_s()
    t0 = time.perf_counter()

    def chunks() -> Any:
        nonlocal gen_s
        for k, (lo, hi) in enumerate(bounds):
            g = time.perf_counter()
            c = chunk(lo, hi, 100 + k)
            gen_s += time.perf_counter() - g
            yield c

    violations = 0
    for plan in plan_chunks(chunks(), camps, plan_day=PLAN_DAY, total_users=n, options=options(n), ledger=ledger):
        plan_s += plan.stats.seconds
        notifications += plan.stats.notifications
        violations += plan.stats.capacity_violations
        del plan
        gc.collect()
    wall = time.perf_counter() - t0
    cpu = cpu_s() - cpu0
    return {"users": n, "chunk": chunk_size, "wall_s": wall, "generate_s": gen_s, "plan_s": plan_s,
            "plan_users_per_s": n / plan_s, "notifications": notifications, "peak_minute_load": ledger.peak(),
            "capacity_violations": ledger.violations(options(n).minute_capacity), "cpu_s": cpu,
            "peak_rss_mb": rss_mb()}


def bench_end_to_end(n: int, workdir: Path) -> dict[str, Any]:
    from notify_core.recommend.index import build_index
    from notify_core.scheduling.store import write_plans
    from notify_core.store.sqlite import SqliteStore

    rng = np.random.default_rng(5)
    dim = 384
    centres = rng.normal(size=(64, dim)).astype(np.float32)
    camp_vecs = centres[rng.integers(0, 64, N_CAMPAIGNS)] + 0.5 * rng.normal(size=(N_CAMPAIGNS, dim)).astype(np.float32)
    camp_ids = [f"c{i:05d}" for i in range(N_CAMPAIGNS)]
    phases: dict[str, float] = {}
    t0 = time.perf_counter()
    index = build_index(camp_ids, camp_vecs)
    phases["index_build_s"] = time.perf_counter() - t0

    users = users_frame(0, n, 21)
    t0 = time.perf_counter()
    parts = []
    for lo in range(0, n, 100_000):
        hi = min(lo + 100_000, n)
        q = centres[rng.integers(0, 64, hi - lo)] + np.float32(0.7) * rng.standard_normal((hi - lo, dim),
                                                                                         dtype=np.float32)
        res = index.search(q, K, threads=0)
        names = pl.Series([*camp_ids, ""])  # row -1 (a short answer) -> ""
        parts.append(pl.DataFrame({
            "user_id": users["user_id"].slice(lo, hi - lo).gather(np.repeat(np.arange(hi - lo), K)),
            "campaign_id": names.gather(res.rows.ravel() % (len(camp_ids) + 1)),
            "relevance": res.similarities.ravel().astype(np.float64),
        }, schema=CANDIDATES).filter(pl.col("campaign_id") != ""))
    cands = pl.concat(parts)
    phases["candidates_ann_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    plan = plan_users(cands, users, campaigns_frame(), plan_day=PLAN_DAY, options=options(n))
    phases["plan_s"] = time.perf_counter() - t0

    store = SqliteStore(workdir / "store.sqlite")
    t0 = time.perf_counter()
    summary = write_plans(store, plan.frame, user_ids=users["user_id"].to_list(), plan_day=PLAN_DAY.isoformat())
    phases["store_write_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    again = write_plans(store, plan.frame, user_ids=users["user_id"].to_list(), plan_day=PLAN_DAY.isoformat())
    phases["replan_same_s"] = time.perf_counter() - t0
    store.close()
    total = phases["candidates_ann_s"] + phases["plan_s"] + phases["store_write_s"]
    return {"users": n, **phases, "end_to_end_s": total, "notifications": plan.stats.notifications,
            "store": summary.as_dict(), "replan_written": again.written, "peak_rss_mb": rss_mb()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", choices=["planning", "chunked", "e2e"], default=None)
    args = parser.parse_args()
    n_plan, n_big, n_e2e = (100_000, 1_000_000, 100_000) if args.quick else (1_000_000, 10_000_000, 1_000_000)
    results: dict[str, Any] = {}
    rows: list[list[Any]] = []
    if args.only in (None, "planning"):
        p = results["planning"] = bench_planning(n_plan, 3)
        rows.append([f"plan {n_plan:,} users (median of 3)", p["wall_s"], "<= 30 s" if n_plan == 1_000_000 else "",
                     f"{p['users_per_s']:,.0f} users/s; {p['users_per_core_s']:,.0f} users/core-s; "
                     f"{p['notifications']:,} notifications"])
    if args.only in (None, "chunked"):
        c = results["chunked"] = bench_chunked(n_big, 500_000)
        rows.append([f"plan {n_big:,} users in 500k chunks", c["plan_s"], "<= 420 s" if n_big == 10_000_000 else "",
                     f"peak RSS {c['peak_rss_mb']:,.0f} MB; {c['notifications']:,} notifications; "
                     f"peak minute {c['peak_minute_load']:,}; violations {c['capacity_violations']}; "
                     f"(+{c['generate_s']:.0f} s generating data)"])
    if args.only in (None, "e2e"):
        workdir = Path(tempfile.mkdtemp(prefix="bench_schedule_"))
        try:
            e = results["end_to_end"] = bench_end_to_end(n_e2e, workdir)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        rows.append([f"end to end {n_e2e:,} users", e["end_to_end_s"], "<= 180 s" if n_e2e == 1_000_000 else "",
                     f"ANN {e['candidates_ann_s']:.1f} s + plan {e['plan_s']:.1f} s + store {e['store_write_s']:.1f} s;"
                     f" re-plan same inputs writes {e['replan_written']} ({e['replan_same_s']:.1f} s)"])
    fleet = ""
    if "planning" in results:
        per_core = results["planning"]["users_per_core_s"]
        fleet = f"10M users in 60 s need {10_000_000 / per_core / 60:.1f} cores of planning"
        rows.append(["users per core-second (planning)", per_core, "", fleet])
    if args.only is not None:  # keep the other parts of the last full run
        import json

        from bench.common import RESULTS

        previous = RESULTS / "schedule.json"
        if previous.exists():
            old = json.loads(previous.read_text())
            results = {**old.get("results", {}), **results}
            rows = [r for r in old.get("rows", []) if not any(str(r[0]).startswith(p) for p in (
                {"e2e": "end to end", "planning": "plan 1", "chunked": "plan 10"}[args.only],))] + rows
    report("schedule", "Scheduling benchmark (2 shared cores; noisy)",
           ["measure", "seconds / value", "target", "notes"], rows, {"results": results, "quick": args.quick})


if __name__ == "__main__":
    main()

"""Scheduling benchmark: the planner at 1M users, and 10M users end to end (ANN candidates + Store state +
plan + Store writes) through the real path, service.plan_and_store, with its limits measured beside it.

    .venv/bin/python -m bench.bench_schedule              # 1M planning (x3) + 10M end to end (~20-40 min here)
    .venv/bin/python -m bench.bench_schedule --only e2e   # the 10M end to end and its limits only
    .venv/bin/python -m bench.bench_schedule --quick      # 100k planning, 300k end to end in 100k chunks (~2 min)
    options: --users N, --chunk N (users per chunk, 500k), --no-pipeline, --only chunked (planner-only 10M)

Synthetic, seeded data: users in a realistic time-zone mix (half-hour and 45-minute offsets, both
hemispheres' DST), caps 1..5, quiet hours mostly 22-08; 1,000 campaigns with priorities, cooldowns and
a few budgets; 20 candidates per user; ~2 engagement events per user (evening-heavy) for affinity and
0.3 sends per user yesterday (cooldowns, fatigue). The plan day is 2027-03-28, an EU DST change.

End to end: campaign vectors (384-d, clustered) -> the campaign ANN index (notify_core.recommend.index.
build_index, the recommender's builder) -> per chunk of users: top-20 by batch search (a CandidateSource),
load_state, plan, write_plans (bulk frames into a SQLite Store, pipelined with the next chunk). Vector
generation is timed apart and not counted. Limits beside it, on one chunk in the same run: raw SQLite
executemany of the same rows, numpy top-5 on the same candidate matrix, exact matmul top-20 on the same
vectors. The machine has 2 cores shared with other work: read figures beside the load and the ratios.
"""

from __future__ import annotations

import argparse
import gc
import resource
import shutil
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from bench.common import RESULTS, against_limit, median, report
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


DIM = 384
SEARCH_BATCH = 100_000  # users per ANN search call (bounds the query matrix: 100k x 384 f32 = 154 MB)


def _vectors(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Campaign vectors (1,000 x 384, 64 clusters), the cluster centres, and a pool of noise rows that
    user vectors are drawn from (drawing 10M x 384 fresh normals would cost more than the ANN search)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(64, DIM)).astype(np.float32)
    camp_vecs = centres[rng.integers(0, 64, N_CAMPAIGNS)] + 0.5 * rng.normal(size=(N_CAMPAIGNS, DIM)).astype(np.float32)
    pool = rng.standard_normal((50_000, DIM), dtype=np.float32) * np.float32(0.7)
    return camp_vecs, centres, pool


def _user_vectors(lo: int, hi: int, centres: np.ndarray, pool: np.ndarray) -> np.ndarray:
    """Users lo..hi's vectors, the same whichever chunk asks (seeded by position)."""
    rng = np.random.default_rng(1_000_003 + lo)
    return centres[rng.integers(0, 64, hi - lo)] + pool[rng.integers(0, len(pool), hi - lo)] + \
        np.float32(0.3) * pool[rng.integers(0, len(pool), hi - lo)]


def bench_end_to_end(n: int, workdir: Path, *, chunk_users: int, pipeline: bool = False,
                     switch_interval: float | None = None, writer_process: bool = True) -> dict[str, Any]:
    """``n`` users through the real path: service.plan_and_store (the asset's and the Lambda's), with the
    candidates of each chunk from one batch ANN search of the campaign index (build_index, the
    recommender's builder), the Store state read per chunk (load_state) and each chunk's plan written
    (write_plans: bulk frames on a fresh day) into a SQLite Store, before the next chunk is planned."""
    from notify_core.recommend.index import build_index
    from notify_core.scheduling.service import PIPELINE_SWITCH_INTERVAL_S, plan_and_store
    from notify_core.store.sqlite import SqliteStore

    camp_vecs, centres, pool = _vectors(5)
    camp_ids = [f"c{i:05d}" for i in range(N_CAMPAIGNS)]
    names = pl.Series([*camp_ids, ""])  # row -1 (a short answer) -> ""
    t0 = time.perf_counter()
    index = build_index(camp_ids, camp_vecs)
    index_s = time.perf_counter() - t0
    gen_s = 0.0
    ann_s = 0.0

    def candidates(ids: list[str]) -> pl.DataFrame:
        nonlocal gen_s, ann_s
        parts = []
        first = int(ids[0][1:])  # u000000123 -> 123; the bench's users are contiguous
        for lo in range(0, len(ids), SEARCH_BATCH):
            hi = min(lo + SEARCH_BATCH, len(ids))
            g = time.perf_counter()
            q = _user_vectors(first + lo, first + hi, centres, pool)
            a = time.perf_counter()
            gen_s += a - g
            res = index.search(q, K, threads=0)
            parts.append(pl.DataFrame({
                "user_id": pl.Series(ids[lo:hi]).gather(np.repeat(np.arange(hi - lo), K)),
                "campaign_id": names.gather(res.rows.ravel() % (len(camp_ids) + 1)),
                "relevance": res.similarities.ravel().astype(np.float64),
            }, schema=CANDIDATES).filter(pl.col("campaign_id") != ""))
            ann_s += time.perf_counter() - a
        return pl.concat(parts)

    users = users_frame(0, n, 21)
    store = SqliteStore(workdir / "store.sqlite")
    cpu0 = cpu_s()
    t0 = time.perf_counter()
    marks: list[dict[str, float]] = []

    def progress(done: int, total: int) -> None:
        """A line and a JSON file per written chunk: a long run that is stopped still leaves its figures."""
        import json
        import os

        mark = {"users_written": done, "elapsed_s": time.perf_counter() - t0 - gen_s, "cpu_s": cpu_s() - cpu0,
                "peak_rss_mb": rss_mb(), "load1": os.getloadavg()[0]}
        marks.append(mark)
        print(f"  {done:>11,} / {total:,} users written, {mark['elapsed_s']:7.1f} s, "
              f"RSS {mark['peak_rss_mb']:,.0f} MB, load {mark['load1']:.1f}", flush=True)
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / f"schedule_progress_{n}.json").write_text(json.dumps(marks, indent=1))

    handover: dict[str, Any] = {} if switch_interval is None else {"switch_interval_s": switch_interval or None}
    run = plan_and_store(store, users=users, campaigns=campaigns_frame(), candidates=candidates, plan_day=PLAN_DAY,
                         options=options(n), chunk_users=chunk_users, pipeline=pipeline, progress=progress,
                         writer_process=writer_process, **handover)
    wall = time.perf_counter() - t0
    cpu = cpu_s() - cpu0
    if run.writer == "process":  # its CPU is not this process's: add what it reported per chunk
        cpu += run.cpu_seconds.get("write", 0.0)
    store.close()
    phases = {k: round(v, 3) for k, v in run.seconds.items()}
    phases["candidates"] = round(phases["candidates"] - gen_s, 3)  # the synthetic vectors are not the path's
    busy = sum(phases.values())
    thread_cpu = {k: round(v, 3) for k, v in run.cpu_seconds.items()}
    overlap = {  # how far planning (main thread) and writing (writer thread) ran at the same time
        "phases_sum_s": round(busy, 3),
        "overlap_ratio": round(busy / max(wall - gen_s, 1e-9), 3),  # 1.0: none; 2.0: both threads busy throughout
        "thread_cpu_s": thread_cpu,
        "writer_cpu_share": round(thread_cpu.get("write", 0.0) / max(phases["write"], 1e-9), 3),
        "writer_wait_s": round(phases["write"] - thread_cpu.get("write", 0.0), 3),  # GIL or disk
        "process_cores": round(cpu / max(wall, 1e-9), 3),  # both processes' CPU when the writer is one
        "writer": run.writer,  # "process": thread_cpu_s.write is the writer process's CPU
        "writer_process_peak_rss_mb": round(run.writer_peak_rss_mb, 1),
        "switch_interval_s": (PIPELINE_SWITCH_INTERVAL_S if switch_interval is None else switch_interval or 0.005)
        if pipeline and run.writer == "thread" else sys.getswitchinterval(),
    }
    own_cpu = cpu - (thread_cpu.get("write", 0.0) if run.writer == "process" else 0.0)
    processes = {  # each process's CPU beside its wall (the synthetic vectors' generation is in planning's CPU)
        "planning": {"cpu_s": round(own_cpu, 3), "wall_s": round(wall, 3),
                     "busy_s": round(sum(v for k, v in phases.items() if k != "write"), 3),
                     "cores": round(own_cpu / max(wall, 1e-9), 3), "peak_rss_mb": round(rss_mb(), 1)},
        "writer": {"cpu_s": thread_cpu.get("write", 0.0), "busy_s": phases["write"],
                   "cores_while_busy": round(thread_cpu.get("write", 0.0) / max(phases["write"], 1e-9), 3),
                   "peak_rss_mb": round(run.writer_peak_rss_mb, 1), "kind": run.writer},
    }
    return {"users": n, "chunk_users": chunk_users, "pipeline": pipeline, "index_build_s": index_s, "overlap": overlap,
            "processes": processes,
            "end_to_end_s": wall - gen_s, "wall_s": wall, "generate_vectors_s": gen_s, "ann_s": ann_s,
            "phases_s": phases,
            "store_s": phases["state"] + phases["write"], "notifications": run.stats.notifications,
            "rows_written": 2 * run.writes.inserted, "writes": run.writes.as_dict(), "cpu_s": cpu,
            "violations": run.violations, "peak_rss_mb": rss_mb(), "store_mb": _size_mb(workdir), "progress": marks}


def _size_mb(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.iterdir() if f.is_file()) / 1e6


def limits_beside(n: int, workdir: Path) -> dict[str, Any]:
    """The raw operations the end-to-end path is built on, on one chunk of ``n`` users, in this run:

    * SQLite: ``executemany`` of the same rows (the plans and schedules rows of that chunk's plan, keys,
      TTL and JSON bodies ready-made) into a fresh file with the adapter's schema and pragmas, rows/s: one
      row a statement and 100 rows a statement (what the adapter does), the faster of the two;
    * planning: numpy top-5 by relevance x priority weight on the same candidate matrix (users x 20), users/s;
    * candidates: the exact top-20 by one numpy matmul + argpartition on the same vectors, users/s.
    """
    import sqlite3

    from notify_core.scheduling.store import plan_item_frame, schedule_frame

    camp_vecs, centres, pool = _vectors(5)
    q = _user_vectors(0, n, centres, pool)
    unit_c = camp_vecs / np.linalg.norm(camp_vecs, axis=1, keepdims=True)
    t0 = time.perf_counter()
    for lo in range(0, n, SEARCH_BATCH):
        qb = q[lo : lo + SEARCH_BATCH]
        scores = (qb / np.linalg.norm(qb, axis=1, keepdims=True)) @ unit_c.T
        np.argpartition(-scores, K - 1, axis=1)[:, :K]
    matmul_users_per_s = n / (time.perf_counter() - t0)
    del q

    data = chunk(0, n, 11)
    camps = campaigns_frame()
    plan = plan_users(data.candidates, data.users, camps, plan_day=PLAN_DAY, options=options(n))
    rel = data.candidates.join(camps.select("campaign_id", "priority"), on="campaign_id").with_columns(
        pl.int_range(pl.len()).over("user_id").alias("_r"))
    width = int(rel["_r"].max()) + 1  # type: ignore[arg-type]
    matrix = np.zeros((data.users.height, width), dtype=np.float32)
    u = rel["user_id"].str.slice(1).cast(pl.Int64).to_numpy()
    matrix[u, rel["_r"].to_numpy()] = (rel["relevance"] * rel["priority"]).to_numpy()
    t0 = time.perf_counter()
    top = np.argpartition(-matrix, 4, axis=1)[:, :5]
    np.take_along_axis(matrix, top, axis=1).argsort(axis=1)
    topk_users_per_s = n / (time.perf_counter() - t0)

    items = plan_item_frame(plan.frame)
    rows: list[tuple[Any, ...]] = []
    for frame in (items, schedule_frame(items)):
        rows += frame.select("pk", "sk", pl.col("ttl").cast(pl.Float64),
                             pl.struct(frame.columns).struct.json_encode().alias("_b")).sort("pk", "sk").rows()
    from notify_core.store.sqlite import ROWS_PER_INSERT as per_statement  # the adapter's multi-row INSERT

    whole = len(rows) - len(rows) % per_statement
    flat = [value for row in rows[:whole] for value in row]
    statements: dict[str, tuple[str, list[Any]]] = {
        "one_row": ("INSERT INTO t VALUES (?,?,?,?)", rows),
        "multi_row": ("INSERT INTO t VALUES " + ",".join(["(?,?,?,?)"] * per_statement),
                      [flat[i : i + 4 * per_statement] for i in range(0, len(flat), 4 * per_statement)]),
    }
    raw: dict[str, float] = {}
    for name, (sql, params) in statements.items():
        conn = sqlite3.connect(workdir / f"raw_{name}.sqlite", isolation_level=None)
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "cache_size=-262144", "wal_autocheckpoint=100000"):
            conn.execute(f"PRAGMA {pragma}")
        conn.execute("CREATE TABLE t (pk TEXT NOT NULL, sk TEXT NOT NULL, ttl REAL, body TEXT NOT NULL)")
        conn.execute("CREATE UNIQUE INDEX t_key ON t (pk, sk)")
        t0 = time.perf_counter()
        conn.execute("BEGIN")
        conn.executemany(sql, params)
        if name == "multi_row":
            conn.executemany(statements["one_row"][0], rows[whole:])
        conn.execute("COMMIT")
        raw[name] = len(rows) / (time.perf_counter() - t0)
        conn.close()
    # The limit is the faster of the two ways SQLite can take the same rows from Python.
    return {"users": n, "ann_matmul_users_per_s": matmul_users_per_s, "numpy_top5_users_per_s": topk_users_per_s,
            "planner_users_per_s": n / plan.stats.seconds, "raw_executemany_rows_per_s": max(raw.values()),
            "raw_one_row_rows_per_s": raw["one_row"], "raw_multi_row_rows_per_s": raw["multi_row"],
            "raw_rows": len(rows)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="100k planning, 300k end to end (~2 min)")
    parser.add_argument("--only", choices=["planning", "chunked", "e2e"], default=None,
                        help="one part (the default runs planning and end to end; chunked only when named)")
    parser.add_argument("--users", type=int, default=None, help="end-to-end users (default 10M, 300k with --quick)")
    parser.add_argument("--chunk", type=int, default=None,
                        help="users per planned-and-written chunk (500k; 100k with --quick, so it is pipelined)")
    parser.add_argument("--no-pipeline", action="store_true", help="write each chunk before planning the next")
    parser.add_argument("--tag", default="", help="suffix of the results file (an A/B's side)")
    parser.add_argument("--writer", choices=["process", "thread"], default="process",
                        help="who writes the pipelined chunks (A/B; default: service's writer process)")
    parser.add_argument("--switch-interval", type=float, default=None,
                        help="plan_and_store's GIL hand-over interval in s (A/B; 0 keeps Python's 5 ms; "
                             "default: service.PIPELINE_SWITCH_INTERVAL_S)")
    args = parser.parse_args()
    args.chunk = args.chunk or (100_000 if args.quick else 500_000)
    n_plan, n_big = (100_000, 1_000_000) if args.quick else (1_000_000, 10_000_000)
    n_e2e = args.users or (300_000 if args.quick else 10_000_000)
    results: dict[str, Any] = {}
    rows: list[list[Any]] = []
    limits: list[dict[str, Any]] = []
    if args.only in (None, "planning"):
        p = results["planning"] = bench_planning(n_plan, 3)
        rows.append([f"plan {n_plan:,} users (median of 3)", p["wall_s"], "<= 30 s" if n_plan == 1_000_000 else "",
                     f"{p['users_per_s']:,.0f} users/s; {p['users_per_core_s']:,.0f} users/core-s; "
                     f"{p['notifications']:,} notifications"])
    if args.only == "chunked":
        c = results["chunked"] = bench_chunked(n_big, 500_000)
        rows.append([f"plan {n_big:,} users in 500k chunks", c["plan_s"], "<= 420 s" if n_big == 10_000_000 else "",
                     f"peak RSS {c['peak_rss_mb']:,.0f} MB; {c['notifications']:,} notifications; "
                     f"peak minute {c['peak_minute_load']:,}; violations {c['capacity_violations']}; "
                     f"(+{c['generate_s']:.0f} s generating data)"])
    if args.only in (None, "e2e"):
        workdir = Path(tempfile.mkdtemp(prefix="bench_schedule_"))
        try:
            e = results["end_to_end"] = bench_end_to_end(n_e2e, workdir, chunk_users=min(args.chunk, n_e2e),
                                                          pipeline=not args.no_pipeline,
                                                          switch_interval=args.switch_interval,
                                                          writer_process=args.writer == "process")
            shutil.rmtree(workdir, ignore_errors=True)
            workdir.mkdir()
            lim = results["limits_beside"] = limits_beside(min(args.chunk, n_e2e), workdir)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        ph, ov = e["phases_s"], e["overlap"]
        rows.append([f"end to end {n_e2e:,} users ({e['chunk_users']:,}-user chunks)", e["end_to_end_s"],
                     f"<= {420 * n_e2e / 10_000_000:.0f} s",
                     f"ANN {ph['candidates']:.1f} s + state read {ph['state']:.1f} s + plan {ph['plan']:.1f} s + "
                     f"write {ph['write']:.1f} s (+checks); overlap {ov['overlap_ratio']:.2f} "
                     f"({ov['writer']} writer CPU {ov['thread_cpu_s'].get('write', 0):.1f} s of its "
                     f"{ph['write']:.1f} s wall; main thread CPU {ov['thread_cpu_s'].get('main', 0):.1f} s); "
                     f"{e['rows_written']:,} rows; peak RSS {e['peak_rss_mb']:,.0f} MB (writer process "
                     f"{ov['writer_process_peak_rss_mb']:,.0f} MB); store {e['store_mb']:,.0f} MB; "
                     f"(+{e['generate_vectors_s']:.0f} s generating vectors, not counted)"])
        pr = e["processes"]
        rows.append(["CPU-s per process (vs its wall)", pr["planning"]["cpu_s"] + pr["writer"]["cpu_s"], "",
                     f"planning process {pr['planning']['cpu_s']:.1f} CPU-s over {pr['planning']['wall_s']:.1f} s "
                     f"(busy {pr['planning']['busy_s']:.1f} s); {pr['writer']['kind']} writer "
                     f"{pr['writer']['cpu_s']:.1f} CPU-s over {pr['writer']['busy_s']:.1f} s busy"])
        # Each phase against the raw operation it is built on, measured in this run on one chunk.
        # Targets are the spec's 10M in 420 s, scaled to this run's users (a 1M run gets 42 s).
        budget_s = 420 * n_e2e / 10_000_000
        limits.append(against_limit(path=f"Store writes, {n_e2e:,} users (rows/s; target: writes alone within "
                                         f"{budget_s:.0f} s = 420 s x N/10M)",
                                    figure=e["rows_written"] / max(ph["write"], 1e-9),
                                    limit=lim["raw_executemany_rows_per_s"], unit="rows/s",
                                    target=e["rows_written"] / budget_s))
        limits.append(against_limit(path="planner, one chunk, vs numpy top-5 on its candidate matrix "
                                         "(target: 10M alone in 420 s)",
                                    figure=lim["planner_users_per_s"], limit=lim["numpy_top5_users_per_s"],
                                    unit="users/s", target=10_000_000 / 420))
        limits.append(against_limit(path="ANN candidates vs exact numpy matmul top-20 "
                                         "(users/s; target: 10M alone in 420 s)",
                                    figure=n_e2e / max(ph["candidates"], 1e-9), limit=lim["ann_matmul_users_per_s"],
                                    unit="users/s", target=10_000_000 / 420))
        floor = (n_e2e / lim["ann_matmul_users_per_s"] + n_e2e / lim["numpy_top5_users_per_s"]
                 + e["rows_written"] / lim["raw_executemany_rows_per_s"])
        limits.append(against_limit(path=f"end to end {n_e2e:,} users (s; limit = sum of the three raw operations; "
                                         f"target 420 s x N/10M)",
                                    figure=e["end_to_end_s"], limit=floor, unit="s", target=budget_s,
                                    higher_is_better=False))
    fleet = ""
    if "planning" in results:
        per_core = results["planning"]["users_per_core_s"]
        fleet = f"10M users in 60 s need {10_000_000 / per_core / 60:.1f} cores of planning"
        rows.append(["users per core-second (planning)", per_core, "", fleet])
    name = "schedule_quick" if args.quick else "schedule"
    if args.users:  # a development size never overwrites the default run's file
        name += f"_{n_e2e // 1000}k"
    if args.tag:
        name += f"_{args.tag}"
    report(name, "Scheduling benchmark (2 shared cores; noisy)",
           ["measure", "seconds / value", "target", "notes"], rows,
           {"results": results, "quick": args.quick, "limits": limits})


if __name__ == "__main__":
    main()

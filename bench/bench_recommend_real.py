"""Recommendations over HTTP on the REAL demo data, beside the trivial route on the same stack.

    .venv/bin/python -m bench.bench_recommend_real            # ~2 min once the demo store exists
    .venv/bin/python -m bench.bench_recommend_real --quick    # ~1 min: shorter HTTP phases

The data is the store ``make demo`` / ``notify run`` builds from ../shared/data/online_retail (~4,362 users,
1,662 campaigns): a real user's request has repeat affinity, co-purchase and 160-290 candidates, ~10x the
synthetic benchmark's work. ``--data-dir`` (default ``.notify/bench/demo``) is built with ``notify run`` on
first use (a few minutes) and reused after.

Every user is asked for, each once per pass, in a shuffled order (no hot few): the cold path. Serving's
per-worker work cache (``recommend_cache_users``, 1,024 users by default) is smaller than the rotation
(4,362 users), so every headline request misses and computes. One run reports, with the load average:

* the handler in-process (direct invocation and the API Gateway event through the edge: auth on);
* over HTTP (``notify serve --workers N``, auth ON: every request carries an API key): closed loop with
  ``--clients`` connections (req/s, p50/p99), then open loop at ``--rate`` (p99 from the scheduled time),
  and at lower fractions of the closed loop's rate (``--sweep``: the highest rate that keeps the p99 target);
* the LIMIT, measured in the same run on the same server: the trivial route ``/healthz`` on the same
  Starlette + uvicorn stack, closed loop, same connections; and the ratio recommendations/trivial.
* beside the headline, never instead of it: the WARM figure, a second server whose work cache holds every
  user (``--warm-cache-users``, 8,192), filled by ~5 rotations first (a user's later requests), closed loop
  and open loop at 80 % of it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench import wrk
from bench.bench_recommend import SERVER_PIDS, closed_loop, open_loop, path_of, pct, serving
from bench.common import against_limit, report
from notify_core.recommend.recommender import Recommendations
from notify_core.settings import NotifySettings
from notify_core.store import tables
from notify_core.store.sqlite import SqliteStore
from tests.servers import serve_admin_key

DEFAULT_CACHE_USERS = NotifySettings.model_fields["recommend_cache_users"].default

DEFAULT_DIR = Path(".notify/bench/demo")
TARGET_RPS = 2500.0
TARGET_P99_MS = 20.0
IDLE_GAPS_MS = (0, 2, 10, 20)  # idle before each request of the in-process idle phase (ms)
IDLE_REQUESTS = 300


def ensure_demo(data_dir: Path) -> None:
    """The demo store and index under ``data_dir`` (``notify run`` once if missing)."""
    if (data_dir / "store.sqlite").exists() and any((data_dir / "artefacts").glob("**/CURRENT")):
        return
    print(f"building the demo store in {data_dir} with `notify run` (a few minutes) ...", flush=True)
    notify = Path(sys.executable).with_name("notify")
    env = {**os.environ, "DAGSTER_HOME": str(Path.cwd())}
    subprocess.run([str(notify), "run", "--data-dir", str(data_dir)], check=True, env=env)


def demo_users(data_dir: Path) -> list[str]:
    store = SqliteStore(data_dir / "store.sqlite")
    try:
        users = sorted({str(item["pk"]) for item in store.table(tables.USERS).scan()
                        if str(item.get("sk")) == tables.PROFILE_SK})
    finally:
        store.close()
    return users


def in_process(data_dir: Path, users: list[str], *, repeat: int) -> dict[str, Any]:
    """The handler as `notify serve` runs it, without HTTP: direct, and an API event through the edge."""
    os.environ["NOTIFY_DATA_DIR"] = str(data_dir)
    from bench.recommend_cpu import _event  # here: recommend_cpu imports this module
    from lambdas import get_recommended_campaigns as module
    from lambdas.gateway import _Context

    key = serve_admin_key(data_dir)
    direct, event = [], []
    for uid in users[:200]:  # warm-up: cold start, mapped pages, the Store's page cache
        module.handler({"user_id": uid}, None)
    for _ in range(repeat):
        for uid in users:
            t = time.perf_counter()
            module.handler({"user_id": uid}, None)
            direct.append((time.perf_counter() - t) * 1000)
    for uid in users:
        t = time.perf_counter()
        reply = module.handler(_event(key, uid), _Context("bench", f"bench-{uid}"))
        event.append((time.perf_counter() - t) * 1000)
        assert reply["statusCode"] in (200, 404), reply
    # The same requests with the box idle between them, as an open loop's arrivals leave a worker: on these
    # shared cores the same calls cost 2-3x the CPU after 10-20 ms idle (session 33: the same function calls,
    # every one slower), so this is the per-request cost an open loop's p99 rests on.
    idle_cpu_ms: dict[str, float] = {}
    for gap_ms in IDLE_GAPS_MS:
        started = time.process_time()
        for uid in users[:IDLE_REQUESTS]:
            module.handler(_event(key, uid), _Context("bench", f"bench-{uid}"))
            time.sleep(gap_ms / 1000)
        idle_cpu_ms[str(gap_ms)] = (time.process_time() - started) * 1000 / IDLE_REQUESTS
    return {"direct_p50": pct(direct, 50), "direct_p99": pct(direct, 99), "direct_mean": float(np.mean(direct)),
            "event_p50": pct(event, 50), "event_p99": pct(event, 99), "event_mean": float(np.mean(event)),
            "idle_cpu_ms": idle_cpu_ms}


def translation_us(key: str, user_id: str, *, repeat: int = 3000) -> float:
    """Mean microseconds of the gateway's HTTP request -> API Gateway event translation
    (:func:`lambdas.gateway.to_api_event`) on the request this benchmark sends."""
    from starlette.requests import Request

    from lambdas.gateway import to_api_event
    from lambdas.routes import ROUTES

    route = next(r for r in ROUTES if r.path.endswith("/recommendations"))
    path = path_of(user_id)
    scope = {"type": "http", "http_version": "1.1", "method": "GET", "path": path, "raw_path": path.encode(),
             "query_string": b"", "scheme": "http", "server": ("127.0.0.1", 8080), "client": ("127.0.0.1", 5000),
             "root_path": "", "path_params": {"user_id": user_id},
             "headers": [(b"host", b"127.0.0.1"), (b"x-api-key", key.encode())]}
    started = time.perf_counter()
    for _ in range(repeat):
        to_api_event(Request(scope), route, b"")
    return (time.perf_counter() - started) / repeat * 1e6


class StubRecommender:
    """A recommender that answers at once, with nothing: the handler's edge measured alone."""

    def recommend_each(self, asks: Sequence[tuple[str, int]]) -> list[Recommendations]:
        return [Recommendations(user_id=user_id, items=(), strategy="fallback", index_version=None, candidates=0)
                for user_id, _limit in asks]


def edge_overhead_us(key: str, *, repeat: int = 3000) -> tuple[float, float]:
    """Mean microseconds of one request through the edge (API event: auth, Powertools routing, reply) and
    of the same request invoked directly, both with a stub recommender that answers at once: the edge's
    own cost, measured interleaved so the machine's load hits both alike."""
    from lambdas import get_recommended_campaigns as module
    from lambdas.gateway import _Context

    module.use_recommender(StubRecommender())  # type: ignore[arg-type]
    try:
        ev = {"version": "2.0", "routeKey": "GET /v1/users/{user_id}/recommendations", "rawPath": path_of("u1"),
              "rawQueryString": "", "headers": {"x-api-key": key, "host": "127.0.0.1"},
              "requestContext": {"http": {"method": "GET", "path": path_of("u1"), "sourceIp": "127.0.0.1"},
                                 "requestId": "bench", "stage": "$default"},
              "pathParameters": {"user_id": "u1"}, "isBase64Encoded": False}
        edge, direct = 0.0, 0.0
        for _ in range(repeat):
            t = time.perf_counter()
            module.handler(ev, _Context("bench", "bench"))
            edge += time.perf_counter() - t
            t = time.perf_counter()
            module.handler({"user_id": "u1"}, None)
            direct += time.perf_counter() - t
    finally:
        module.use_recommender(None)
    return edge / repeat * 1e6, direct / repeat * 1e6


def python_closed_loop(port: int, paths: list[str], *, clients: int, seconds: float,
                       server_pid: int) -> dict[str, Any]:
    """The Python closed loop (this process is the generator), with the same CPU split as :func:`wrk.closed_loop`."""
    servers = [server_pid, *wrk.children(server_pid)]
    before_server, before_all, before_self = wrk.cpu_seconds(servers), wrk.machine_cpu_seconds(), time.process_time()
    started = time.perf_counter()
    result = asyncio.run(closed_loop(port, paths, clients=clients, seconds=seconds))
    wall = time.perf_counter() - started
    server_cpu, gen_cpu = wrk.cpu_seconds(servers) - before_server, time.process_time() - before_self
    all_cpu = wrk.machine_cpu_seconds() - before_all
    return {**result, "generator": "python", "cpu_cores": {
        "server_workers": server_cpu / wall, "generator": gen_cpu / wall,
        "everything_else": max(0.0, all_cpu - server_cpu - gen_cpu) / wall, "wall_s": wall,
        "server_cpu_ms_per_request": server_cpu * 1000 / max(1.0, result["rps"] * wall)}}


def cpu_text(result: dict[str, Any]) -> str:
    cores = result.get("cpu_cores")
    if not cores:
        return ""
    return (f"cores: server {cores['server_workers']:.2f}, generator {cores['generator']:.2f}, "
            f"others {cores['everything_else']:.2f}; server CPU {cores['server_cpu_ms_per_request']:.3f} ms/req")


def main() -> None:  # noqa: PLR0915 - a linear script, read top to bottom
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DIR)
    parser.add_argument("--quick", action="store_true", help="shorter HTTP phases")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--rate", type=float, default=TARGET_RPS,
                        help="open-loop rate (req/s); 80 %% of the closed loop's when that is lower")
    parser.add_argument("--generator", choices=["auto", "wrk", "python"], default="auto",
                        help="closed-loop load generator: wrk (C) when installed (auto), else the Python one")
    parser.add_argument("--warm-cache-users", type=int, default=8192,
                        help="after the headline (cold) phases, a second server with this per-worker work cache, "
                             "filled first, for the WARM figure beside the headline (0: skip; wrk only)")
    parser.add_argument("--sweep", default="0.4,0.6",
                        help="after the headline open loop, open loops at these fractions of the closed loop's rate "
                             "(comma-separated; empty: none): where the p99 target holds, not only at 80 %%")
    args = parser.parse_args()
    use_wrk = args.generator == "wrk" or (args.generator == "auto" and wrk.available())
    seconds = 5.0 if args.quick else args.seconds
    data_dir = args.data_dir.resolve()
    ensure_demo(data_dir)
    users = demo_users(data_dir)
    order = np.random.default_rng(21).permutation(len(users))
    shuffled = [users[i] for i in order]
    rec_paths = [path_of(u) for u in shuffled]

    with serving(data_dir, workers=args.workers) as port:
        asyncio.run(closed_loop(port, rec_paths, clients=args.clients, seconds=3))  # warm-up: cold starts
        if use_wrk:  # the LIMIT and the figure from the same generator; the Python one's figure beside them
            key, pid = serve_admin_key(data_dir), SERVER_PIDS[port]
            trivial = wrk.closed_loop(port, ["/healthz"], api_key=key, connections=args.clients, seconds=seconds,
                                      server_pid=pid)
            closed = wrk.closed_loop(port, rec_paths, api_key=key, connections=args.clients, seconds=seconds,
                                     server_pid=pid)
            closed_py = python_closed_loop(port, rec_paths, clients=args.clients, seconds=seconds, server_pid=pid)
        else:
            trivial = python_closed_loop(port, ["/healthz"], clients=args.clients, seconds=seconds,
                                         server_pid=SERVER_PIDS[port])
            closed = closed_py = python_closed_loop(port, rec_paths, clients=args.clients, seconds=seconds,
                                                    server_pid=SERVER_PIDS[port])
        # At the target when the server can sustain it; else at 80 % of what it sustained (an open loop far
        # past capacity only measures the queue it builds), and the target is reported not met.
        rate = args.rate if closed["rps"] >= args.rate else max(50.0, round(closed["rps"] * 0.8))
        opened = asyncio.run(open_loop(port, rec_paths, rate=rate, seconds=seconds, max_conns=64))
        # Why a sweep: since session 20 the closed loop's rate comes from batches of 5-11 requests a worker, and
        # an open loop at 80 % of it forms batches of 1-3 with the worker idle between them, which cost more a
        # request (sessions 32-33; the table's idle rows), so 80 % of the closed loop can be past what it sustains.
        swept = [(f, r, asyncio.run(open_loop(port, rec_paths, rate=r, seconds=seconds, max_conns=64)))
                 for f in sorted(float(x) for x in args.sweep.split(",") if x.strip())
                 for r in [max(50.0, round(closed["rps"] * f))]]
    # WARM, beside the headline (never instead of it): every user's time-independent work already in each
    # worker's cache (notify_core/recommend/work_cache.py), as for a user's second and later requests.
    warm: dict[str, Any] | None = None
    if args.warm_cache_users > 0 and use_wrk:
        with serving(data_dir, workers=args.workers,
                     env={"NOTIFY_RECOMMEND_CACHE_USERS": str(args.warm_cache_users)}) as port:
            key, pid = serve_admin_key(data_dir), SERVER_PIDS[port]
            # fill: ~5 rotations over every user, so each worker has asked for most users twice (the work is
            # kept from a user's second request on a worker)
            fill_s = float(max(seconds, round(5 * len(users) / max(closed["rps"], 100.0))))  # wrk: whole seconds
            wrk.closed_loop(port, rec_paths, api_key=key, connections=args.clients, seconds=fill_s)
            warm = wrk.closed_loop(port, rec_paths, api_key=key, connections=args.clients, seconds=seconds,
                                   server_pid=pid)
            warm["fill_seconds"] = fill_s
            warm_rate = max(50.0, round(warm["rps"] * 0.8))
            warm_open = asyncio.run(open_loop(port, rec_paths, rate=warm_rate, seconds=seconds, max_conns=64))
            warm_ms = [x * 1000 for x in warm_open.pop("latencies")]
            warm["open"] = {**warm_open, "rate": warm_rate, "p50_ms": pct(warm_ms, 50), "p99_ms": pct(warm_ms, 99)}
            warm["trivial"] = wrk.closed_loop(port, ["/healthz"], api_key=key, connections=args.clients,
                                              seconds=seconds, server_pid=pid)
    open_ms = [x * 1000 for x in opened["latencies"]]
    sweep = [{"fraction": f, "rate": at, "p50_ms": pct([x * 1000 for x in r["latencies"]], 50),
              "p99_ms": pct([x * 1000 for x in r["latencies"]], 99),
              **{k: v for k, v in r.items() if k != "latencies"}} for f, at, r in swept]
    within = [r["rate"] for r in [*sweep, {"rate": rate, "p99_ms": pct(open_ms, 99)}]
              if r["p99_ms"] <= TARGET_P99_MS]
    inproc = in_process(data_dir, shuffled, repeat=1 if args.quick else 2)
    inproc["translation_us"] = translation_us(serve_admin_key(data_dir), shuffled[0])
    edge_us, stub_us = edge_overhead_us(serve_admin_key(data_dir))
    inproc["edge_us"] = edge_us - stub_us

    load = os.getloadavg()
    rows: list[list[Any]] = [
        [f"handler in-process, direct ({len(users):,} users, each once a pass)", inproc["direct_p50"],
         inproc["direct_p99"], f"{1000 / inproc['direct_mean']:,.0f}/s on 1 core", ""],
        ["handler in-process, API event through the edge (auth on)", inproc["event_p50"], inproc["event_p99"],
         f"{1000 / inproc['event_mean']:,.0f}/s on 1 core", ""],
        ["gateway translation (HTTP request -> API Gateway event), mean", inproc["translation_us"] / 1000, "",
         f"edge (auth, Powertools) adds {inproc['edge_us'] / 1000:.3f} ms a request",
         "<= the handler's cost"],
        *([f"handler in-process through the edge, {gap} ms idle before each request: CPU ms a request "
           f"({IDLE_REQUESTS} users)", "", "",
           f"{cpu_ms:.2f} ms CPU, {cpu_ms / inproc['idle_cpu_ms']['0']:.2f}x back to back", ""]
          for gap, cpu_ms in inproc["idle_cpu_ms"].items()),
        [f"trivial route /healthz, closed loop ({trivial['generator']}), {args.clients} conns, "
         f"{args.workers} workers", trivial["p50"], trivial["p99"],
         f"{trivial['rps']:,.0f}/s ({trivial['errors']} errors); {cpu_text(trivial)}", "the limit"],
        [f"recommendations over HTTP, closed loop ({closed['generator']}), {args.clients} conns, "
         f"{args.workers} workers", closed["p50"], closed["p99"],
         f"{closed['rps']:,.0f}/s ({closed['errors']} errors); {cpu_text(closed)}",
         f">= {TARGET_RPS:,.0f}/s, p99 <= {TARGET_P99_MS:.0f} ms"],
        *([[f"recommendations over HTTP, closed loop (python generator, for comparison), {args.clients} conns",
            closed_py["p50"], closed_py["p99"],
            f"{closed_py['rps']:,.0f}/s ({closed_py['errors']} errors); {cpu_text(closed_py)}", ""]]
          if closed_py is not closed else []),
        *([[f"WARM (not the headline): the same closed loop (wrk), every user's work cached "
             f"({args.warm_cache_users:,} users a worker, filled first)", warm["p50"], warm["p99"],
             f"{warm['rps']:,.0f}/s ({warm['errors']} errors); {cpu_text(warm)}; trivial beside it "
             f"{warm['trivial']['rps']:,.0f}/s", ""]] if warm is not None else []),
        [f"recommendations over HTTP, open loop (python generator) at {rate:,.0f}/s", pct(open_ms, 50),
         pct(open_ms, 99),
         f"{opened['achieved_rps']:,.0f}/s answered, failures {opened['failures'] or 'none'}",
         f"p99 <= {TARGET_P99_MS:.0f} ms"],
        *([f"recommendations over HTTP, open loop at {r['rate']:,.0f}/s ({r['fraction']:.0%} of the closed loop)",
           r["p50_ms"], r["p99_ms"], f"{r['achieved_rps']:,.0f}/s answered, failures {r['failures'] or 'none'}",
           f"p99 <= {TARGET_P99_MS:.0f} ms"] for r in sweep),
        *([["WARM (not the headline): open loop at 80 % of the warm closed loop, "
            f"{warm['open']['rate']:,.0f}/s", warm["open"]["p50_ms"], warm["open"]["p99_ms"],
            f"{warm['open']['achieved_rps']:,.0f}/s answered, failures {warm['open']['failures'] or 'none'}", ""]]
          if warm is not None else []),
    ]
    limits = [
        against_limit(path="gateway translation + edge per request vs the handler (ms)",
                      figure=(inproc["translation_us"] + inproc["edge_us"]) / 1000, limit=inproc["direct_mean"],
                      unit="ms", target=inproc["direct_mean"], higher_is_better=False),
        against_limit(path="recommendations over HTTP, real demo data (closed loop)", figure=closed["rps"],
                      limit=trivial["rps"], unit="req/s", target=TARGET_RPS),
        against_limit(path=f"recommendations p99 over HTTP, open loop at {rate:,.0f}/s", figure=pct(open_ms, 99),
                      limit=trivial["p99"], unit="ms", target=TARGET_P99_MS, higher_is_better=False)
        | ({"met": False} if rate < TARGET_RPS else {}),
        *([against_limit(path="recommendations over HTTP, real demo data, WARM work cache (not the headline)",
                         figure=warm["rps"], limit=warm["trivial"]["rps"], unit="req/s", target=TARGET_RPS)]
          if warm is not None else []),
    ]
    extra = {"data": "real demo data (online_retail)", "users": len(users), "workers": args.workers,
             "clients": args.clients, "seconds": seconds, "distribution": "every user once per pass, shuffled",
             "per_user_cache": f"headline: the serving default ({DEFAULT_CACHE_USERS:,} users a worker) under a "
                               f"rotation over all {len(users):,} users: every request misses and computes (the "
                               "cold path); WARM: a second server, cache filled first", "auth": "on (X-API-Key)",
             "warm": warm,
             "generator": closed["generator"], "trivial": trivial, "closed": closed, "closed_python": closed_py,
             "open": {k: v for k, v in opened.items() if k != "latencies"},
             "open_p50_ms": pct(open_ms, 50), "open_p99_ms": pct(open_ms, 99), "open_sweep": sweep,
             "open_highest_rate_within_p99_target": max(within, default=None), "in_process": inproc,
             "load_at_end": load, "limits": limits,
             "note": "2 shared cores; the load generator runs on the same machine as the server"}
    report("recommend_real_quick" if args.quick else "recommend_real",
           f"Recommendations on the real demo data ({len(users):,} users)",
           ["measure", "p50 ms", "p99 ms", "detail", "target"], rows, extra)


if __name__ == "__main__":
    main()

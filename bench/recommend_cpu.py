"""The recommendations handler's CPU per request, in process, and a dump of every real user's answer.

Why in process: on the shared box req/s moves 2x with the others' load; CPU time of the handler per
request (``time.process_time`` over a pass of every demo user through the API edge, the path `notify serve`'s
workers run, median of several passes) moves far less, so a same-sitting A/B of two code trees is readable.

    .venv/bin/python -m bench.recommend_cpu --data-dir DIR                  # CPU ms/request, 5 passes (~1 min)
    .venv/bin/python -m bench.recommend_cpu --data-dir DIR --quick          # 2 passes
    .venv/bin/python -m bench.recommend_cpu --data-dir DIR --profile OUT    # + a cProfile of one pass
    .venv/bin/python -m bench.recommend_cpu --data-dir DIR --dump OUT --now 2026-11-30T12:00:00+00:00
    .venv/bin/python -m bench.recommend_cpu --data-dir DIR --dump OUT --cache-users 8192   # answers from the cache

The headline is the COLD figure: every request the first of its user (the per-worker cache of the
time-independent work, :mod:`notify_core.recommend.work_cache`, emptied before each pass, so each request
computes; a first request keeps nothing). The WARM figure beside it is the same passes with the cache kept,
after one unmeasured pass that fills it (every user's third and later requests: only the time-dependent
work and the Store reads). ``--cache-users 0`` runs without
the cache at all (the code before it existed).

``--dump`` writes every user's reply JSON (as the API sends it) and the unrounded floats of each item
(``repr``), one line a user: `cmp` two dumps (main's code tree vs a branch, run with that tree as the
working directory so its ``notify_core`` is imported first) to prove the answers byte-identical.
``--now`` pins the clock (cooldowns, campaign dates, recency), so a dump never depends on the calendar.
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import json
import os
import pstats
import statistics
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from bench.bench_recommend import path_of
from bench.bench_recommend_real import DEFAULT_DIR, StubRecommender, demo_users
from bench.common import against_limit, report
from notify_core.clock import ManualClock

TOGETHER = 8  # requests a batch in the coalesced passes: a worker's share of 16 connections on 2 workers
TARGET_CPU_MS = 0.8  # 2,500 req/s on 2 cores, the HTTP stack's ~0.07 ms included (docs/peak-performance.md)


def _setup(data_dir: Path, now: datetime, *, cache_users: int = 0) -> Any:
    """The handler module with a Recommender on the demo store, the clock pinned at ``now``."""
    os.environ["NOTIFY_DATA_DIR"] = str(data_dir)
    from lambdas import get_recommended_campaigns as module
    from lambdas import runtime
    from lambdas.index import build_holder
    from notify_core.recommend.recommender import Recommender
    from notify_core.store.factory import seal_store

    rt = runtime.get()
    module.use_recommender(Recommender(store=rt.store(seal_store), holder=rt.holder(build_holder),
                                       clock=ManualClock(now), cache_users=cache_users))
    return module


def _event(key: str, uid: str) -> dict[str, Any]:
    return {"version": "2.0", "routeKey": "GET /v1/users/{user_id}/recommendations", "rawPath": path_of(uid),
            "rawQueryString": "", "headers": {"x-api-key": key, "host": "127.0.0.1"},
            "requestContext": {"http": {"method": "GET", "path": path_of(uid), "sourceIp": "127.0.0.1"},
                               "requestId": f"bench-{uid}", "stage": "$default"},
            "pathParameters": {"user_id": uid}, "isBase64Encoded": False}


def cpu_passes(module: Any, key: str, users: list[str], *, passes: int, cold: bool = True,
               together: int = 1) -> list[float]:
    """CPU ms per request of each pass over ``users`` through the API edge (auth, routing, reply).
    ``cold``: the recommender's work cache (if any) is emptied before each pass (first requests only).
    ``together``: the requests handled in batches of that many, as the gateway runs the requests waiting on a
    worker (:func:`notify_core.coalesce.run_together`: their users ranked by one call)."""
    from lambdas.gateway import _Context
    from notify_core.coalesce import run_together

    events = [(_event(key, uid), _Context("bench", f"bench-{uid}")) for uid in users]
    for ev, ctx in events[:200]:  # warm-up: mapped pages, the Store's page cache, lazy caches
        module.handler(ev, ctx)
    cache = getattr(module.get_recommender(), "work_cache", None)
    out = []
    for _ in range(passes):
        if cold and cache is not None:
            cache.clear()
        started = time.process_time()
        if together > 1:
            for lo in range(0, len(events), together):
                run_together([functools.partial(module.handler, ev, ctx) for ev, ctx in events[lo : lo + together]])
        else:
            for ev, ctx in events:
                module.handler(ev, ctx)
        out.append((time.process_time() - started) / len(events) * 1000)
    return out


def edge_floor(module: Any, key: str, users: list[str], *, passes: int) -> list[float]:
    """The limit beside the figure: CPU ms per request of the same events through the same edge with a
    recommender that answers at once (auth, routing, reply, log line: the floor of this handler)."""
    real = module.get_recommender()
    module.use_recommender(StubRecommender())
    try:
        return cpu_passes(module, key, users, passes=passes)
    finally:
        module.use_recommender(real)


def dump(module: Any, users: list[str], path: Path, *, together: int = 1) -> None:
    """One line a user: the reply JSON, then the items' unrounded floats. ``together``: the requests handled
    that many at a time, as the gateway batches them (the same bytes as one at a time, or a bug)."""
    rec = module.get_recommender()
    if rec.work_cache is not None:  # every dumped answer from the cache: two passes fill it first (the
        for _ in range(2):          # work is kept from a user's second request on)
            for uid in users:
                rec.recommend(uid, limit=10)
    from notify_core.coalesce import run_together

    with path.open("wb") as fh:
        for lo in range(0, len(users), together):
            chunk = users[lo : lo + together]
            replies = run_together([functools.partial(module.handler, {"user_id": uid}, None) for uid in chunk])
            results = rec.recommend_each([(uid, 10) for uid in chunk])
            for reply, result in zip(replies, results, strict=True):
                fh.write(orjson.dumps(reply, option=orjson.OPT_SORT_KEYS))
                fh.write(b" " + repr([(r.campaign_id, r.score, r.similarity, r.affinity, r.copurchase)
                                      for r in result.items]).encode() + b"\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DIR)
    parser.add_argument("--now", default="2026-11-30T12:00:00+00:00", help="the pinned clock (ISO, aware)")
    parser.add_argument("--passes", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="2 passes")
    parser.add_argument("--dump", type=Path, help="write every user's answer here instead of timing")
    parser.add_argument("--profile", type=Path, help="also write a cProfile of one pass (pstats) here")
    parser.add_argument("--together", type=int, default=1, help="--dump: handle the requests this many at a time")
    parser.add_argument("--cache-users", type=int, default=8192,
                        help="the per-worker work cache's size (0: none); the headline is still the cold figure")
    args = parser.parse_args()
    data_dir = args.data_dir.resolve()
    users = demo_users(data_dir)
    module = _setup(data_dir, datetime.fromisoformat(args.now), cache_users=args.cache_users)
    if args.dump:
        dump(module, users, args.dump, together=args.together)
        print(f"dumped {len(users)} users to {args.dump}")
        return
    from tests.servers import serve_admin_key

    key = serve_admin_key(data_dir)
    count = 2 if args.quick else args.passes
    load_before = os.getloadavg()[0]
    passes = cpu_passes(module, key, users, passes=count)  # cold: the headline
    coalesced = cpu_passes(module, key, users, passes=count, together=TOGETHER)  # the gateway's batches
    warm: list[float] = []
    if args.cache_users > 0:  # one unmeasured pass keeps every user's work (kept from the second request on)
        cpu_passes(module, key, users, passes=1, cold=False)
        warm = cpu_passes(module, key, users, passes=count, cold=False)
    floor = edge_floor(module, key, users, passes=count)
    load = os.getloadavg()[0]
    figures = {"users": len(users), "cache_users": args.cache_users,
               "cpu_ms_per_request_passes": [round(p, 4) for p in passes],
               "cpu_ms_per_request_median": round(statistics.median(passes), 4),
               "coalesced_together": TOGETHER,
               "coalesced_cpu_ms_per_request_passes": [round(p, 4) for p in coalesced],
               "coalesced_cpu_ms_per_request_median": round(statistics.median(coalesced), 4),
               "warm_cpu_ms_per_request_passes": [round(p, 4) for p in warm],
               "warm_cpu_ms_per_request_median": round(statistics.median(warm), 4) if warm else None,
               "load": round(load, 2), "load_before": round(load_before, 2),
               "edge_floor_ms_passes": [round(p, 4) for p in floor]}
    print(json.dumps(figures))
    median, floor_median = statistics.median(passes), statistics.median(floor)
    rows: list[list[Any]] = [["handler, real users (API edge), COLD: each request its user's first", median, count],
                             [f"the same, {TOGETHER} requests at a time (the gateway's batches: one ranking)",
                              statistics.median(coalesced), count]]
    limits = [against_limit(path="recs handler CPU / request (cold)", figure=median, limit=floor_median,
                            unit="ms", target=TARGET_CPU_MS, higher_is_better=False),
              against_limit(path=f"recs handler CPU / request (cold, {TOGETHER} at a time)",
                            figure=statistics.median(coalesced), limit=floor_median, unit="ms",
                            target=TARGET_CPU_MS, higher_is_better=False)]
    if warm:
        rows.append(["handler, real users, WARM: the user's work cache kept (later requests)",
                     statistics.median(warm), count])
        limits.append(against_limit(path="recs handler CPU / request (warm, work cache)",
                                    figure=statistics.median(warm), limit=floor_median, unit="ms",
                                    target=TARGET_CPU_MS, higher_is_better=False))
    rows.append(["same edge, stub recommender (the limit)", floor_median, count])
    report("recommend_cpu_quick" if args.quick else "recommend_cpu", "Recommendations handler: CPU per request",
           ["what", "CPU ms / request (median)", "passes"], rows, {**figures, "limits": limits})
    if args.profile:
        profiler = cProfile.Profile()
        profiler.enable()
        cpu_passes(module, key, users, passes=1)
        profiler.disable()
        profiler.dump_stats(str(args.profile))
        pstats.Stats(str(args.profile)).sort_stats("cumulative").print_stats(40)


if __name__ == "__main__":
    main()

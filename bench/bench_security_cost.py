"""What encryption at rest costs on recommendation latency and on stream throughput (issue 14), A/B in one run.

1. Recommendations: the small recommender world of the tests (60 campaigns, HashingEmbedder, the real
   index) plus ``--users`` users per variant whose profiles carry personal fields (email, first and last
   name). One SQLite file holds both populations: ``p*`` users written through the plain
   :class:`~notify_core.store.sqlite.SqliteStore`, ``s*`` users written sealed through
   :class:`~notify_core.store.sealed.SealedStore` over the same adapter. ``Recommender.recommend`` is timed
   per user, plain and sealed interleaved in blocks (the order rotates), so machine noise hits both
   alike. The recommender reads the profile per request, so the sealed variant opens three fields each time.
   A third population, ``q*``, plain again, is an A/A control: its ratio to plain is the noise floor.
   Then both costs together through the recommendations handler (API Gateway v2 event): no key check over
   the plain Store vs the API-key check over the SealedStore, interleaved in blocks.
2. Stream: ``--events`` events (10 % orders, 90 % clicks, as bench_stream produces them) written once to a
   LocalLog; the real :class:`~notify_core.events.consumer.EventConsumer` drains all of them into a fresh
   Store (plain, sealed, plain again as the A/A control), rotating the order each round, each run under its own
   consumer group. Events/s per run. (The consumer writes no table with personal fields, so by design the
   sealed Store hands it the adapter's own tables: any difference beyond the A/A control would be a finding.)

Reports medians of the per-block (per-pair) ratios, the pooled percentiles and the load average before and
after; writes ``bench/results/security_cost.json``.

    nice -n 5 .venv/bin/python -m bench.bench_security_cost [--users 2000] [--blocks 8] [--events 100000] [--pairs 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from bench.common import report
from notify_core.store import tables


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def load() -> tuple[float, float, float]:
    return os.getloadavg()


# "plain_aa" is plain again: an A/A control whose ratio to "plain" shows the noise floor of the machine.
VARIANTS = ("plain", "sealed", "plain_aa")


def rotated(block: int) -> tuple[str, ...]:
    """The variants in a different order each block, so none always runs first (or after the same one)."""
    k = block % len(VARIANTS)
    return VARIANTS[k:] + VARIANTS[:k]


# --- recommendations ---------------------------------------------------------------------------------
def populate_users(store: Any, prefix: str, n: int, dim: int, seed: int) -> list[str]:
    """``n`` users with a profile holding personal fields and a user vector, written through ``store``."""
    from notify_core.embeddings.store import USER, persist, state_schema, vector_series
    from tests.recommend.conftest import T0

    ids = [f"{prefix}{i:06d}" for i in range(n)]
    countries = ("United Kingdom", "France", "Germany")
    store.table(tables.USERS).batch_put([
        {"pk": uid, "sk": tables.PROFILE_SK, "user_id": uid, "country": countries[i % 3],
         "opted_out_categories": ["toys"] if i % 10 == 0 else [], "email": f"user{i}@example.org",
         "first_name": f"First{i}", "last_name": f"Last{i}"} for i, uid in enumerate(ids)])
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    schema = state_schema(USER, dim)
    frame = pl.DataFrame({"id": ids, "content_hash": ["h"] * n, "model": ["hashing"] * n, "updated_at": [T0] * n})
    frame = frame.with_columns(vector_series(vectors)).select(list(schema)).cast(schema)  # type: ignore[arg-type]
    persist(store, USER, frame)
    return ids


def recommend_ab(root: Path, *, users: int, blocks: int) -> dict[str, Any]:
    from notify_core.recommend.recommender import Recommender
    from notify_core.recommend.serving import IndexHolder
    from notify_core.security.crypto import build_sealer
    from notify_core.store.sealed import SealedStore
    from tests.recommend.conftest import DIM, make_world

    world = make_world(root)
    sealed_store = SealedStore(world.store, build_sealer(root / "secrets"))
    plain_ids = populate_users(world.store, "p", users, DIM, seed=1)
    sealed_ids = populate_users(sealed_store, "s", users, DIM, seed=1)  # same vectors, same taste
    control_ids = populate_users(world.store, "q", users, DIM, seed=1)  # A/A control: plain again
    raw = world.store.table(tables.USERS).get(sealed_ids[0], tables.PROFILE_SK)
    assert raw is not None and str(raw["email"]).startswith("enc:v1:"), "sealed profiles must be sealed at rest"
    holder = IndexHolder(world.artefacts)  # the serving holder (refresh every 2 s), as bench_edge uses
    recommenders = {"plain": (Recommender(store=world.store, holder=holder, clock=world.clock), plain_ids),
                    "sealed": (Recommender(store=sealed_store, holder=holder, clock=world.clock), sealed_ids),
                    "plain_aa": (Recommender(store=world.store, holder=holder, clock=world.clock), control_ids)}
    opened = recommenders["sealed"][0].store.table(tables.USERS).get(sealed_ids[0], tables.PROFILE_SK)
    assert opened is not None and opened["email"] == "user0@example.org"
    handler = handler_ab(world, recommenders, blocks=blocks)
    for rec, ids in recommenders.values():  # warm-up: index load, SQLite page cache, code paths
        for uid in ids[:300]:
            rec.recommend(uid)
    samples: dict[str, list[list[float]]] = {kind: [] for kind in VARIANTS}
    for block in range(blocks):
        for kind in rotated(block):
            rec, ids = recommenders[kind]
            times: list[float] = []
            for uid in ids:
                t = time.perf_counter()
                rec.recommend(uid)
                times.append((time.perf_counter() - t) * 1e6)
            samples[kind].append(times)
    world.store.close()
    pooled = {k: [x for b in v for x in b] for k, v in samples.items()}
    p50_ratios = [pct(s, 50) / pct(p, 50) for p, s in zip(samples["plain"], samples["sealed"], strict=True)]
    p99_ratios = [pct(s, 99) / pct(p, 99) for p, s in zip(samples["plain"], samples["sealed"], strict=True)]
    aa50 = [pct(s, 50) / pct(p, 50) for p, s in zip(samples["plain"], samples["plain_aa"], strict=True)]
    aa99 = [pct(s, 99) / pct(p, 99) for p, s in zip(samples["plain"], samples["plain_aa"], strict=True)]
    return {
        "users_per_variant": users, "blocks": blocks, "requests_per_variant": len(pooled["plain"]),
        "plain_p50_us": pct(pooled["plain"], 50), "plain_p99_us": pct(pooled["plain"], 99),
        "sealed_p50_us": pct(pooled["sealed"], 50), "sealed_p99_us": pct(pooled["sealed"], 99),
        "p50_ratio_median_of_blocks": statistics.median(p50_ratios),
        "p99_ratio_median_of_blocks": statistics.median(p99_ratios),
        "p50_ratio_pooled": pct(pooled["sealed"], 50) / pct(pooled["plain"], 50),
        "p99_ratio_pooled": pct(pooled["sealed"], 99) / pct(pooled["plain"], 99),
        "aa_p50_us": pct(pooled["plain_aa"], 50), "aa_p99_us": pct(pooled["plain_aa"], 99),
        "aa_p50_ratio_median_of_blocks": statistics.median(aa50),
        "aa_p99_ratio_median_of_blocks": statistics.median(aa99),
        "p50_ratios_by_block": p50_ratios, "p99_ratios_by_block": p99_ratios,
        "handler": handler,
    }


def handler_ab(world: Any, recommenders: dict[str, Any], *, blocks: int) -> dict[str, Any]:
    """Both costs together, through the recommendations handler (API Gateway v2 event, as bench_edge):
    "bare" = no key check, plain Store, plain users; "secured" = key check + SealedStore, sealed users."""
    from bench.bench_edge import install_auth, v2_event
    from lambdas import get_recommended_campaigns as recs

    token, keyring, runtime = install_auth(world.store)
    assert runtime is not None, "this code has no handler edge"
    setups = {"bare": (recommenders["plain"], None), "secured": (recommenders["sealed"], keyring)}
    samples: dict[str, list[list[float]]] = {"bare": [], "secured": []}
    for block in range(-1, blocks):  # block -1 warms up
        for kind in (("bare", "secured") if block % 2 == 0 else ("secured", "bare")):
            (rec, ids), ring = setups[kind]
            recs.use_recommender(rec)
            runtime.use_auth(ring, insecure=ring is None)
            times: list[float] = []
            for uid in ids:
                event = v2_event(uid, token)
                t = time.perf_counter()
                status = recs.handler(event, None)["statusCode"]
                times.append((time.perf_counter() - t) * 1e6)
                assert status == 200, status
            if block >= 0:
                samples[kind].append(times)
    runtime.use_auth(keyring)
    recs.use_recommender(None)
    pooled = {k: [x for b in v for x in b] for k, v in samples.items()}
    r50 = [pct(s, 50) / pct(b, 50) for b, s in zip(samples["bare"], samples["secured"], strict=True)]
    r99 = [pct(s, 99) / pct(b, 99) for b, s in zip(samples["bare"], samples["secured"], strict=True)]
    return {"bare_p50_us": pct(pooled["bare"], 50), "bare_p99_us": pct(pooled["bare"], 99),
            "secured_p50_us": pct(pooled["secured"], 50), "secured_p99_us": pct(pooled["secured"], 99),
            "p50_ratio_median_of_blocks": statistics.median(r50), "p99_ratio_median_of_blocks": statistics.median(r99),
            "p50_ratio_pooled": pct(pooled["secured"], 50) / pct(pooled["bare"], 50),
            "p99_ratio_pooled": pct(pooled["secured"], 99) / pct(pooled["bare"], 99),
            "p50_ratios_by_block": r50, "p99_ratios_by_block": r99}


# --- stream ------------------------------------------------------------------------------------------
def produce(log_path: Path, n: int) -> None:
    """``n`` events into a LocalLog, the same shapes bench_stream's producer writes."""
    from notify_core.stream.local_log import LocalLog
    from notify_core.stream.port import Message

    stream = LocalLog(str(log_path))
    for start in range(0, n, 1000):
        batch = []
        for i in range(start, min(start + 1000, n)):
            user = f"u{i % 100003}"
            ts = f"2024-03-01T{i // 3600 % 24:02d}:{i // 60 % 60:02d}:{i % 60:02d}Z"
            if i % 10 == 0:
                v = (f'{{"event_id":"e{i}","type":"order","user_id":"{user}","ts":"{ts}","order_id":"o{i}",'
                     f'"items":[{{"product_id":"p{i % 4000}","quantity":1,"unit_price":2.5}}]}}')
                batch.append(Message("purchase_history", user.encode(), v.encode()))
            else:
                v = (f'{{"event_id":"e{i}","type":"click","user_id":"{user}","ts":"{ts}",'
                     f'"campaign_id":"c{i % 300}"}}')
                batch.append(Message("notify_clickstream", user.encode(), v.encode()))
        stream.produce_batch(batch)
    stream.close()


def drain_once(log_path: Path, workdir: Path, *, sealed: bool, events: int, group: str) -> float:
    """Seconds the real consumer takes to persist all ``events`` into a fresh Store (plain or sealed)."""
    from notify_core.clock import SYSTEM_CLOCK
    from notify_core.events.consumer import EventConsumer
    from notify_core.gc_tuning import tune_gc_for_throughput
    from notify_core.security.crypto import build_sealer
    from notify_core.store.sealed import SealedStore
    from notify_core.store.sqlite import SqliteStore
    from notify_core.stream.local_log import LocalLog

    raw = SqliteStore(workdir / "store.sqlite")
    store: Any = SealedStore(raw, build_sealer(workdir / "secrets")) if sealed else raw
    store.tune_for_bulk_writes()
    tune_gc_for_throughput()
    stream = LocalLog(str(log_path))
    consumer = EventConsumer(stream=stream, store=store, landing=workdir / "landing", max_batch=10_000,
                             poll_timeout=0.05, clock=SYSTEM_CLOCK, group=group)
    started = time.perf_counter()
    consumer.run(stop=threading.Event(), max_records=events, idle_exit=5.0)
    seconds = time.perf_counter() - started
    assert consumer.totals.records >= events, (consumer.totals.records, events)
    consumer.close()
    stream.close()
    store.close()
    return seconds


def stream_ab(root: Path, *, events: int, pairs: int) -> dict[str, Any]:
    log_path = root / "log.sqlite"
    produce(log_path, events)
    runs: dict[str, list[float]] = {kind: [] for kind in VARIANTS}
    ratios: list[float] = []
    aa: list[float] = []
    drain_once(log_path, root / "warm", sealed=False, events=min(events, 20_000), group="warm")  # imports, caches
    for pair in range(pairs):
        got: dict[str, float] = {}
        for kind in rotated(pair):
            workdir = root / f"{kind}-{pair}"
            seconds = drain_once(log_path, workdir, sealed=kind == "sealed", events=events, group=f"{kind}-{pair}")
            shutil.rmtree(workdir, ignore_errors=True)
            got[kind] = events / seconds
            runs[kind].append(got[kind])
            print(f"  stream pair {pair} {kind:6s} {got[kind]:>9,.0f} events/s", flush=True)
        ratios.append(got["plain"] / got["sealed"])  # > 1 means sealed is slower
        aa.append(got["plain"] / got["plain_aa"])
    return {"events": events, "pairs": pairs, "plain_events_per_s": runs["plain"],
            "sealed_events_per_s": runs["sealed"],
            "plain_median_events_per_s": statistics.median(runs["plain"]),
            "sealed_median_events_per_s": statistics.median(runs["sealed"]),
            "plain_aa_events_per_s": runs["plain_aa"],
            "plain_aa_median_events_per_s": statistics.median(runs["plain_aa"]),
            "slowdown_ratio_median_of_pairs": statistics.median(ratios), "slowdown_ratios_by_pair": ratios,
            "aa_ratio_median_of_pairs": statistics.median(aa), "aa_ratios_by_pair": aa}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=2000, help="users per variant (requests per block)")
    parser.add_argument("--blocks", type=int, default=8, help="blocks per variant, interleaved")
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--pairs", type=int, default=3, help="plain/sealed stream runs, alternating")
    parser.add_argument("--name", default="security_cost")
    args = parser.parse_args()
    load_before = load()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        rec = recommend_ab(Path(tmp) / "rec", users=args.users, blocks=args.blocks)
        load_mid = load()
        print(f"recommend done in {time.perf_counter() - started:.0f} s, load {load_mid}", flush=True)
        (Path(tmp) / "stream").mkdir()
        stream = stream_ab(Path(tmp) / "stream", events=args.events, pairs=args.pairs)
    load_after = load()
    rows: list[list[Any]] = [
        ["recommend p50 us (pooled)", rec["plain_p50_us"], rec["sealed_p50_us"], rec["p50_ratio_pooled"],
         rec["p50_ratio_median_of_blocks"], rec["aa_p50_ratio_median_of_blocks"]],
        ["recommend p99 us (pooled)", rec["plain_p99_us"], rec["sealed_p99_us"], rec["p99_ratio_pooled"],
         rec["p99_ratio_median_of_blocks"], rec["aa_p99_ratio_median_of_blocks"]],
        ["handler p50 us: no key check + plain vs key check + sealed", rec["handler"]["bare_p50_us"],
         rec["handler"]["secured_p50_us"], rec["handler"]["p50_ratio_pooled"],
         rec["handler"]["p50_ratio_median_of_blocks"], ""],
        ["handler p99 us: no key check + plain vs key check + sealed", rec["handler"]["bare_p99_us"],
         rec["handler"]["secured_p99_us"], rec["handler"]["p99_ratio_pooled"],
         rec["handler"]["p99_ratio_median_of_blocks"], ""],
        [f"stream drain, {args.events:,} events, events/s (median of {args.pairs})",
         stream["plain_median_events_per_s"], stream["sealed_median_events_per_s"],
         stream["plain_median_events_per_s"] / stream["sealed_median_events_per_s"],
         stream["slowdown_ratio_median_of_pairs"], stream["aa_ratio_median_of_pairs"]],
    ]
    report(args.name, f"Encryption at rest: plain vs sealed, interleaved (load {load_before[0]:.2f} -> "
                      f"{load_after[0]:.2f})",
           ["measure", "plain", "sealed", "sealed/plain cost (pooled)", "median of block ratios",
            "A/A control (plain again / plain), median"], rows,
           {"recommend": rec, "stream": stream, "loadavg_before": load_before, "loadavg_mid": load_mid,
            "loadavg_after": load_after, "seconds": round(time.perf_counter() - started, 1), "args": vars(args)})


if __name__ == "__main__":
    main()

"""Recommendation at scale: 1M users x 200k campaigns (384-dim), ANN vs exact, handler, HTTP, throughput.

    .venv/bin/python -m bench.bench_recommend            # full scale (first run ~3-4 min: data + index build)
    .venv/bin/python -m bench.bench_recommend --quick    # 100k users x 20k campaigns

One run reports, side by side: the index build; ANN p50/p99 and recall@10 against exact numpy search
(the same sampled user vectors); exact search's own latency; the handler's p50/p95/p99 in-process;
p50/p95/p99 over HTTP (``notify serve`` as a subprocess) at a fixed request rate from concurrent
clients (open loop: latency counts from each request's *scheduled* time, so a stall is not hidden);
and the maximum recommendations/s (in-process loop, HTTP closed loop, and batched ANN).
The vectors, the built index and the populated Store are cached under ``.notify/bench/`` and reused.
Only the users queried (``--populate``, default 20k) get Store rows; campaigns all do.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from bench.common import against_limit, report
from bench.scale_data import CATEGORIES, COUNTRIES, DEFAULT_CACHE, ScaleData, ScaleSpec, generate
from notify_core.clock import SYSTEM_CLOCK, utcnow
from notify_core.recommend.ann import DEFAULT_EFFORT
from notify_core.recommend.artefacts import LocalArtefactStore
from notify_core.recommend.index import (
    INFO_SCHEMA,
    IndexOptions,
    Manifest,
    build_index,
    current_version,
    exact_top_k,
    new_version,
    publish,
    read_manifest,
    save_version,
)
from notify_core.store import tables
from notify_core.store.sqlite import SqliteStore
from tests.servers import free_port, serve_admin_key, wait_healthy


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def product_of(campaign_row: int) -> str:
    """The product a synthetic campaign promotes: each product is promoted by at most 3 campaigns, as in a
    real catalogue (a product promoted by thousands of campaigns would make every buyer's repeat-purchase
    candidate set, and the request, thousands of campaigns long)."""
    return f"P{campaign_row // 3}"


def campaign_items(data: ScaleData, start: int, stop: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng([data.spec.seed, 9, start])
    u = rng.random((stop - start, 4))
    items = []
    for offset, row in enumerate(range(start, stop)):
        cluster = int(data.campaign_cluster[row])
        cid = data.campaign_id(row)
        r = u[offset]
        items.append({
            "pk": cid, "sk": tables.CAMPAIGN_SK, "campaign_id": cid, "name": f"campaign {row}",
            "category": CATEGORIES[cluster % len(CATEGORIES)], "product_ids": [product_of(row)],
            "priority": 1 + int(r[0] * 5), "status": "paused" if r[1] < 0.02 else "active",
            "start_date": "2020-01-01", "end_date": "2011-06-30" if r[2] < 0.02 else "2099-12-31",
            "target_countries": [COUNTRIES[int(r[3] * 100) % 3]] if r[3] < 0.05 else [],
            "cooldown_hours": 72,
        })
    return items


def ensure_index(data: ScaleData, artefacts: LocalArtefactStore, options: IndexOptions,
                 copurchase_neighbours: int = 0) -> tuple[str, float, bool]:
    """The cached version for this data set and options, or a fresh build (returns version, build s, cached).
    ``copurchase_neighbours``: ship a synthetic co-purchase map with that many neighbours a product."""
    tag = (f"{data.spec.name}-{options.kind}-{options.dtype}-lists{options.lists}-M{options.connectivity}"
           f"-efa{options.expansion_add}-v3" + (f"-co{copurchase_neighbours}" if copurchase_neighbours else ""))
    version = current_version(artefacts)
    manifest = read_manifest(artefacts, version) if version else None
    if manifest is not None and manifest.extra.get("tag") == tag:
        return manifest.version, manifest.build_seconds, True
    ids = [data.campaign_id(i) for i in range(data.spec.campaigns)]
    vectors = np.ascontiguousarray(data.campaigns)
    print(f"building the {options.kind} index over {len(ids):,} campaigns ({tag}) ...", flush=True)
    started = time.perf_counter()
    index = build_index(ids, vectors, options=options)
    seconds = time.perf_counter() - started
    rng = np.random.default_rng(data.spec.seed)
    popular_rows = [{"segment": seg, "rank": r, "campaign_id": data.campaign_id(int(c)), "score": float(200 - r)}
                    for seg in (*COUNTRIES, "*")
                    for r, c in enumerate(rng.choice(len(ids), 200, replace=False))]
    side = pl.DataFrame({"campaign_id": ids, "content_hash": ["-"] * len(ids),
                         "product_ids": [[product_of(i)] for i in range(len(ids))]})
    info = pl.DataFrame(campaign_items(data, 0, len(ids))).select("campaign_id", *INFO_SCHEMA).with_columns(
        pl.col("start_date", "end_date").str.to_date())
    side = side.join(info, on="campaign_id", how="left", maintain_order="left")
    built = utcnow(SYSTEM_CLOCK)
    manifest = Manifest(version=new_version([tag], now=built), size=len(ids), dim=data.spec.dim, kind=options.kind,
                        dtype=options.dtype, search_effort=options.search_effort or DEFAULT_EFFORT[options.kind],
                        params=index.params, model="synthetic", built_at=built.isoformat(),
                        build_seconds=round(seconds, 2), recall_passed=True, extra={"tag": tag})
    copurchase = synthetic_copurchase(data, copurchase_neighbours) if copurchase_neighbours else None
    save_version(artefacts, index, campaigns=side, popular=pl.DataFrame(popular_rows), manifest=manifest,
                 copurchase=copurchase)
    publish(artefacts, manifest.version)
    return manifest.version, seconds, False


def synthetic_copurchase(data: ScaleData, neighbours: int) -> pl.DataFrame:
    """Each product's ``neighbours`` co-purchased products, drawn from its campaign's taste cluster (the
    serving cost of the co-purchase path: its sums and the ranker's BM25 strength)."""
    from notify_core.recommend.index import COPURCHASE_SCHEMA

    rng = np.random.default_rng([data.spec.seed, 13])
    products = data.spec.campaigns // 3
    cluster = data.campaign_cluster[np.arange(products) * 3]
    order = np.argsort(cluster, kind="stable")
    bounds = np.searchsorted(cluster[order], np.arange(data.spec.clusters + 1))
    rows: dict[str, list[Any]] = {"product_id": [], "neighbour": [], "similarity": []}
    for p in range(products):
        c = int(cluster[p])
        pool = order[bounds[c]:bounds[c + 1]]
        picked = rng.choice(pool, size=min(neighbours, len(pool)), replace=False)
        rows["product_id"] += [f"P{p}"] * len(picked)
        rows["neighbour"] += [f"P{int(q)}" for q in picked]
        rows["similarity"] += rng.random(len(picked)).tolist()
    return pl.DataFrame(rows, schema=COPURCHASE_SCHEMA)


def ensure_store(data: ScaleData, data_dir: Path, users: list[int]) -> float:
    marker = data_dir / f"populated-v3-{data.spec.name}-{len(users)}"  # v3: the Store's rowid layout
    if marker.exists():
        return 0.0
    started = time.perf_counter()
    for stale in data_dir.glob("store.sqlite*"):
        stale.unlink()
    store = SqliteStore(data_dir / "store.sqlite")
    for start in range(0, data.spec.campaigns, 5000):
        store.table(tables.CAMPAIGNS).batch_put(campaign_items(data, start, min(start + 5000, data.spec.campaigns)))
    rng = np.random.default_rng([data.spec.seed, 11])
    order = np.argsort(data.campaign_cluster, kind="stable")
    bounds = np.searchsorted(data.campaign_cluster[order], np.arange(data.spec.clusters + 1))
    by_cluster = [order[bounds[c]:bounds[c + 1]] if bounds[c + 1] > bounds[c] else order[:1]
                  for c in range(data.spec.clusters)]
    for start in range(0, len(users), 2000):
        chunk = users[start : start + 2000]
        profiles, vectors, matrix = [], [], []
        for row in chunk:
            uid = data.user_id(row)
            cluster = int(data.user_cluster[row])
            profiles.append({"pk": uid, "sk": tables.PROFILE_SK, "user_id": uid,
                             "country": COUNTRIES[row % len(COUNTRIES)],
                             "opted_out_categories": [CATEGORIES[row % 12]] if row % 10 == 0 else []})
            vectors.append({"pk": f"user#{uid}", "sk": tables.VECTOR_SK, "entity_type": "user", "id": uid,
                            "vector": np.asarray(data.users[row], dtype="<f4").tobytes(), "dim": data.spec.dim,
                            "model": "synthetic", "content_hash": "-", "updated_at": "2024-01-01T00:00:00"})
            # the user bought 2 products that campaigns of their own taste cluster promote
            for campaign_row in rng.choice(by_cluster[cluster], size=2).tolist():
                product = product_of(int(campaign_row))
                matrix.append({"pk": uid, "sk": product, "user_id": uid, "product_id": product,
                               "order_count": int(rng.integers(1, 8))})
        store.table(tables.USERS).batch_put(profiles)
        store.table(tables.EMBEDDINGS).batch_put(vectors)
        store.table(tables.USER_PRODUCT).batch_put(matrix)
    store.close()
    marker.write_text("ok")
    return time.perf_counter() - started


class Connection:
    """A keep-alive HTTP/1.1 connection on raw asyncio streams: the load generator shares the server's
    2 cores, and httpx spends ~0.5 ms of CPU a request (as much as the server), which would measure the
    client. This costs ~50 us. GET only, Content-Length bodies only (what the gateway sends)."""

    api_key = ""  # set once `notify serve` has written its admin key (sent as X-API-Key)

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def get(self, path: str) -> tuple[int, bytes]:
        self.writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: {self.api_key}\r\n\r\n".encode())
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        body = await self.reader.readexactly(length)
        return status, body

    def close(self) -> None:
        self.writer.close()


def path_of(user_id: str) -> str:
    return f"/v1/users/{user_id}/recommendations"


SERVER_PIDS: dict[int, int] = {}  # port -> the `notify serve` process of :func:`serving` (its workers are its children)


@contextmanager
def serving(data_dir: Path, *, workers: int, env: Mapping[str, str] | None = None) -> Iterator[int]:
    """``notify serve --workers N`` on the data directory as a subprocess, healthy and keyed (the admin key set
    on :class:`Connection`); yields its port and stops it (SIGTERM, then kill) however the block ends."""
    port = free_port()
    notify = Path(sys.executable).with_name("notify")
    server = subprocess.Popen([str(notify), "serve", "--port", str(port), "--workers", str(workers)],
                              env={**os.environ, "NOTIFY_DATA_DIR": str(data_dir), **(env or {})},
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_healthy(server, f"http://127.0.0.1:{port}")
        Connection.api_key = serve_admin_key(data_dir)
        SERVER_PIDS[port] = server.pid
        yield port
    finally:
        SERVER_PIDS.pop(port, None)
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()


async def open_loop(port: int, paths: list[str], *, rate: float, seconds: float, max_conns: int) -> dict[str, Any]:
    """Requests scheduled at ``rate``; latency from each one's *scheduled* time (a stall shows as latency,
    not as a slower send rate). Failures are counted by status (or exception name)."""
    total = int(rate * seconds)
    latencies: list[float] = []
    failures: dict[str, int] = {}
    pool: asyncio.Queue[Connection] = asyncio.Queue()
    for _ in range(max_conns):
        pool.put_nowait(await Connection.open(port))

    async def one(i: int, scheduled: float) -> None:
        conn = await pool.get()
        try:
            status, _ = await conn.get(paths[i % len(paths)])
            if status == 200:
                latencies.append(time.perf_counter() - scheduled)
            else:
                failures[str(status)] = failures.get(str(status), 0) + 1
        except (OSError, asyncio.IncompleteReadError) as exc:
            failures[type(exc).__name__] = failures.get(type(exc).__name__, 0) + 1
            conn = await Connection.open(port)
        pool.put_nowait(conn)

    start = time.perf_counter() + 0.05
    tasks = []
    for i in range(total):
        scheduled = start + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i, scheduled)))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    while not pool.empty():
        pool.get_nowait().close()
    return {"latencies": latencies, "errors": sum(failures.values()), "failures": failures, "sent": total,
            "achieved_rps": len(latencies) / elapsed}


async def closed_loop(port: int, paths: list[str], *, clients: int, seconds: float) -> dict[str, Any]:
    """``clients`` keep-alive connections, each sending its next request when the last answered; every
    latency kept (p50/p99 of a saturated server)."""
    latencies: list[float] = []
    errors = 0
    stop_at = time.perf_counter() + seconds

    async def worker(k: int) -> None:
        nonlocal errors
        conn = await Connection.open(port)
        i = k
        while time.perf_counter() < stop_at:
            t = time.perf_counter()
            status, _ = await conn.get(paths[i % len(paths)])
            if status == 200:
                latencies.append(time.perf_counter() - t)
            else:
                errors += 1
            i += clients
        conn.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker(k) for k in range(clients)))
    elapsed = time.perf_counter() - started
    ms = [x * 1000 for x in latencies]
    return {"rps": len(latencies) / elapsed, "errors": errors, "p50": pct(ms, 50), "p99": pct(ms, 99)}


def ann_sweep(loaded: Any, queries: np.ndarray[Any, Any], truth_rows: np.ndarray[Any, Any],
              efforts: list[int]) -> dict[int, dict[str, float]]:
    """One query at a time, as serving searches: p50/p99 and recall@10 (exact set overlap) per effort."""
    out: dict[int, dict[str, float]] = {}
    for q in queries[:50]:  # warm the memory map
        loaded.index.search(q, 10)
    for effort in efforts:
        loaded.index.set_effort(effort)
        lat, hits = [], 0
        for i, q in enumerate(queries):
            t = time.perf_counter()
            found = loaded.index.search(q, 10)
            lat.append((time.perf_counter() - t) * 1000)
            hits += len(set(found.rows[0].tolist()) & set(truth_rows[i].tolist()))
        out[effort] = {"recall": hits / (10 * len(queries)), "p50": pct(lat, 50), "p99": pct(lat, 99)}
    return out


def main() -> None:  # noqa: PLR0915 - a linear script, read top to bottom
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="100k users x 20k campaigns")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--populate", type=int, default=20_000)
    parser.add_argument("--ivf", default="8,16,32", help="IVF lists probed to sweep; serving uses the smallest "
                                                         "reaching recall@10 0.99")
    parser.add_argument("--hnsw", default="128,512", help="HNSW ef to sweep (empty: skip the HNSW comparison)")
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--http-seconds", type=float, default=20.0)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="gateway worker processes")
    parser.add_argument("--batch-users", type=int, default=10_000)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    args = parser.parse_args()
    spec = ScaleSpec(users=100_000, campaigns=20_000) if args.quick else ScaleSpec()
    data = generate(spec, cache=args.cache)
    data_dir = args.cache / f"recommend-{spec.name}"
    rng = np.random.default_rng(spec.seed + 1)
    populate = min(args.populate, spec.users)
    users = sorted(rng.choice(spec.users, size=populate, replace=False).tolist())
    populate_s = ensure_store(data, data_dir, users)
    rows: list[list[Any]] = []
    extra: dict[str, Any] = {"spec": spec.name, "store_populate_s": round(populate_s, 1)}

    # 1. ANN vs exact on the same sampled user vectors, for each index kind ---------------------------
    from notify_core.recommend.index import load_version

    campaigns = np.ascontiguousarray(data.campaigns)
    q_rows = rng.choice(users, size=min(args.queries, len(users)), replace=False)
    queries = np.ascontiguousarray(data.users[np.sort(q_rows)])
    truth_rows = exact_top_k(campaigns, queries, 10)
    sweeps: dict[str, dict[int, dict[str, float]]] = {}
    artefacts: dict[str, LocalArtefactStore] = {}
    versions: dict[str, str] = {}
    for kind, efforts_arg in (("ivf", args.ivf), ("hnsw", args.hnsw)):
        efforts = [int(x) for x in str(efforts_arg).split(",") if x]
        if not efforts:
            continue
        artefacts[kind] = LocalArtefactStore(data_dir / ("artefacts" if kind == "ivf" else f"artefacts-{kind}"))
        version, build_s, cached = ensure_index(data, artefacts[kind], IndexOptions(kind=kind))
        versions[kind] = version
        extra[f"{kind}_build_s"] = round(build_s, 1)
        extra[f"{kind}_build_cached"] = cached
        loaded = load_version(artefacts[kind], version)
        sweeps[kind] = ann_sweep(loaded, queries, truth_rows, efforts)
        label = (f"faiss IVF fp16, {loaded.manifest.params.get('lists')} lists" if kind == "ivf"
                 else f"usearch HNSW f16 M{loaded.manifest.params.get('connectivity')}")
        for effort, r in sweeps[kind].items():
            knob = "probe" if kind == "ivf" else "ef"
            rows.append([f"ANN {label}, {knob}={effort} (one query)", r["p50"], "", r["p99"],
                         f"recall@10 {r['recall']:.4f}", "p99 <= 1 ms, recall >= 0.99"])
        del loaded
    serving_effort = next((e for e, r in sweeps["ivf"].items() if r["recall"] >= 0.99), max(sweeps["ivf"]))
    extra.update({"serving_kind": "ivf", "serving_effort": serving_effort, "ann_sweeps": sweeps,
                  "index_versions": versions})
    exact_lat = []
    for q in queries[:100]:
        t = time.perf_counter()
        scores = campaigns @ q
        np.argpartition(-scores, 9)[:10]
        exact_lat.append((time.perf_counter() - t) * 1000)
    rows.append(["exact numpy search (one query)", pct(exact_lat, 50), "", pct(exact_lat, 99), "recall 1.0",
                 "reference (~12 ms)"])

    # 2. handler in-process, and the batched path ---------------------------------------------------
    os.environ["NOTIFY_DATA_DIR"] = str(data_dir)
    from lambdas import get_recommended_campaigns as handler_module
    from notify_core.recommend.recommender import Recommender
    from notify_core.recommend.serving import IndexHolder

    store = SqliteStore(data_dir / "store.sqlite")
    recommender = Recommender(store=store, holder=IndexHolder(artefacts["ivf"], search_effort=serving_effort),
                              clock=SYSTEM_CLOCK)
    handler_module.use_recommender(recommender)
    user_ids = [data.user_id(int(r)) for r in users]
    for uid in user_ids[:2000]:  # warm-up: the mapped pages, the Store's page cache
        handler_module.handler({"user_id": uid}, None)
    h_lat = []
    for uid in user_ids[2000:2000 + 3000]:
        t = time.perf_counter()
        reply = handler_module.handler({"user_id": uid}, None)
        h_lat.append((time.perf_counter() - t) * 1000)
        assert "recommendations" in reply and len(reply["recommendations"]) == 10, reply
    rows.append(["handler in-process (direct invocation)", pct(h_lat, 50), pct(h_lat, 95), pct(h_lat, 99),
                 f"{len(h_lat)} requests", "p99 <= 10 ms"])
    loop_done, loop_started = 0, time.perf_counter()
    while time.perf_counter() - loop_started < 5:
        handler_module.handler({"user_id": user_ids[loop_done % len(user_ids)]}, None)
        loop_done += 1
    inproc_rps = loop_done / (time.perf_counter() - loop_started)
    batch_ids = user_ids[: args.batch_users]
    t = time.perf_counter()
    batched = recommender.recommend_many(batch_ids, limit=10)
    batch_rps = len(batched) / (time.perf_counter() - t)
    assert len(batched) == len(batch_ids) and all(len(r.items) == 10 for r in batched)
    handler_module.use_recommender(None)
    store.close()

    # 3. over HTTP: `notify serve` as a subprocess --------------------------------------------------
    with serving(data_dir, workers=args.workers, env={"NOTIFY_RECOMMEND_EFFORT": str(serving_effort)}) as port:
        paths = [path_of(u) for u in user_ids]
        asyncio.run(closed_loop(port, paths, clients=8, seconds=5))  # warm-up (cold starts, caches)
        result = asyncio.run(open_loop(port, paths, rate=args.rate, seconds=args.http_seconds,
                                       max_conns=args.clients))
        http_lat = [x * 1000 for x in result["latencies"]]
        rows.append([f"HTTP at {args.rate:.0f} req/s, open loop, <= {args.clients} connections, "
                     f"{args.workers} workers", pct(http_lat, 50), pct(http_lat, 95), pct(http_lat, 99),
                     f"{result['sent']} sent, {result['errors']} errors, {result['achieved_rps']:.0f} req/s",
                     "p95 <= 20 ms, p99 <= 40 ms"])
        # the limit, same server, same connections, same generator: the trivial route on the same stack.
        # wrk (C) when installed: the Python generator shares the 2 cores with the workers.
        from bench import wrk

        if wrk.available():
            key, pid = serve_admin_key(data_dir), SERVER_PIDS[port]
            closed = wrk.closed_loop(port, paths, api_key=key, connections=args.clients, seconds=10, server_pid=pid)
            trivial = wrk.closed_loop(port, ["/healthz"], api_key=key, connections=args.clients, seconds=10,
                                      server_pid=pid)
        else:
            closed = asyncio.run(closed_loop(port, paths, clients=args.clients, seconds=10)) | {"generator": "python"}
            trivial = asyncio.run(closed_loop(port, ["/healthz"], clients=args.clients, seconds=10)) \
                | {"generator": "python"}
    rows.append(["max recommendations/s: batched (recommend_many: 1,000-user search blocks, 1 thread)", "", "", "",
                 f"{batch_rps:,.0f}/s ({len(batched):,} users)", ">= 3,000/s"])
    rows.append(["max recommendations/s: handler loop, 1 thread", "", "", "", f"{inproc_rps:,.0f}/s", ""])
    rows.append([f"the limit: trivial route /healthz, closed loop ({trivial['generator']}), {args.clients} clients, "
                 f"{args.workers} workers", trivial["p50"], "", trivial["p99"],
                 f"{trivial['rps']:,.0f}/s ({trivial['errors']} errors)", ""])
    rows.append([f"max recommendations/s: HTTP closed loop ({closed['generator']}), {args.clients} clients, "
                 f"{args.workers} workers", closed["p50"], "", closed["p99"],
                 f"{closed['rps']:,.0f}/s ({closed['errors']} errors)", ""])
    extra.update({"exact_p50_ms": pct(exact_lat, 50), "handler_p50_ms": pct(h_lat, 50),
                  "handler_p95_ms": pct(h_lat, 95), "handler_p99_ms": pct(h_lat, 99),
                  "http_p50_ms": pct(http_lat, 50), "http_p95_ms": pct(http_lat, 95), "http_p99_ms": pct(http_lat, 99),
                  "http_errors": result["errors"], "http_achieved_rps": result["achieved_rps"],
                  "inprocess_rps": inproc_rps, "batched_rps": batch_rps, "http_closed_loop_rps": closed["rps"],
                  "workers": args.workers, "trivial_route_rps": trivial["rps"], "closed": closed, "trivial": trivial,
                  "generator": closed["generator"],
                  "limits": [against_limit(path="recommendations over HTTP, synthetic data (closed loop)",
                                           figure=closed["rps"], limit=trivial["rps"], unit="req/s", target=2500.0)],
                  "note": "2 shared cores; the load generator runs on the same machine as the server"})
    title = (f"Recommendation at {spec.users:,} users x {spec.campaigns:,} campaigns ({spec.dim}-dim), "
             f"serving: IVF probing {serving_effort} lists")
    report("recommend" if not args.quick else "recommend_quick", title,
           ["measure", "p50 ms", "p95 ms", "p99 ms", "detail", "target"], rows, extra)


if __name__ == "__main__":
    main()

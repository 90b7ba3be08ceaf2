"""The cost of the handler edge and of API-key authentication on recommendation latency.

1. In-process, the recommendations handler with an API Gateway v2 event, with and without the key check,
   in the same run, interleaved in blocks (so drift and caches hit both alike): p50 / p99.
2. Over HTTP through the local gateway (in a thread, raw keep-alive connections), one route,
   ``GET /v1/users/{id}/recommendations``, closed loop: p50 / p99 and requests/s.

Runs on the small test world (60 campaigns, 3 users): it measures the edge, not the ANN search. It also
runs on code without the edge (the base commit: it sends the key, which old code ignores), which is how
the before / after in notes/h14edge.md was taken: ``PYTHONPATH=<old checkout> python bench/bench_edge.py``.

    python -m bench.bench_edge [--requests 3000] [--http-seconds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.recommend.conftest import make_world
from tests.servers import local_gateway


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def v2_event(user_id: str, token: str) -> dict[str, Any]:
    path = f"/v1/users/{user_id}/recommendations"
    return {"version": "2.0", "routeKey": "GET /v1/users/{user_id}/recommendations", "rawPath": path,
            "rawQueryString": "", "headers": {"x-api-key": token, "host": "bench"},
            "pathParameters": {"user_id": user_id},
            "requestContext": {"requestId": "bench", "stage": "$default", "routeKey": "x",
                               "http": {"method": "GET", "path": path, "sourceIp": "127.0.0.1",
                                        "protocol": "HTTP/1.1", "userAgent": "bench"}},
            "isBase64Encoded": False}


def install_auth(store: Any) -> tuple[str, Any, Any]:
    """(token, keyring, runtime module) where the edge exists; ("", None, None) on code without it."""
    try:
        from lambdas import runtime
        from notify_core.clock import SYSTEM_CLOCK
        from notify_core.security.keys import KeyRing
    except ImportError:
        return "", None, None
    keyring = KeyRing(store, pepper=b"p" * 32, clock=SYSTEM_CLOCK)
    _key, token = keyring.create(name="bench", scopes=["recommendations:read"], rate_per_minute=10_000_000,
                                 actor="bench", source="bench")
    runtime.use_auth(keyring)
    return token, keyring, runtime


async def http_closed_loop(port: int, path: str, token: str, *, seconds: float, clients: int) -> dict[str, Any]:
    request = (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: {token}\r\n\r\n").encode()
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    deadline = time.perf_counter() + seconds

    async def one() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(int(line[15:]) for line in head.split(b"\r\n") if line[:15].lower() == b"content-length:")
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            status = int(head[9:12])
            statuses[status] = statuses.get(status, 0) + 1
        writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(clients)))
    return {"latencies": latencies, "statuses": statuses, "rps": len(latencies) / (time.perf_counter() - started)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--http-seconds", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--name", default="edge")
    args = parser.parse_args()

    from lambdas import get_recommended_campaigns as recs

    with tempfile.TemporaryDirectory() as tmp:
        world = make_world(Path(tmp))
        from notify_core.recommend.recommender import Recommender
        from notify_core.recommend.serving import IndexHolder

        # the serving holder (refresh every 2 s), not the test world's (which re-reads on every call)
        recs.use_recommender(Recommender(store=world.store, holder=IndexHolder(world.artefacts), clock=world.clock))
        token, keyring, runtime = install_auth(world.store)
        event = v2_event("u1", token)
        for _ in range(500):
            assert recs.handler(event, None)["statusCode"] == 200
        with_auth: list[float] = []
        without: list[float] = []
        block = 100
        for i in range(args.requests // block):
            auth_on = i % 2 == 0
            if runtime is not None:
                runtime.use_auth(keyring if auth_on else None, insecure=not auth_on)
            sink = with_auth if auth_on or runtime is None else without
            for _ in range(block):
                t = time.perf_counter()
                recs.handler(event, None)
                sink.append((time.perf_counter() - t) * 1e6)
        if runtime is not None:
            runtime.use_auth(keyring)
        rows: list[list[Any]] = [["in-process handler, v2 event, with key check", pct(with_auth, 50),
                                  pct(with_auth, 99), len(with_auth)]]
        if without:
            rows.append(["in-process handler, v2 event, no key check", pct(without, 50), pct(without, 99),
                         len(without)])
        with local_gateway() as url:
            port = int(url.rsplit(":", 1)[1])
            asyncio.run(http_closed_loop(port, "/v1/users/u1/recommendations", token, seconds=1, clients=2))
            http = asyncio.run(http_closed_loop(port, "/v1/users/u1/recommendations", token,
                                                seconds=args.http_seconds, clients=args.clients))
        lat = [x * 1e6 for x in http["latencies"]]
        rows.append([f"HTTP via the local gateway, {args.clients} clients closed loop ({http['rps']:.0f} req/s, "
                     f"statuses {http['statuses']})", pct(lat, 50), pct(lat, 99), len(lat)])
        recs.use_recommender(None)
        world.store.close()
    extra = {"auth_overhead_p50_us": (pct(with_auth, 50) - pct(without, 50)) if without else None,
             "auth_overhead_p99_us": (pct(with_auth, 99) - pct(without, 99)) if without else None,
             "http_rps": http["rps"], "mean_with_auth_us": statistics.fmean(with_auth)}
    from bench.common import report

    report(args.name, "Recommendation handler edge: latency in microseconds",
           ["measure", "p50 us", "p99 us", "requests"], rows, extra)


if __name__ == "__main__":
    main()

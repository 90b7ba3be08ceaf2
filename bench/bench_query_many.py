"""DynamoDB ``query_many``: an hour of the operations report's schedule partitions (60 minutes x 16 shards).

    .venv/bin/python -m bench.bench_query_many        # ~1 min: starts DynamoDB Local itself

DynamoDB has no multi-partition query, so :meth:`DynamoTable.query_many` sends one Query per partition, 16
in flight on the store's threads. What limits a sequence of small queries is the round trip, which on
loopback is ~0 and on a region ~4 ms or more; the loopback figures are CPU-bound on this 2-core box (the
client's request building and the DynamoDB Local JVM share the cores). So each case runs twice: on bare
loopback, and with a 4 ms round trip added as the client waits it (a sleep before each request is sent, on
the requesting thread, as a network would make it wait). The limit beside each figure: the same partitions
read one Query after another, measured in the same run. Medians of ``--repeats``.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

from bench.common import median, report
from notify_core.store import tables
from notify_core.store.dynamodb import DynamoStore
from tests import servers

PARTITIONS = 960  # an hour of the day's schedule partitions (the report reads a day as 24 of these)
ROUND_TRIP_S = 0.004


def _measure(store: DynamoStore, pks: list[str], *, repeats: int) -> tuple[float, float]:
    table = store.table(tables.SCHEDULES)
    one_by_one: list[float] = []
    many: list[float] = []
    for _ in range(repeats):
        started = time.perf_counter()
        expected = {pk: table.query(pk) for pk in pks}
        one_by_one.append(time.perf_counter() - started)
        started = time.perf_counter()
        got = table.query_many(pks)
        many.append(time.perf_counter() - started)
        if got != expected:
            raise AssertionError("query_many answered differently from one query per partition")
    return median(one_by_one), median(many)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "local")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "local")
    server = servers.DynamoDBLocal.start()
    rows: list[list[Any]] = []
    results: dict[str, dict[str, float]] = {}
    try:
        store = DynamoStore(region="us-east-1", endpoint_url=server.endpoint, table_prefix="bench_qm_")
        table = store.table(tables.SCHEDULES)
        pks = [tables.schedule_pk(f"2026112309{m:02d}", shard) for m in range(60) for shard in range(16)]
        # a few items in one partition of seven, the rest empty (a small day's shape)
        table.batch_put([{"pk": pk, "sk": f"n{i}", "status": "sent"} for i, pk in enumerate(pks) if i % 7 == 0])
        _measure(store, pks[:100], repeats=1)  # warm the JVM and the connection pool
        for case, delay in (("loopback", 0.0), ("loopback + 4 ms round trip", ROUND_TRIP_S)):
            if delay:
                store.client.meta.events.register("before-send.dynamodb.*", lambda **_: time.sleep(ROUND_TRIP_S))
            one_by_one, many = _measure(store, pks, repeats=args.repeats)
            results[case] = {"one_by_one_s": one_by_one, "query_many_s": many, "speedup": one_by_one / many}
            rows.append([case, PARTITIONS, one_by_one, many, one_by_one / many])
        store.close()
    finally:
        server.stop()
    report("query_many", f"DynamoDB query_many, {PARTITIONS} partitions (medians of {args.repeats})",
           ["case", "partitions", "one Query after another (s)", "query_many (s)", "speed-up"], rows,
           {"cases": results, "round_trip_s": ROUND_TRIP_S, "threads": 16})


if __name__ == "__main__":
    main()

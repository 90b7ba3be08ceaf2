"""The cost of issue 19's reads and of the send-time preference check, on a SQLite Store (and, with
``--dynamodb``, the reads on DynamoDB Local too, started for the run).

1. ``user_history`` (``GET /v1/users/{id}/notifications``): a user with 30 days x 5 notifications, each
   with its deliveries row and, for a third, an open or click marker: the first page (20) and a cursor walk.
2. ``daily_stats`` (``GET /v1/campaigns/{id}/stats``): 30 days of counters.
3. ``suppression_reason``: the worker's per-send check (the profile is already read per send).

    python -m bench.bench_user_routes [--repeats 50] [--dynamodb]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from bench.common import median, report
from notify_core.campaigns.stats import daily_stats
from notify_core.clock import ManualClock
from notify_core.history import user_history
from notify_core.preferences import suppression_reason
from notify_core.store import tables
from notify_core.store.port import Store
from notify_core.store.sqlite import SqliteStore

NOW = datetime(2026, 11, 24, 12, tzinfo=UTC)


def seed(store: Store, days: int = 30, per_day: int = 5) -> None:
    store.table(tables.USERS).put({"pk": "u", "sk": tables.PROFILE_SK, "user_id": "u"})
    store.table(tables.CAMPAIGNS).put({"pk": "c0", "sk": tables.CAMPAIGN_SK, "campaign_id": "c0"})
    plans, deliveries, marks, stats = [], [], [], []
    for d in range(days):
        day = (NOW.date() - timedelta(days=d)).isoformat()
        stats.append({"pk": "c0", "sk": day, "sent": 100, "opened": 30, "clicked": 12, "failed": 1, "planned": 101})
        for k in range(per_day):
            nid = f"n{d:03d}{k}"
            at = f"{day}T{8 + 2 * k:02d}:00:00Z"
            plans.append({"pk": "u", "sk": tables.plan_sk(day, nid), "notification_id": nid, "campaign_id": "c0",
                          "plan_day": day, "send_at": at, "status": "sent"})
            deliveries.append({"pk": nid, "sk": "attempt#1", "outcome": "sent", "attempted_at": at,
                               "delivered_at": at})
            if k % 3 == 0:
                marks.append({"pk": nid, "sk": "click" if k else "open", "ts": at})
    for name, rows in ((tables.PLANS, plans), (tables.DELIVERIES, deliveries),
                       (tables.NOTIFICATION_INTERACTIONS, marks), (tables.CAMPAIGN_STATS, stats)):
        store.table(name).batch_put(rows)


def per_call_ms(fn: object, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append((time.perf_counter() - started) * 1000)
    return median(times)


def reads(store: Store, repeats: int) -> dict[str, float]:
    """Median ms of the history's first page, its whole cursor walk and 30 days of stats on ``store``."""

    def walk() -> int:
        pages, cursor = 0, None
        while True:
            page = user_history(store, "u", limit=20, cursor=cursor)
            pages += 1
            cursor = page.next_cursor
            if cursor is None:
                return pages

    return {
        "history: first page (20 of 150)": per_call_ms(lambda: user_history(store, "u", limit=20), repeats),
        "history: whole walk (8 pages)": per_call_ms(walk, max(5, repeats // 5)),
        "stats: 30 days": per_call_ms(lambda: daily_stats(store, "c0", since=None, until=None,
                                                          today=date(2026, 11, 24)), repeats),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--dynamodb", action="store_true", help="the reads on DynamoDB Local as well")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteStore(Path(tmp) / "s.sqlite", clock=ManualClock(NOW))
        seed(store)
        sqlite = reads(store, args.repeats)
        store.close()
    dynamo: dict[str, float] = {}
    if args.dynamodb:
        from tests.servers import dynamodb_local, scratch_dynamo_store

        with dynamodb_local(timeout=60) as endpoint, scratch_dynamo_store(endpoint, name="bench_user") as table:
            seed(table)
            dynamo = reads(table, max(5, args.repeats // 5))
    user = {"opted_out_categories": ["toys", "party"], "channels": ["push"], "unsubscribed": False,
            "quiet_start_hour": 22, "quiet_end_hour": 7, "timezone": "Europe/Berlin"}
    campaign = {"category": "kitchen"}
    at = NOW.timestamp()
    checks = {
        "send-time check (per send)": per_call_ms(lambda: suppression_reason(user, campaign), args.repeats * 100),
        "send-time check with quiet hours in a zone (per send)":
            per_call_ms(lambda: suppression_reason(user, campaign, at=at), args.repeats * 100),
    }
    rows = [[what, round(ms, 3), round(dynamo[what], 3) if what in dynamo else "-"] for what, ms in sqlite.items()]
    rows += [[what, round(ms, 5), "-"] for what, ms in checks.items()]
    report("user_routes", "Issue 19 reads (median ms per call)", ["what", "SQLite ms", "DynamoDB Local ms"], rows, {})


if __name__ == "__main__":
    main()

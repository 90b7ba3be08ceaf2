"""Erasure at scale: the HTTP route's bounded answer, and the sweep's cost per user as the queue grows.

An erasure walks every table not keyed by user (schedules, deliveries, dedupe, the event ledger, markers...)
whole: one walk costs the same for one user or for a hundred. The benchmark fills a SQLite Store with
``--users`` users (plans, schedules, deliveries, dedupe, ledger and marker items: 27 items a user) and
measures, beside the raw walk of those tables (the limit: what one pass cannot go under):

* one erasure run to the end (``notify users delete`` without compaction);
* the route's erasure with a budget of ``--budget`` s: how long before it answers, and whether it had to
  leave the rest to the sweep (202);
* the sweep of 1, 10 and 100 queued erasures: wall, and wall per user.

    .venv/bin/python -m bench.bench_erasure [--users 100000] [--budget 1.0]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import against_limit, median, report, timed
from notify_core.clock import ManualClock
from notify_core.erasure import erase_user, sweep_erasures
from notify_core.store import tables
from notify_core.store.sqlite import SqliteStore

NOW = 1_800_000_000.0
_WALKED = [name for name, rule in tables.USER_ITEMS.items()
           if rule not in (tables.UserKey.PK, tables.UserKey.VECTOR_PK)]


def _user(i: int) -> str:
    return f"u{i:08d}"


def fill(store: SqliteStore, *, users: int, chunk: int = 20_000) -> int:
    """``users`` users, each with a profile, 3 purchases, 5 plans and their 5 schedule items, 5 deliveries,
    5 dedupe records, 2 ledger events and a tracking marker; returns the items written."""
    written = 0
    for start in range(0, users, chunk):
        rows: dict[str, list[dict[str, Any]]] = {}
        for i in range(start, min(start + chunk, users)):
            u = _user(i)
            rows.setdefault(tables.USERS, []).append({"pk": u, "sk": tables.PROFILE_SK, "user_id": u})
            for k in range(3):
                rows.setdefault(tables.PURCHASES, []).append({"pk": u, "sk": f"2031-01-0{k + 1}#o{k}", "user_id": u})
            for k in range(5):
                nid = f"{i:08x}{k:02x}"
                minute = f"2031-01-02T{k + 8:02d}:00"
                common = {"user_id": u, "notification_id": nid}
                rows.setdefault(tables.PLANS, []).append({"pk": u, "sk": f"2031-01-02#{nid}", **common})
                rows.setdefault(tables.SCHEDULES, []).append(
                    {"pk": tables.schedule_pk(minute, i % 16), "sk": tables.schedule_sk(u, nid), **common})
                rows.setdefault(tables.DELIVERIES, []).append({"pk": nid, "sk": "attempt#1", **common})
                rows.setdefault(tables.DEDUPE, []).append({"pk": nid, "sk": tables.DEDUPE_SK, **common})
            for k in range(2):
                rows.setdefault(tables.EVENTS, []).append({"pk": f"e{i:08x}{k}", "sk": tables.EVENT_SK, "user_id": u})
            rows.setdefault(tables.NOTIFICATION_INTERACTIONS, []).append({"pk": f"{i:08x}00", "sk": "click"})
        for name, items in rows.items():
            written += store.table(name).batch_put(items)
    return written


def raw_walk(store: SqliteStore) -> float:
    """The limit: one walk of every table the erasure cannot query by user, reading each item."""
    seconds, _ = timed(lambda: sum(1 for name in _WALKED for _ in store.table(name).scan()))
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--budget", type=float, default=1.0, help="the route's budget in seconds for this run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteStore(Path(tmp) / "store.sqlite", clock=ManualClock(NOW))
        store.tune_for_bulk_writes()
        fill_s, items = timed(lambda: fill(store, users=args.users))
        walks = [raw_walk(store) for _ in range(3)]
        walk = median(walks)
        next_user = iter(range(args.users))
        clock = ManualClock(NOW)

        inline_s = median([timed(lambda: erase_user(_user(next(next_user)), store=store, compact=False,
                                                    clock=clock))[0] for _ in range(3)])
        started = time.monotonic()
        routed = erase_user(_user(next(next_user)), store=store, compact=False, clock=clock,
                            deadline=started + args.budget)
        answered_s = time.monotonic() - started
        rows: list[list[Any]] = [
            ["raw walk of the tables not keyed by user (limit)", 0, walk, walk, ""],
            ["one erasure to the end", 1, inline_s, inline_s, ""],
            [f"route, budget {args.budget:g} s", 1, answered_s, answered_s, "202 pending" if routed.pending
             else "200 done"],
        ]
        sweeps: dict[int, float] = {}
        for n in (1, 10, 100):
            for _ in range(n):
                erase_user(_user(next(next_user)), store=store, compact=False, clock=clock, deadline=time.monotonic())
            seconds, swept = timed(lambda: sweep_erasures(store, compact=False))
            assert swept.users_finished == n + (1 if routed.pending and n == 1 else 0)
            sweeps[n] = seconds
            rows.append([f"sweep of {swept.users_finished} queued", swept.users_finished, seconds,
                         seconds / swept.users_finished, ""])
        store.close()
    limits = [
        against_limit(path="one erasure to the end vs one raw walk (s)", figure=inline_s, limit=walk, unit="s",
                      target=round(walk * 3, 2), higher_is_better=False),
        against_limit(path=f"route answer vs its budget {args.budget:g} s", figure=answered_s, limit=args.budget,
                      unit="s", target=args.budget * 1.5, higher_is_better=False),
        against_limit(path="sweep of 100 per user vs one erasure to the end (s)", figure=sweeps[100] / 100,
                      limit=inline_s, unit="s", target=round(inline_s / 10, 3), higher_is_better=False),
    ]
    report("erasure", f"Erasure, {args.users:,} users ({items:,} items, filled in {fill_s:.0f} s)",
           ["case", "users", "wall s", "s a user", "answer"], rows,
           {"users": args.users, "items": items, "budget_s": args.budget, "raw_walks_s": walks, "limits": limits})


if __name__ == "__main__":
    main()

"""How many of the demo's users a day's plan reaches, from the recommender's candidates.

    .venv/bin/python -m bench.plan_coverage                      # the demo store (`make demo` / bench data)
    .venv/bin/python -m bench.plan_coverage --data-dir DIR --day 2026-12-01

The planner sends only candidates with relevance > 0 (``scheduling.models.CANDIDATES``). The learned ranker
scores a logit, so the relevance it hands the planner is its probability (``Recommender.relevance``). This
plans the same day twice from the same candidates, in memory (nothing is written): once with that
probability, once with the raw logit the planner was given before session 12, and prints notifications and
users reached by each. Not a speed benchmark: a coverage figure, read beside the users the plan covers.
"""

from __future__ import annotations

import argparse
import os
from datetime import UTC, date, datetime, time
from pathlib import Path

import polars as pl

from bench.bench_recommend_real import DEFAULT_DIR, ensure_demo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DIR)
    parser.add_argument("--day", type=date.fromisoformat, default=date(2026, 12, 1),
                        help="the plan day (planned whole, from its start: no 'now' inside it)")
    args = parser.parse_args()
    data_dir = args.data_dir.resolve()
    ensure_demo(data_dir)
    os.environ["NOTIFY_DATA_DIR"] = str(data_dir)
    from bench.common import report
    from notify_core.lake import lake_for
    from notify_core.recommend.artefacts import build_artefact_store
    from notify_core.scheduling import service
    from notify_core.scheduling.candidates import eligible_campaigns
    from notify_core.scheduling.planner import plan_users
    from notify_core.settings import load_settings
    from notify_core.store.factory import build_store

    settings = load_settings()
    lake, store = lake_for(settings), build_store(settings)
    try:
        now = datetime.combine(args.day, time(0), tzinfo=UTC)
        users = service.users_from_lake(lake)
        campaigns = eligible_campaigns(service.campaigns_from_lake(lake), args.day)
        candidates, source = service.candidates_for(
            store, users["user_id"].to_list(), campaigns["campaign_id"].to_list(),
            artefacts=build_artefact_store(settings), fallback=service.lake_cosine(lake), k=20, now=now)
    finally:
        store.close()
    logit = candidates.with_columns((pl.col("relevance") / (1 - pl.col("relevance"))).log().alias("relevance"))
    rows = []
    for name, frame in (("the ranker's probability (Recommender.relevance)", candidates),
                        ("the raw logit (before session 12)", logit)):
        stats = plan_users(frame, users, campaigns, plan_day=args.day).stats
        rows.append([name, frame.height, stats.notifications, stats.users_planned, stats.users,
                     f"{stats.users_planned / max(stats.users, 1):.1%}"])
    report("plan_coverage", f"A day's plan from the {source}'s candidates, {args.day} (demo data)",
           ["relevance given to the planner", "candidates", "notifications", "users reached", "users",
            "share reached"], rows, {"day": args.day.isoformat(), "source": source})


if __name__ == "__main__":
    main()

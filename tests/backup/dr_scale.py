"""A data directory for the DR drill at N users (1M for the scale run), generated cheaply.

Per user what a production Store holds the day before sending: the profile (``users``), tomorrow's plan
(``plans``) and its schedule entry (``schedules``), written by the delivery module's own generator
(:func:`notify_core.delivery.synthetic.seed_due`, one owner of those row shapes) in chunks of 100k, with
send times spread over the next day so the worker has nothing of them to deliver during the drill; plus
the users' lake file. 1M users: 3M Store rows, about 1.2 GB, ~80 s to write here.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from notify_core.clock import Clock, utcnow
from notify_core.delivery.synthetic import seed_due
from notify_core.store.sqlite import SqliteStore

CHUNK = 100_000


def seed_users_dir(data: Path, *, users: int, clock: Clock) -> Path:
    """Fill ``data`` (store.sqlite and lake/users.parquet) with ``users`` users; returns ``data``."""
    import polars as pl

    data.mkdir(parents=True, exist_ok=True)
    store = SqliteStore(data / "store.sqlite")
    start = utcnow(clock) + timedelta(days=1)
    try:
        ids: list[str] = []
        for chunk, low in enumerate(range(0, users, CHUNK)):
            n = min(CHUNK, users - low)
            items = seed_due(store, n=n, start=start, spread_s=86_400,
                             user_prefix=f"s{chunk:03d}", with_plans=True)
            ids += [item["user_id"] for item in items]
    finally:
        store.close()
    lake = data / "lake" / "users"
    lake.mkdir(parents=True, exist_ok=True)
    pl.DataFrame({"user_id": ids, "country": ["GB"] * len(ids)}).write_parquet(lake / "users.parquet")
    return data


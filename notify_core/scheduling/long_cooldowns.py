"""Cooldowns longer than the planner's history: judged by the user's ``sends``.

The planner's history is the last :data:`~notify_core.scheduling.models.HISTORY_DAYS` of ``plans`` items,
so a 20-day cooldown was forgotten after 7. The delivery worker also writes every send to ``sends`` (what
the recommender judges cooldowns by), kept as long as the longest cooldown allowed
(:data:`notify_core.bounds.MAX_COOLDOWN_HOURS`); the sends of the campaigns whose cooldown reaches further
back are read from there. Only the cooldown sees them: they are older than fatigue's window and any gap.

A module of its own, read by the plan run only: a Lambda's role follows what it imports (``notify
templates``), and the tracking functions reach :mod:`.store` for the fatigue refresh, not this.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, timedelta

import polars as pl

from notify_core.scheduling.models import HISTORY, HISTORY_DAYS
from notify_core.scheduling.store import parse_utc
from notify_core.store import tables
from notify_core.store.port import KeyRange, Store


def older_sends(store: Store, user_ids: Sequence[str], *, plan_day: date, cooldowns: Mapping[str, int],
                lookback_days: int = HISTORY_DAYS) -> pl.DataFrame:
    """History rows (models.HISTORY) of ``user_ids``' sends from before the ``lookback_days`` of plans that a
    campaign's cooldown (``cooldowns``: campaign id -> hours) still covers on ``plan_day``. One
    many-partition read of ``sends``, and none when no cooldown is that long."""
    long = {cid: hours for cid, hours in cooldowns.items() if hours > lookback_days * 24}
    if not long or not user_ids:
        return pl.DataFrame(schema=HISTORY)
    end = datetime.combine(plan_day - timedelta(days=lookback_days), datetime.min.time(), tzinfo=UTC)
    # a send blocks until sent + cooldown; the plan day's first local midnight is 14 h before its UTC one
    since = datetime.combine(plan_day, datetime.min.time(), tzinfo=UTC) - timedelta(hours=14 + max(long.values()))
    found = store.table(tables.SENDS).query_many(
        user_ids, key_range=KeyRange(start=tables.time_sk(since), end=tables.time_sk(end)))
    rows = [{"user_id": uid, "campaign_id": str(send["campaign_id"]),
             "sent_at": parse_utc(str(send["ts"])), "interacted": False}
            for uid, sends in found.items() for send in sends if send.get("campaign_id") in long]
    return pl.DataFrame(rows, schema=HISTORY) if rows else pl.DataFrame(schema=HISTORY)

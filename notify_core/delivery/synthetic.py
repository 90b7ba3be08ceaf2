"""Synthetic due notifications in the Store: the same item shapes the planner writes, for tests,
benchmarks and the crash test (``notify worker --seed-demo``-style set-ups), without running a plan."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from notify_core.scheduling.ids import DEFAULT_SHARDS, notification_ids, user_hashes
from notify_core.store import tables
from notify_core.store.port import Item, Store

ISO = "%Y-%m-%dT%H:%M:%SZ"


def seed_campaigns(store: Store, campaign_ids: Sequence[str], *, base_url: str = "https://shop.example.com") -> None:
    store.table(tables.CAMPAIGNS).batch_put(
        {"pk": cid, "sk": tables.CAMPAIGN_SK, "campaign_id": cid, "name": f"Campaign {cid}",
         "url": f"{base_url}/c/{cid}",
         "template": "{first_name}, something new for you: {url}", "status": "active", "priority": 3,
         "cooldown_hours": 24, "daily_budget": None}
        for cid in campaign_ids)


def seed_due(
    store: Store, *, n: int, start: datetime, spread_s: float = 0.0, campaigns: int = 20, plan_day: str | None = None,
    shards: int = DEFAULT_SHARDS, user_prefix: str = "u", with_plans: bool = False, with_users: bool = True,
) -> list[Item]:
    """``n`` pending notifications for ``n`` users, ``send_at`` spread evenly over ``[start, start+spread_s)``
    at whole seconds (planner items are minute-aligned; ``spread_s=0`` puts them all at ``start``)."""
    start = start.astimezone(UTC)
    day = plan_day or start.date().isoformat()
    users = [f"{user_prefix}{i:07d}" for i in range(n)]
    camps = [f"c{i % campaigns:03d}" for i in range(n)]
    seed_campaigns(store, sorted(set(camps)))
    ids = notification_ids(users, camps, day, [0] * n)
    shard = (user_hashes(users) % shards).astype(int).tolist()
    items: list[Item] = []
    for k in range(n):
        at = start + timedelta(seconds=int(spread_s * k / n) if spread_s else 0)
        minute = tables.due_minute(at)
        items.append({
            "pk": tables.schedule_pk(minute, shard[k]), "sk": tables.schedule_sk(users[k], ids[k]),
            "notification_id": ids[k], "user_id": users[k], "campaign_id": camps[k], "plan_day": day, "slot": 0,
            "send_at": at.strftime(ISO), "due_minute": minute, "shard": shard[k], "expected_value": 0.5,
            "status": "pending", "ttl": int(at.timestamp()) + 3 * 86400,
        })
    store.table(tables.SCHEDULES).batch_put(items)
    if with_plans:
        store.table(tables.PLANS).batch_put(
            {**{k: v for k, v in i.items() if k not in ("pk", "sk")}, "pk": i["user_id"],
             "sk": tables.plan_sk(day, i["notification_id"])} for i in items)
    if with_users:
        store.table(tables.USERS).batch_put(
            {"pk": u, "sk": tables.PROFILE_SK, "user_id": u, "first_name": f"User {u[-4:]}", "timezone": "UTC",
             "country": "GB"} for u in users)
    return items

"""Invariants the fault tests check: the Store equal to a clean run's, per table, by digest.

Event tables (``events``, ``user_events``, ``purchases``, ``stream_positions``) are compared item by
item, every attribute, numbers compared by value: the port promises that a stored ``1.0`` reads back
as something equal to it, and DynamoDB gives ``1`` where SQLite gives ``1.0`` (so a DynamoDB Store can be
compared with a clean SQLite run). Delivery tables carry times and claim tokens that differ between any two runs,
crash or not, so they are compared by key and final status/outcome only: what was delivered, not when.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from notify_core.store import tables
from notify_core.store.port import Store

FULL = (tables.EVENTS, tables.USER_EVENTS, tables.PURCHASES, tables.STREAM_POSITIONS)
STABLE_FIELDS = ("status", "outcome", "notification_id", "campaign_id", "user_id")


def _canonical(value: Any) -> Any:
    """``value`` with integral floats as ints, in lists and maps too (see the module doc)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _canonical(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    return value


def table_digests(store: Store, names: tuple[str, ...] = tables.ALL_TABLES) -> dict[str, str]:
    """sha256 per non-empty table over its items sorted by key (see the module doc for what counts)."""
    out: dict[str, str] = {}
    for name in names:
        rows: list[Any] = []
        for item in store.table(name).scan():
            if name in FULL:
                rows.append(_canonical(item))
            else:
                rows.append({k: _canonical(item.get(k)) for k in ("pk", "sk", *STABLE_FIELDS) if k in item})
        if rows:
            rows.sort(key=lambda r: (r["pk"], r["sk"]))
            out[name] = hashlib.sha256(json.dumps(rows, sort_keys=True, default=repr).encode()).hexdigest()[:16]
    return out

"""A user's notification history (the activity feed): what was planned for them and what became of it.

Read from the rows the pipeline already writes, partition queries only: the user's ``plans`` items (pk
user_id, sk ``<plan_day>#<notification_id>``: planned, cancelled), each notification's ``deliveries``
rows (pk notification_id: sent, delivered, retried, failed, suppressed) and its
``notification_interactions`` markers (first open, first click, the unsubscribe). One entry per
notification, newest plan day first and, inside a day, latest send time first.

Pages are whole plan days (a user gets at most 5 notifications a day, plus the ones a re-plan
cancelled), so the order inside a day can be by send time while the cursor stays a position in the
plans partition: the cursor names the last entry returned (its day, send time and id), opaque to the
caller (base64url JSON). A cursor that does not decode is a :class:`ValidationError` (400).
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from notify_core.errors import ValidationError
from notify_core.lifecycle import CANCELLED
from notify_core.preferences import OPT_OUT_EVENT
from notify_core.store import tables
from notify_core.store.port import Item, KeyRange, Store

MAX_LIMIT = 100
_OVERFETCH = 50  # plan rows read beyond the page, so that the last day is usually complete in one query
Status = Literal["planned", "cancelled", "sent", "delivered", "opened", "clicked", "failed", "suppressed",
                 "opted_out"]


@dataclass(frozen=True, slots=True)
class Entry:
    """One notification in a user's history; ``events`` maps each step reached to its time (ISO UTC)."""

    notification_id: str
    campaign_id: str
    plan_day: str
    send_at: str | None
    status: Status
    events: dict[str, str | None] = field(default_factory=dict)
    attempts: int = 0
    detail: str | None = None  # why it failed or was suppressed

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Page:
    items: list[Entry]
    next_cursor: str | None


def _position(item: Item) -> tuple[str, str]:
    return str(item.get("plan_day") or str(item["sk"]).split("#", 1)[0]), \
        f"{item.get('send_at') or ''}#{item.get('notification_id') or ''}"


def encode_cursor(day: str, key: str) -> str:
    raw = json.dumps({"d": day, "k": key}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_cursor(cursor: str) -> tuple[str, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        doc = json.loads(raw)
        day, key = doc["d"], doc["k"]
        if not isinstance(day, str) or not isinstance(key, str) or not day or len(day) > 32 or len(key) > 512:
            raise ValueError
        day.encode(), key.encode()  # a lone surrogate (valid JSON, not UTF-8): UnicodeEncodeError, a ValueError
        return day, key
    except (ValueError, KeyError, TypeError, binascii.Error, UnicodeDecodeError):
        raise ValidationError("invalid cursor (pass next_cursor from the previous page unchanged)") from None


def _plans_from(store: Store, user_id: str, *, before_day: str | None, limit: int) -> tuple[list[Item], bool]:
    """Plan rows of whole days, newest day first, from ``before_day`` (inclusive) down, at least ``limit``
    rows where there are that many; and whether older rows may remain unread."""
    plans = store.table(tables.PLANS)
    bound = KeyRange(end=f"{before_day}#\uffff") if before_day else None
    fetch = limit + _OVERFETCH
    rows = plans.query(user_id, key_range=bound, descending=True, limit=fetch)
    truncated = len(rows) == fetch
    if truncated:  # the last day may be cut: read it whole
        last_day = _position(rows[-1])[0]
        rows = [r for r in rows if _position(r)[0] != last_day]
        rows += plans.query(user_id, key_range=KeyRange(prefix=f"{last_day}#"), descending=True)
    return rows, truncated


def _notification_id(plan: Item) -> str:
    return str(plan.get("notification_id") or str(plan["sk"]).split("#", 1)[1])


def _entries(store: Store, plans: list[Item]) -> list[Entry]:
    """The page's entries from two many-partition reads (each notification's attempts and its interaction
    markers), not two queries per entry: SQLite answers each in one statement, DynamoDB runs the queries
    side by side (a page of 20 was 40 queries one after another)."""
    nids = [_notification_id(p) for p in plans]
    attempts = store.table(tables.DELIVERIES).query_many(nids)
    marks = store.table(tables.NOTIFICATION_INTERACTIONS).query_many(nids)
    return [_entry(plan, attempts[nid], {str(m["sk"]): m for m in marks[nid]})
            for plan, nid in zip(plans, nids, strict=True)]


def _entry(plan: Item, attempts: list[Item], marks: dict[str, Item]) -> Entry:
    nid = _notification_id(plan)
    events: dict[str, str | None] = {"planned": str(plan["send_at"]) if plan.get("send_at") else None}
    status: Status = "cancelled" if plan.get("status") == CANCELLED else "planned"
    detail: str | None = None
    if attempts:
        last = attempts[-1]
        outcome = str(last.get("outcome") or "")
        if outcome == "suppressed":
            status, detail = "suppressed", str(last.get("detail") or "") or None
            events["suppressed"] = str(last.get("attempted_at") or "") or None
        else:
            status = "sent"
            events["sent"] = str(attempts[0].get("attempted_at") or "") or None
            if outcome == "sent":
                status = "delivered"
                events["delivered"] = str(last.get("delivered_at") or last.get("attempted_at") or "") or None
            elif outcome == "dead_lettered":
                status, detail = "failed", str(last.get("detail") or "") or None
                events["failed"] = str(last.get("attempted_at") or "") or None
    elif plan.get("status") == "sent":  # derived rows not written yet (or expired): the plan says it went out
        status = "delivered"
        events["delivered"] = str(plan.get("sent_at") or "") or None
    for kind, name in (("open", "opened"), ("click", "clicked"), (OPT_OUT_EVENT, "opted_out")):
        if kind in marks:
            events[name] = str(marks[kind].get("ts") or "") or None
            status = name  # type: ignore[assignment]  # opened < clicked < opted_out, in this order
    return Entry(notification_id=nid, campaign_id=str(plan.get("campaign_id") or ""), plan_day=_position(plan)[0],
                 send_at=str(plan["send_at"]) if plan.get("send_at") else None, status=status,
                 events={k: v for k, v in events.items() if v}, attempts=len(attempts), detail=detail)


def user_history(store: Store, user_id: str, *, limit: int = 20, cursor: str | None = None) -> Page:
    """One page of ``user_id``'s history, newest first (see the module docstring)."""
    if not 1 <= limit <= MAX_LIMIT:
        raise ValidationError(f"limit must be 1..{MAX_LIMIT}")
    after = decode_cursor(cursor) if cursor else None
    rows, truncated = _plans_from(store, user_id, before_day=after[0] if after else None, limit=limit)
    ordered = sorted(rows, key=_position, reverse=True)
    if after is not None:
        ordered = [r for r in ordered if _position(r) < after]
    page, more = ordered[:limit], len(ordered) > limit
    if not more and page and truncated:  # older days may remain past what was read
        more = bool(store.table(tables.PLANS).query(
            user_id, key_range=KeyRange(end=f"{_position(page[-1])[0]}#"), descending=True, limit=1))
    nxt = encode_cursor(*_position(page[-1])) if more and page else None
    return Page(items=_entries(store, page), next_cursor=nxt)

"""Tracking links: ``GET /t/<notification_id>`` (click) and ``GET /o/<notification_id>`` (open pixel).

Each records a ``notification_click`` / ``notification_open`` event through the capture path (validated,
routed to ``notify_clickstream``, produced durably: the consumer writes it to ``user_events``, where the
planner's affinity and fatigue read it), counts the first click/open in the campaign's stats, and for a
click answers with the campaign's URL to redirect to. The notification is looked up by id in its 24 h
``dedupe`` record, else in its ``deliveries`` log rows (30 days), so links keep working after a day.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from notify_core.clock import ManualClock
from notify_core.delivery.feedback import record_interaction
from notify_core.errors import NotFoundError, ValidationError
from notify_core.events.capture import capture_events
from notify_core.store import tables
from notify_core.store.port import Store
from notify_core.stream.port import Stream

# The classic 1x1 transparent GIF.
PIXEL_GIF = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
_MAX_ID = 128


@dataclass(frozen=True, slots=True)
class NotificationRef:
    notification_id: str
    user_id: str
    campaign_id: str
    day: str  # UTC day it was sent (the campaign_stats row its click counts in)


@dataclass(frozen=True, slots=True)
class TrackResult:
    ref: NotificationRef
    event_id: str | None
    first: bool  # the first open/click of this notification
    redirect_url: str | None  # clicks only


def lookup(store: Store, notification_id: str, *, now: datetime) -> NotificationRef:
    """The notification behind a tracking id; ``now`` dates a record that carries no day of its own."""
    if not notification_id or len(notification_id) > _MAX_ID or not notification_id.isascii():
        raise ValidationError("invalid notification id")
    record = store.table(tables.DEDUPE).get(notification_id, tables.DEDUPE_SK)
    if record is None:
        rows = store.table(tables.DELIVERIES).query(notification_id, descending=True, limit=1)
        record = rows[0] if rows else None
    if record is None:
        raise NotFoundError(f"unknown notification {notification_id}")
    claimed = record.get("delivered_at") or record.get("send_at") or ""
    day = str(claimed)[:10] if claimed else now.astimezone(UTC).date().isoformat()
    return NotificationRef(notification_id, str(record["user_id"]), str(record["campaign_id"]), day)


def track(
    store: Store, stream: Stream, *, notification_id: str, kind: Literal["open", "click"], now: datetime,
    fallback_url: str | None = None,
) -> TrackResult:
    """Record one open or click at ``now`` (see the module docstring). Unknown ids raise ``NotFoundError``."""
    ref = lookup(store, notification_id, now=now)
    when = now.astimezone(UTC)
    ts = when.isoformat(timespec="milliseconds")
    url: str | None = None
    if kind == "click":
        campaign = store.table(tables.CAMPAIGNS).get(ref.campaign_id, tables.CAMPAIGN_SK)
        url = str((campaign or {}).get("url") or fallback_url or "") or None
    event: dict[str, object] = {"type": f"notification_{kind}", "user_id": ref.user_id, "ts": ts,
                                "notification_id": ref.notification_id, "campaign_id": ref.campaign_id}
    if url:
        event["url"] = url
    result = capture_events(json.dumps(event), stream=stream, clock=ManualClock(when))  # the event's own "now"
    if not result.accepted:
        raise ValidationError(result.results[0].reason or "event rejected")
    first = record_interaction(store, notification_id=ref.notification_id, campaign_id=ref.campaign_id, kind=kind,
                               day=ref.day, ts=ts)
    return TrackResult(ref, result.results[0].event_id, first, url)

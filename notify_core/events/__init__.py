"""Captured user events: models, capture (HTTP body -> stream) and the consumer (stream -> Store)."""

from __future__ import annotations

from notify_core.events.capture import CaptureResult, EventResult, capture_events
from notify_core.events.models import (
    CLICKSTREAM,
    MAX_BATCH_EVENTS,
    MAX_BODY_BYTES,
    PURCHASE_HISTORY,
    TOPICS,
    CampaignView,
    Click,
    Event,
    NotificationClick,
    NotificationOpen,
    Order,
    OrderLine,
    ParsedBatch,
    decode_event,
    dlq_topic,
    encode_event,
    parse_batch,
    parse_event,
    stable_event_id,
    topic_for,
)

__all__ = [
    "CLICKSTREAM",
    "MAX_BATCH_EVENTS",
    "MAX_BODY_BYTES",
    "PURCHASE_HISTORY",
    "TOPICS",
    "CampaignView",
    "CaptureResult",
    "Click",
    "Event",
    "EventResult",
    "NotificationClick",
    "NotificationOpen",
    "Order",
    "OrderLine",
    "ParsedBatch",
    "capture_events",
    "decode_event",
    "dlq_topic",
    "encode_event",
    "parse_batch",
    "parse_event",
    "stable_event_id",
    "topic_for",
]

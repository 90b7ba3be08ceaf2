"""How long a first open, click or unsubscribe marker (``notification_interactions``) is kept.

Its own module, importing nothing that reads the Store: the unsubscribe route (:mod:`notify_core.preferences`)
writes these markers too, and a Lambda's IAM role is derived from what its handler imports, so importing
:mod:`notify_core.delivery.tracking` for this one rule gave the preferences function a read of the dedupe
table it never makes."""

from __future__ import annotations

from datetime import datetime

from notify_core.observability import LOG_RETENTION_DAYS


def marker_ttl(now: datetime) -> int:
    """The TTL of a first open, click or unsubscribe marker made at ``now``: the deliveries log's retention
    from then on. A marker is only read through :func:`notify_core.delivery.tracking.lookup`, which needs the
    notification's deliveries row (kept that long from its last attempt, which came before any hit): past it
    no link of the notification resolves, and a marker kept for good was never read again (one row per first
    open, click and unsubscribe, for as long as Notify ran)."""
    return int(now.timestamp() + LOG_RETENTION_DAYS * 86400)

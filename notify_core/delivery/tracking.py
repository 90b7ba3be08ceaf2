"""Tracking links: ``GET /t/<token>`` (click) and ``GET /o/<token>`` (open pixel), signed so they cannot be forged.

The unsubscribe link of every message (``/u/<token>``, :mod:`notify_core.preferences`) is signed the same
way under its own link kind, so a click token cannot be replayed as an unsubscribe and vice versa.

Notification ids are a public hash of (user, campaign, day, slot), so an id alone proves nothing: anyone
could rebuild them and fake clicks. A link therefore carries ``<notification_id>.<kid>.<mac>``, where
``mac`` is HMAC-SHA256 under the tracking key ``kid`` (a :class:`~notify_core.security.keyring.KeyRing`
in ``<data_dir>/secrets/tracking.keys.json``) over the link kind and the id, cut to 128 bits. A rotated
key keeps verifying for its overlap, so links already sent keep working. Anything that does not verify
(unknown key id, altered id or mac, wrong kind) is :class:`~notify_core.errors.InvalidTokenError`, a 404
like an unknown id.

A verified click or open is counted once per notification: the first one claims a marker in
``notification_interactions`` (``Condition.absent()``), records the ``notification_click`` /
``notification_open`` event through the capture path (validated, routed to ``notify_clickstream``; the
consumer writes it to ``user_events``, where the planner's affinity and fatigue read it) and counts in the
campaign's stats, under the marker's ``counted`` flag: a first one whose count never happened (the Store
refused it, the process died) leaves the flag false and the next hit of the link takes it. A repeat of a
counted one only adds to the marker's ``repeats`` counter: no second event, no second count.
The redirect goes only to the URL stored on the campaign (no URL on the request is ever followed).
The notification is looked up in its ``deliveries`` rows (30 days; the day it was delivered), else its 24 h
``dedupe`` record (sent, its deliveries rows not flushed yet).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from notify_core.clock import Clock, utcnow
from notify_core.delivery.feedback import add_campaign_counts
from notify_core.delivery.markers import marker_ttl
from notify_core.errors import ConditionFailedError, InvalidTokenError, NotFoundError, ValidationError
from notify_core.events.capture import capture_events
from notify_core.security.keyring import Ring, SigningKey
from notify_core.store import tables
from notify_core.store.port import Condition, Store
from notify_core.stream.port import Stream

# The classic 1x1 transparent GIF.
PIXEL_GIF = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
TRACKING_PURPOSE = "tracking"
_MAX_ID = 128
_MAC_BYTES = 16
Kind = Literal["open", "click", "unsubscribe"]
_ROUTES: dict[Kind, str] = {"click": "t", "open": "o", "unsubscribe": "u"}  # each kind's path: /t/<token>...


@functools.lru_cache(maxsize=64)
def _keyed(secret: bytes) -> hmac.HMAC:
    """An HMAC-SHA256 already keyed with ``secret``, copied for each MAC (a few keys live at a time)."""
    return hmac.new(secret, digestmod=hashlib.sha256)


def _mac(secret: bytes, kind: Kind, notification_id: str) -> str:
    # A copy of a keyed HMAC, not hmac.digest: the one-shot releases the GIL around every call, and in
    # the delivery worker (3 links a message, 16 sender threads) each release was a wait to get it back
    # (~26 us a MAC in the worker's sender profile against ~2.5 us for copy + update + digest, which keep
    # the GIL for messages this short). Same bytes.
    mac = _keyed(secret).copy()
    mac.update(f"{kind}\x1f{notification_id}".encode())
    return base64.urlsafe_b64encode(mac.digest()[:_MAC_BYTES]).rstrip(b"=").decode()


def sign_token(keys: Ring, notification_id: str, *, kind: Kind) -> str:
    """``<notification_id>.<kid>.<mac>`` under the ring's active key."""
    return _token(keys.active, notification_id, kind)


def _token(key: SigningKey, notification_id: str, kind: Kind) -> str:
    return f"{notification_id}.{key.kid}.{_mac(key.secret, kind, notification_id)}"


def verify_token(keys: Ring, token: str, *, kind: Kind, now: datetime) -> str:
    """The notification id a token was signed for; :class:`InvalidTokenError` when it does not verify."""
    if not token or len(token) > _MAX_ID + 64 or not token.isascii():
        raise InvalidTokenError("invalid tracking link")
    parts = token.split(".")
    if len(parts) != 3 or not all(parts):
        raise InvalidTokenError("invalid tracking link")
    notification_id, kid, mac = parts
    key = keys.verifying(kid, now=now)
    if key is None or len(notification_id) > _MAX_ID:
        raise InvalidTokenError("invalid tracking link")
    if not hmac.compare_digest(_mac(key.secret, kind, notification_id), mac):
        raise InvalidTokenError("invalid tracking link")
    return notification_id


@dataclass(frozen=True, slots=True)
class TrackingLinks:
    """Builds a message's signed links: ``<public_base_url>/t/<token>`` and ``/o/<token>``."""

    public_base_url: str
    keys: Ring

    def click(self, notification_id: str) -> str:
        return self._link(self.keys.active, "click", notification_id)

    def open(self, notification_id: str) -> str:
        return self._link(self.keys.active, "open", notification_id)

    def unsubscribe(self, notification_id: str) -> str:
        """The one-click unsubscribe link (``GET`` shows a confirmation page, ``POST`` opts out: RFC 8058)."""
        return self._link(self.keys.active, "unsubscribe", notification_id)

    def for_message(self, notification_id: str) -> tuple[str, str, str]:
        """A message's :meth:`click`, :meth:`open` and :meth:`unsubscribe` links, under one look-up of the active
        key instead of three (on a live ring each is a clock read and a search of the ring; every send renders
        its message's links)."""
        key = self.keys.active
        return (self._link(key, "click", notification_id), self._link(key, "open", notification_id),
                self._link(key, "unsubscribe", notification_id))

    def _link(self, key: SigningKey, kind: Kind, notification_id: str) -> str:
        return f"{self.public_base_url.rstrip('/')}/{_ROUTES[kind]}/{_token(key, notification_id, kind)}"


@dataclass(frozen=True, slots=True)
class NotificationRef:
    notification_id: str
    user_id: str
    campaign_id: str
    day: str  # UTC day it was sent (the campaign_stats row its click counts in)


@dataclass(frozen=True, slots=True)
class TrackResult:
    ref: NotificationRef
    event_id: str | None  # None for a repeat: it produced no event
    first: bool  # the first open/click of this notification
    redirect_url: str | None  # clicks only


def lookup(store: Store, notification_id: str, *, now: datetime) -> NotificationRef:
    """The notification behind a tracking id; ``now`` dates a record that carries no day of its own.

    The day is the UTC day of its delivery (``delivered_at`` of its newest ``deliveries`` row), the row its
    ``sent`` counted in, so opens and clicks count against the deliveries they answer. The 24 h ``dedupe``
    record, written at claim time, has only the planned ``send_at``: read first, it dated a notification
    planned for 23:59 and delivered after midnight (a worker catching up, a retry) a day before its delivery.
    It only serves for the moment between the send and the worker's flush of the deliveries rows."""
    if not notification_id or len(notification_id) > _MAX_ID or not notification_id.isascii():
        raise ValidationError("invalid notification id")
    rows = store.table(tables.DELIVERIES).query(notification_id, descending=True, limit=1)
    record = rows[0] if rows and rows[0].get("delivered_at") else None
    if record is None:
        record = store.table(tables.DEDUPE).get(notification_id, tables.DEDUPE_SK) or (rows[0] if rows else None)
    if record is None:
        raise NotFoundError(f"unknown notification {notification_id}")
    claimed = record.get("delivered_at") or record.get("send_at") or ""
    day = str(claimed)[:10] if claimed else now.astimezone(UTC).date().isoformat()
    return NotificationRef(notification_id, str(record["user_id"]), str(record["campaign_id"]), day)


def _claim_first(store: Store, ref: NotificationRef, kind: Literal["open", "click"], ts: str, *, ttl: int,
                 ) -> tuple[str, bool] | None:
    """Claim the notification's first ``kind``: ``(ts, True)`` when this request made the marker, ``(the
    marker's ts, False)`` when an earlier first one never had its count taken (``counted`` false: the Store
    refused the count, or the process died before it), None for a repeat, which adds one to the marker's
    ``repeats`` instead. Markers from before the flag have no ``counted``: they were counted."""
    table = store.table(tables.NOTIFICATION_INTERACTIONS)
    marker = {"pk": ref.notification_id, "sk": kind, "campaign_id": ref.campaign_id, "ts": ts, "repeats": 0,
              "counted": False, "ttl": ttl}
    try:
        table.put(marker, condition=Condition.absent())
        return ts, True
    except ConditionFailedError:
        pass
    for _ in range(20):  # optimistic: the Store has no atomic add
        current = table.get(ref.notification_id, kind, consistent=True)
        if current is None:
            return None
        if current.get("counted", True) is False:
            return str(current["ts"]), False
        repeats = int(current.get("repeats") or 0)
        try:
            table.update(ref.notification_id, kind, set={"repeats": repeats + 1, "last_ts": ts},
                         condition=Condition.matches(repeats=current.get("repeats")))
            return None
        except ConditionFailedError:
            continue
    return None


def track(
    store: Store, stream: Stream, *, token: str, kind: Literal["open", "click"], keys: Ring, clock: Clock,
) -> TrackResult:
    """Verify a link's token and record one open or click at the clock's time (see the module docstring).

    The count is taken under the marker's ``counted`` flag (False -> True, conditional), after the event: a
    first hit whose count the Store refused, or that died before it, leaves the flag false, and the next hit
    of the link publishes the same event again (the marker's time: the same event id, one ``user_events``
    row) and takes the count, once however many hits race for it. The event's ts is the first hit's."""
    when = utcnow(clock)
    notification_id = verify_token(keys, token, kind=kind, now=when)
    ref = lookup(store, notification_id, now=when)
    url: str | None = None
    if kind == "click":
        campaign = store.table(tables.CAMPAIGNS).get(ref.campaign_id, tables.CAMPAIGN_SK)
        url = str((campaign or {}).get("url") or "") or None
    claim = _claim_first(store, ref, kind, when.astimezone(UTC).isoformat(timespec="milliseconds"),
                         ttl=marker_ttl(when))
    if claim is None:
        return TrackResult(ref, None, False, url)
    ts, made = claim
    event: dict[str, object] = {"type": f"notification_{kind}", "user_id": ref.user_id, "ts": ts,
                                "notification_id": ref.notification_id, "campaign_id": ref.campaign_id}
    if url:
        event["url"] = url
    interactions = store.table(tables.NOTIFICATION_INTERACTIONS)
    try:
        result = capture_events(json.dumps(event), stream=stream, clock=clock)
        if not result.accepted:
            raise ValidationError(result.results[0].reason or "event rejected")
    except BaseException:
        if made:  # not recorded: release the claim, so the user's next click is the first one again
            interactions.delete(ref.notification_id, kind)
        raise
    try:
        interactions.update(ref.notification_id, kind, set={"counted": True},
                            condition=Condition.matches(counted=False))
    except ConditionFailedError:
        return TrackResult(ref, None, False, url)  # a concurrent hit took the count
    try:
        add_campaign_counts(store, {(ref.campaign_id, ref.day): 1}, field="opened" if kind == "open" else "clicked")
    except BaseException:
        # not counted: the next hit takes the count (if the Store refuses this too, the click stays uncounted)
        interactions.update(ref.notification_id, kind, set={"counted": False})
        raise
    return TrackResult(ref, result.results[0].event_id, True, url)

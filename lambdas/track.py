"""Lambdas behind the tracking links: ``GET /t/{notification_id}`` (click) and ``GET /o/{notification_id}``.

The path segment is a signed token (``<notification_id>.<kid>.<mac>``): a forged or altered one is a 404.
A click records a ``notification_click`` event on ``notify_clickstream`` (the first one only; repeats are
counted on the notification's marker) and answers 302 to the campaign's stored URL; an open records
``notification_open`` and answers a 1x1 GIF. Both go through :func:`notify_core.delivery.tracking.track`.
Store, stream and tracking keys are built once per cold start; tests and the local gateway may install their
own with :func:`use`.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from lambdas.coldstart import ColdStart
from lambdas.http import ApiEvent, ApiResponse, api_handler
from notify_core.clock import SYSTEM_CLOCK, Clock
from notify_core.delivery.tracking import PIXEL_GIF, TRACKING_PURPOSE, track
from notify_core.errors import ValidationError
from notify_core.security.keyring import KeyRing, load_keyring
from notify_core.store.port import Store
from notify_core.stream.port import Stream


@dataclass(frozen=True, slots=True)
class _Deps:
    store: Store
    stream: Stream
    keys: KeyRing
    fallback_url: str | None  # where a click goes when its campaign has no URL
    clock: Clock


def _build() -> _Deps:
    from notify_core.settings import load_settings
    from notify_core.store.factory import build_store
    from notify_core.stream import open_stream

    settings = load_settings()
    clock = settings.clock()
    keys = load_keyring(settings.secrets_dir, TRACKING_PURPOSE, clock=clock)
    return _Deps(build_store(settings), open_stream(settings), keys, settings.public_base_url, clock)


_deps = ColdStart(_build)


def use(*, store: Store | None, stream: Stream | None, keys: KeyRing | None = None,
        clock: Clock = SYSTEM_CLOCK) -> None:
    """Install the Store, Stream, tracking keys and clock these handlers use (None: build from settings on
    next use)."""
    _deps.use(None if store is None or stream is None or keys is None else _Deps(store, stream, keys, None, clock))


def _notification_id(event: ApiEvent) -> str:
    params = event.get("pathParameters") or {}
    nid = params.get("notification_id") if isinstance(params, dict) else None
    if not nid:
        raise ValidationError("missing notification id")
    return str(nid)


@api_handler
def click(event: ApiEvent, context: Any) -> ApiResponse:
    deps = _deps.get()
    result = track(deps.store, deps.stream, token=_notification_id(event), kind="click", keys=deps.keys,
                   clock=deps.clock)
    # Only the campaign's stored URL (validated at upsert); without one, the service's own base URL.
    location = result.redirect_url or deps.fallback_url or "/"
    return {"statusCode": 302, "headers": {"location": location, "cache-control": "no-store"},
            "body": "", "isBase64Encoded": False}


@api_handler
def open_pixel(event: ApiEvent, context: Any) -> ApiResponse:
    deps = _deps.get()
    track(deps.store, deps.stream, token=_notification_id(event), kind="open", keys=deps.keys, clock=deps.clock)
    return {"statusCode": 200, "headers": {"content-type": "image/gif", "cache-control": "no-store"},
            "body": base64.b64encode(PIXEL_GIF).decode(), "isBase64Encoded": True}

"""Lambdas behind the tracking links: ``GET /t/{notification_id}`` (click) and ``GET /o/{notification_id}``.

A click records a ``notification_click`` event on ``notify_clickstream`` and answers 302 to the campaign's
URL; an open records ``notification_open`` and answers a 1x1 GIF. Both go through
:func:`notify_core.delivery.tracking.track`. Store and stream are built once per cold start; tests and
the local gateway may install their own with :func:`use`.
"""

from __future__ import annotations

import base64
import threading
from typing import Any

from lambdas.http import ApiEvent, ApiResponse, api_handler
from notify_core.delivery.tracking import PIXEL_GIF, track
from notify_core.errors import ValidationError
from notify_core.store.port import Store
from notify_core.stream.port import Stream

_store: Store | None = None
_stream: Stream | None = None
_fallback_url: str | None = None
_lock = threading.Lock()


def _deps() -> tuple[Store, Stream]:
    global _store, _stream, _fallback_url
    if _store is None or _stream is None:
        with _lock:
            if _store is None or _stream is None:
                from notify_core.settings import load_settings
                from notify_core.store.factory import build_store
                from notify_core.stream import open_stream

                settings = load_settings()
                _store = _store or build_store(settings)
                _stream = _stream or open_stream(settings)
                _fallback_url = settings.public_base_url
    return _store, _stream


def use(*, store: Store | None, stream: Stream | None) -> None:
    """Install the Store and Stream these handlers use (None: build from settings on next use)."""
    global _store, _stream
    with _lock:
        _store, _stream = store, stream


def _notification_id(event: ApiEvent) -> str:
    params = event.get("pathParameters") or {}
    nid = params.get("notification_id") if isinstance(params, dict) else None
    if not nid:
        raise ValidationError("missing notification id")
    return str(nid)


@api_handler
def click(event: ApiEvent, context: Any) -> ApiResponse:
    store, stream = _deps()
    result = track(store, stream, notification_id=_notification_id(event), kind="click", fallback_url=_fallback_url)
    return {"statusCode": 302, "headers": {"location": result.redirect_url or "/", "cache-control": "no-store"},
            "body": "", "isBase64Encoded": False}


@api_handler
def open_pixel(event: ApiEvent, context: Any) -> ApiResponse:
    store, stream = _deps()
    track(store, stream, notification_id=_notification_id(event), kind="open")
    return {"statusCode": 200, "headers": {"content-type": "image/gif", "cache-control": "no-store"},
            "body": base64.b64encode(PIXEL_GIF).decode(), "isBase64Encoded": True}

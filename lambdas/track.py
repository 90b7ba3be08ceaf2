"""Lambdas behind the tracking links: ``GET /t/{notification_id}`` (click) and ``GET /o/{notification_id}``.

The path segment is a signed token (``<notification_id>.<kid>.<mac>``): a forged or altered one is a 404.
A click records a ``notification_click`` event on ``notify_clickstream`` (the first one only; repeats are
counted on the notification's marker) and answers 302 to the campaign's stored URL; an open records
``notification_open`` and answers a 1x1 GIF. Both go through :func:`notify_core.delivery.tracking.track`.
Store, stream and tracking keys are built once per cold start; tests and the local gateway may install their
own with :func:`use`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aws_lambda_powertools.event_handler import Response

from lambdas import runtime
from lambdas.coldstart import ColdStart
from lambdas.edge import Edge
from notify_core.clock import SYSTEM_CLOCK, Clock
from notify_core.delivery.tracking import PIXEL_GIF, TRACKING_PURPOSE, track
from notify_core.security.keyring import KeyRing, Ring
from notify_core.security.vault import build_vault
from notify_core.store.factory import seal_store
from notify_core.store.port import Store
from notify_core.stream.port import Stream


@dataclass(frozen=True, slots=True)
class _Deps:
    store: Store
    stream: Stream
    keys: Ring
    fallback_url: str | None  # where a click goes when its campaign has no URL
    clock: Clock


def _build() -> _Deps:
    from notify_core.stream import open_stream

    rt = runtime.get()
    store = rt.store(seal_store)
    keys = build_vault(rt.settings, store=store).live_ring(TRACKING_PURPOSE, clock=rt.clock)
    return _Deps(store, open_stream(rt.settings), keys, rt.settings.public_base_url, rt.clock)


_deps = ColdStart(_build)


def use(*, store: Store | None, stream: Stream | None, keys: KeyRing | None = None,
        clock: Clock = SYSTEM_CLOCK) -> None:
    """Install the Store, Stream, tracking keys and clock these handlers use (None: build from settings on
    next use)."""
    _deps.use(None if store is None or stream is None or keys is None else _Deps(store, stream, keys, None, clock))


edge = Edge("tracking")


@edge.route("GET", "/t/<notification_id>", summary="Tracking link: record a click, redirect")
def click_route(notification_id: str) -> Any:  # a Response: serialised by the route, not validated again
    deps = _deps.get()
    result = track(deps.store, deps.stream, token=notification_id, kind="click", keys=deps.keys, clock=deps.clock)
    # Only the campaign's stored URL (validated at upsert); without one, the service's own base URL.
    location = result.redirect_url or deps.fallback_url or "/"
    return Response(302, "text/plain", "", headers={"location": location, "cache-control": "no-store"})


@edge.route("GET", "/o/<notification_id>", summary="Open pixel: record an open, a 1x1 GIF",
            validate=False)
def open_route(notification_id: str) -> Any:  # a Response: serialised by the route, not validated again
    deps = _deps.get()
    track(deps.store, deps.stream, token=notification_id, kind="open", keys=deps.keys, clock=deps.clock)
    return Response(200, "image/gif", PIXEL_GIF, headers={"cache-control": "no-store"})


handler = edge.handler
click = open_pixel = handler  # the two Lambda functions of the template: one edge serves both routes

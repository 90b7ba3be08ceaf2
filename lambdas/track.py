"""Lambdas behind the tracking links: ``GET /t/{notification_id}`` (click) and ``GET /o/{notification_id}``.

A click records a ``notification_click`` event on ``notify_clickstream`` and answers 302 to the campaign's
URL; an open records ``notification_open`` and answers a 1x1 GIF. Both go through
:func:`notify_core.delivery.tracking.track`. Store and stream are built once per cold start; tests and
the local gateway may install their own with :func:`use`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aws_lambda_powertools.event_handler import Response

from lambdas import runtime
from lambdas.coldstart import ColdStart
from lambdas.edge import Edge
from notify_core.delivery.tracking import PIXEL_GIF, track
from notify_core.store.port import Store
from notify_core.stream.port import Stream


@dataclass(frozen=True, slots=True)
class _Deps:
    store: Store
    stream: Stream
    fallback_url: str | None  # where a click goes when its campaign has no URL


def _build() -> _Deps:
    from notify_core.stream import open_stream

    rt = runtime.get()
    return _Deps(rt.store(), open_stream(rt.settings), rt.settings.public_base_url)


_deps = ColdStart(_build)


def use(*, store: Store | None, stream: Stream | None) -> None:
    """Install the Store and Stream these handlers use (None: build from settings on next use)."""
    _deps.use(None if store is None or stream is None else _Deps(store, stream, None))


edge = Edge("tracking")


@edge.route("GET", "/t/<notification_id>", scope=None, summary="Tracking link: record a click, redirect")
def click_route(notification_id: str) -> Any:  # a Response: serialised by the route, not validated again
    deps = _deps.get()
    result = track(deps.store, deps.stream, notification_id=notification_id, kind="click",
                   fallback_url=deps.fallback_url)
    return Response(302, "text/plain", "", headers={"location": result.redirect_url or "/",
                                                    "cache-control": "no-store"})


@edge.route("GET", "/o/<notification_id>", scope=None, summary="Open pixel: record an open, a 1x1 GIF",
            validate=False)
def open_route(notification_id: str) -> Any:  # a Response: serialised by the route, not validated again
    deps = _deps.get()
    track(deps.store, deps.stream, notification_id=notification_id, kind="open")
    return Response(200, "image/gif", PIXEL_GIF, headers={"cache-control": "no-store"})


handler = edge.handler
click = open_pixel = handler  # the two Lambda functions of the template: one edge serves both routes

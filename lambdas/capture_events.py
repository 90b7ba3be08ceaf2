"""Lambda ``capture_events``: ``POST /v1/events`` -> validate, route, produce; per-event results.

Scope ``events:write``. The body is validated by :func:`notify_core.events.capture.capture_events` itself
(per event: a batch may be partly accepted, 202), so the edge hands it the raw bytes. The stream client
is built once per cold start from :mod:`lambdas.runtime`; the local gateway and tests may install their
own stream with :func:`use_stream`.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.event_handler import Response

from lambdas import runtime
from lambdas.coldstart import ColdStart
from lambdas.edge import Edge
from lambdas.http import body_bytes
from notify_core.events.capture import capture_events
from notify_core.events.models import MAX_BODY_BYTES
from notify_core.stream.port import Stream


def _build_stream() -> Stream:
    from notify_core.stream import open_stream

    return open_stream(runtime.get().settings)


_stream = ColdStart(_build_stream)
use_stream = _stream.use  # install the stream this handler produces to (None: from settings on next use)

edge = Edge("events")


@edge.route("POST", "/v1/events", summary="Capture purchase and click events",
            status_code=202, max_body=MAX_BODY_BYTES)
def events() -> Any:  # a Response: serialised by the route, not validated again
    raw = body_bytes(edge_event().raw_event, limit=MAX_BODY_BYTES)
    result = capture_events(raw, stream=_stream.get(), clock=runtime.get().clock)
    import orjson

    return Response(result.status_code, "application/json", orjson.dumps(result.as_dict()).decode())


def edge_event() -> Any:
    """The Powertools view of the current event (decoded body, headers)."""
    return edge.current_event()


handler = edge.handler

"""Lambda ``capture_events``: ``POST /v1/events`` -> validate, route, produce; per-event results.

Settings and the stream client are built once per cold start, on the first request (never at import,
so importing this module reads no environment and opens nothing). The local gateway and tests may
install their own stream with :func:`use_stream`.
"""

from __future__ import annotations

from typing import Any

from lambdas.coldstart import ColdStart
from lambdas.http import ApiEvent, ApiResponse, api_handler, body_bytes, json_response, request_id
from notify_core.clock import SYSTEM_CLOCK
from notify_core.events.capture import capture_events
from notify_core.events.models import MAX_BODY_BYTES
from notify_core.stream.port import Stream


def _build_stream() -> Stream:
    from notify_core.settings import load_settings
    from notify_core.stream import open_stream

    return open_stream(load_settings())


_stream = ColdStart(_build_stream)
use_stream = _stream.use  # install the stream this handler produces to (None: from settings on next use)


@api_handler
def handler(event: ApiEvent, context: Any) -> ApiResponse:
    raw = body_bytes(event, limit=MAX_BODY_BYTES)
    result = capture_events(raw, stream=_stream.get(), clock=SYSTEM_CLOCK)
    return json_response(result.status_code, result.as_dict(), headers={"x-request-id": request_id(event)})

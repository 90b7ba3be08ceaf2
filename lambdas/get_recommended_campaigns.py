"""Lambda ``get_recommended_campaigns``: the top campaigns for a user, scored, in order.

Accepts an API Gateway HTTP API (payload 2.0) event, ``GET /v1/users/{user_id}/recommendations?limit=10``,
or a direct invocation ``{"user_id": "...", "limit": 10}``. Both get the same JSON body; the API event
gets it wrapped as a proxy reply (statusCode/headers/body), a direct invocation gets it bare, with
``"statusCode"`` added to error bodies. Unknown users are 404, bad input 400: never a 500.

Cold-start state (settings, Store, IndexHolder, Recommender) is built once, lazily, on the first request:
importing this module reads no environment and opens nothing. Tests and benchmarks may install their own
with :func:`use_recommender`. One JSON log line per request carries the latency.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from lambdas.coldstart import ColdStart
from lambdas.http import ApiEvent, error_response, json_response, request_id
from notify_core.errors import NotifyError, ValidationError
from notify_core.recommend.recommender import MAX_LIMIT, Recommender

log = logging.getLogger("lambdas.get_recommended_campaigns")

DEFAULT_LIMIT = 10
MAX_USER_ID = 128

def _build() -> Recommender:
    from notify_core.recommend.artefacts import build_artefact_store
    from notify_core.recommend.serving import IndexHolder
    from notify_core.settings import load_settings
    from notify_core.store.factory import build_store

    settings = load_settings()
    holder = IndexHolder(build_artefact_store(settings), search_effort=settings.recommend_effort)
    return Recommender(store=build_store(settings), holder=holder, clock=settings.clock())


_recommender = ColdStart(_build)
get_recommender = _recommender.get
use_recommender = _recommender.use  # install the recommender (tests); None: from settings on next use


def _is_api_event(event: Any) -> bool:
    return isinstance(event, Mapping) and isinstance(event.get("requestContext"), Mapping) \
        and "http" in event["requestContext"]


def parse_request(event: Any) -> tuple[str, int]:
    """``(user_id, limit)`` from either event shape; ValidationError (400) for anything malformed."""
    if not isinstance(event, Mapping):
        raise ValidationError("event must be a JSON object")
    if _is_api_event(event):
        user_id = (event.get("pathParameters") or {}).get("user_id")
        raw_limit = (event.get("queryStringParameters") or {}).get("limit")
    else:
        user_id, raw_limit = event.get("user_id"), event.get("limit")
    if not isinstance(user_id, str) or not user_id.strip() or len(user_id) > MAX_USER_ID:
        raise ValidationError(f"user_id must be a non-empty string of at most {MAX_USER_ID} characters")
    if raw_limit is None or raw_limit == "":
        limit = DEFAULT_LIMIT
    elif isinstance(raw_limit, bool):
        raise ValidationError("limit must be an integer")
    elif isinstance(raw_limit, int):
        limit = raw_limit
    elif isinstance(raw_limit, str) and raw_limit.strip().isdigit():
        limit = int(raw_limit)
    else:
        raise ValidationError("limit must be an integer")
    if not 1 <= limit <= MAX_LIMIT:
        raise ValidationError(f"limit must be in 1..{MAX_LIMIT}")
    return user_id.strip(), limit


def handler(event: ApiEvent, context: Any) -> dict[str, Any]:
    started = time.perf_counter()
    api = _is_api_event(event)
    rid = request_id(event) if api else str(getattr(context, "aws_request_id", "") or "direct")
    status, user_id, count, strategy, version = 200, None, 0, None, None
    try:
        user_id, limit = parse_request(event)
        result = get_recommender().recommend(user_id, limit=limit)
        count, strategy, version = len(result.items), result.strategy, result.index_version
        payload = result.as_dict()
        return json_response(200, payload, headers={"x-request-id": rid}) if api else payload
    except NotifyError as exc:
        status = exc.http_status
        if api:
            return error_response(exc, rid=rid)
        return {"statusCode": status, "error": {"type": type(exc).__name__, "message": str(exc), "request_id": rid}}
    except Exception:
        status = 500
        log.exception("unhandled error", extra={"request_id": rid})
        body = {"error": {"type": "InternalError", "message": "internal error", "request_id": rid}}
        return json_response(500, body, headers={"x-request-id": rid}) if api else {"statusCode": 500, **body}
    finally:
        log.info("get_recommended_campaigns", extra={
            "request_id": rid, "user_id": user_id, "status": status, "count": count, "strategy": strategy,
            "index_version": version, "latency_ms": round((time.perf_counter() - started) * 1000, 3),
            "invocation": "api" if api else "direct"})

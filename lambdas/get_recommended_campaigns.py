"""Lambda ``get_recommended_campaigns``: the top campaigns for a user, from the live index holder.

``GET /v1/users/{user_id}/recommendations?limit=10`` (scope ``recommendations:read``) through the handler
edge (:mod:`lambdas.edge`: both API Gateway payload versions, one error shape), or a direct invocation
``{"user_id": "...", "limit": 10}`` that gets the same JSON body bare, with ``"statusCode"`` added to
error bodies. Unknown users are 404, bad input 400: never a 500.

Cold-start state (settings, Store, IndexHolder) comes from :mod:`lambdas.runtime`, built once on the first
request. Tests and benchmarks may install their own Recommender with :func:`use_recommender`. One JSON log
line per request carries the latency.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Annotated, Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.openapi.params import Path, Query
from pydantic import BaseModel, Field, TypeAdapter
from pydantic import ValidationError as PydanticValidationError

from lambdas import runtime
from lambdas.coldstart import ColdStart
from lambdas.edge import Edge, current
from lambdas.index import build_holder
from notify_core.coalesce import ask
from notify_core.errors import NotifyError, ValidationError
from notify_core.observability import log_fields
from notify_core.recommend.recommender import MAX_LIMIT, Recommender
from notify_core.store.factory import seal_store

log = logging.getLogger("lambdas.get_recommended_campaigns")

DEFAULT_LIMIT = 10
MAX_USER_ID = 128


def _build() -> Recommender:
    rt = runtime.get()
    return Recommender(store=rt.store(seal_store), holder=rt.holder(build_holder), clock=rt.clock,
                       cache_users=rt.settings.recommend_cache_users)


_recommender = ColdStart(_build)
get_recommender = _recommender.get
use_recommender = _recommender.use  # install the recommender (tests); None: from the runtime on next use


class RecommendationOut(BaseModel):
    campaign_id: str
    score: float
    similarity: float
    affinity: float
    copurchase: float
    reasons: list[str]


class RecommendationsOut(BaseModel):
    """The reply (built by ``Recommendations.as_dict``; this model documents it)."""

    user_id: str
    strategy: str
    index_version: str | None
    candidates: int
    filtered: dict[str, int]
    recommendations: list[RecommendationOut]


def _recommend(user_id: str, limit: int, *, rid: str, api: bool) -> dict[str, Any]:
    started = time.perf_counter()
    status, count, strategy, version = 200, 0, None, None
    try:
        user_id = user_id.strip()
        if not user_id or len(user_id) > MAX_USER_ID:
            raise ValidationError(f"user_id must be a non-empty string of at most {MAX_USER_ID} characters")
        # One ask: the recommender itself on Lambda; in the local gateway's batches, answered with the
        # other waiting requests' by one ranking (notify_core.coalesce, Recommender.recommend_each).
        result = ask(get_recommender().recommend_each, (user_id, limit))
        count, strategy, version = len(result.items), result.strategy, result.index_version
        return result.as_dict()
    except NotifyError as exc:
        status = exc.http_status
        raise
    except Exception:
        status = 500
        raise
    finally:
        log_fields(log, logging.INFO, "get_recommended_campaigns", {
            "request_id": rid, "user_id": user_id, "status": status, "count": count, "strategy": strategy,
            "index_version": version, "latency_ms": round((time.perf_counter() - started) * 1000, 3),
            "invocation": "api" if api else "direct"})


def _direct(event: Any, context: Any) -> dict[str, Any]:
    """A direct invocation: the body bare, errors with ``statusCode``."""
    rid = str(getattr(context, "aws_request_id", "") or "direct")
    try:
        if not isinstance(event, Mapping):
            raise ValidationError("event must be a JSON object")
        user_id, limit = event.get("user_id"), event.get("limit", DEFAULT_LIMIT)
        if not isinstance(user_id, str):
            raise ValidationError("user_id must be a string")
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
            raise ValidationError(f"limit must be an integer in 1..{MAX_LIMIT}")
        return _recommend(user_id, limit, rid=rid, api=False)
    except NotifyError as exc:
        return {"statusCode": exc.http_status,
                "error": {"type": type(exc).__name__, "message": str(exc), "request_id": rid}}
    except Exception:
        log.exception("unhandled error", extra={"request_id": rid})
        return {"statusCode": 500, "error": {"type": "InternalError", "message": "internal error", "request_id": rid}}


edge = Edge("recommendations", direct=_direct)


Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT)]
_LIMIT = TypeAdapter(Annotated[int, Field(ge=1, le=MAX_LIMIT)])


def _limit(raw: str | None) -> int:
    """``?limit=``, validated by pydantic with the bounds the OpenAPI document declares (:data:`Limit`)."""
    if raw is None or raw == "":
        return DEFAULT_LIMIT
    try:
        return _LIMIT.validate_python(raw, strict=False)
    except PydanticValidationError:
        raise ValidationError(f"limit must be an integer in 1..{MAX_LIMIT}") from None


# The hot path: Powertools routes it and documents its parameters, but its per-request validation
# middleware (~2x the cost of routing) is replaced by the one TypeAdapter check of ``limit`` above.
@edge.route("GET", "/v1/users/<user_id>/recommendations",
            summary="Top campaigns for a user", response_model=RecommendationsOut, validate=False)
def recommendations(
    user_id: Annotated[str, Path(min_length=1, max_length=MAX_USER_ID)],
    limit: Limit = DEFAULT_LIMIT,
) -> Any:  # a Response: serialised by the route, not validated again
    limit = _limit(edge.current_event().get_query_string_value("limit"))
    payload = _recommend(user_id, limit, rid=current().request_id, api=True)
    # Serialised here, not by Powertools' response validation: the reply is ours, and this path is hot.
    return Response(200, "application/json", _dumps(payload))


def _dumps(payload: Any) -> str:
    import orjson

    return orjson.dumps(payload).decode()


handler = edge.handler

"""Lambda ``generate_schedule``: plan a batch of users' day and write it to the Store.

Direct invocation ``{"user_ids": [...], "plan_day": "YYYY-MM-DD"}`` (the fan-out path: a coordinator
splits the user base into batches) or API Gateway v2 ``POST /v1/schedules`` with the same JSON body.
Replies with the counts (planned, inserted, cancelled, unchanged...). Settings and the Store are built
once per cold start, on the first request; tests install their own Store with :func:`use_store`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date
from typing import Any

from lambdas.coldstart import ColdStart
from lambdas.http import ApiEvent, ApiResponse, api_handler, body_bytes, json_response, request_id
from notify_core.clock import SYSTEM_CLOCK, Clock, today, utcnow
from notify_core.errors import PayloadTooLargeError, ValidationError
from notify_core.store.port import Store

MAX_USERS = 5_000  # per invocation: ~1 s of planning plus the Store writes, well inside a Lambda timeout
MAX_BODY_BYTES = 1024 * 1024

@dataclass(frozen=True, slots=True)
class _Deps:
    store: Store
    artefacts: Any  # the recommender's artefacts, or None: the planner's cosine fallback serves
    clock: Clock


def _build() -> _Deps:
    from notify_core.settings import load_settings
    from notify_core.store.factory import build_store

    settings = load_settings()
    try:
        from notify_core.recommend.artefacts import build_artefact_store

        artefacts = build_artefact_store(settings)
    except Exception:  # no recommender: the planner's cosine fallback serves
        artefacts = None
    return _Deps(build_store(settings), artefacts, settings.clock())


_deps = ColdStart(_build)


def use_store(store: Store | None, *, artefacts: Any = None, clock: Clock = SYSTEM_CLOCK) -> None:
    """Install the Store (and optionally recommender artefacts and a clock) this handler uses; None: from
    settings."""
    _deps.use(None if store is None else _Deps(store, artefacts, clock))


def parse_request(payload: Any, *, clock: Clock) -> tuple[list[str], date]:
    if not isinstance(payload, dict):
        raise ValidationError("body must be a JSON object with user_ids and plan_day")
    user_ids = payload.get("user_ids")
    if not isinstance(user_ids, list) or not user_ids or not all(isinstance(u, str) and u for u in user_ids):
        raise ValidationError("user_ids must be a non-empty list of non-empty strings")
    if len(user_ids) > MAX_USERS:
        raise PayloadTooLargeError(f"{len(user_ids)} user_ids; at most {MAX_USERS} per request")
    raw_day = payload.get("plan_day") or today(clock).isoformat()
    try:
        plan_day = date.fromisoformat(str(raw_day))
    except ValueError:
        raise ValidationError(f"plan_day must be YYYY-MM-DD, got {raw_day!r}") from None
    return list(dict.fromkeys(user_ids)), plan_day


def _plan(payload: Any) -> dict[str, Any]:
    from notify_core.scheduling.service import plan_for_users

    deps = _deps.get()
    user_ids, plan_day = parse_request(payload, clock=deps.clock)
    run = plan_for_users(deps.store, user_ids, plan_day=plan_day, now=utcnow(deps.clock),
                         artefacts=deps.artefacts)
    meta = run.metadata()
    return {"plan_day": run.plan_day, "requested": len(user_ids), **{k: meta[k] for k in (
        "users_planned", "notifications_planned", "store_inserted", "cancelled", "unchanged", "kept_delivered",
        "peak_minute_load", "capacity_violations", "candidate_source")}}


@api_handler
def _http(event: ApiEvent, context: Any) -> ApiResponse:
    raw = body_bytes(event, limit=MAX_BODY_BYTES)
    try:
        payload = json.loads(raw or b"null")
    except ValueError:
        raise ValidationError("body is not valid JSON") from None
    return json_response(200, _plan(payload), headers={"x-request-id": request_id(event)})


def handler(event: Any, context: Any) -> Any:
    """API Gateway v2 events (they carry ``requestContext``) get an HTTP reply; direct invocations get
    the counts dict, or ``{"error": ...}`` with ``statusCode`` 4xx/5xx on a bad request."""
    if isinstance(event, dict) and "requestContext" in event:
        return _http(event, context)
    from notify_core.errors import NotifyError

    try:
        return {"statusCode": 200, **_plan(event)}
    except NotifyError as exc:
        return {"statusCode": exc.http_status, "error": {"type": type(exc).__name__, "message": str(exc)}}

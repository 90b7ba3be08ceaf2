"""Lambda ``generate_schedule``: plan a batch of users' day and write it to the Store.

Direct invocation ``{"user_ids": [...], "plan_day": "YYYY-MM-DD"}`` (the fan-out path: a coordinator
splits the user base into batches) or ``POST /v1/schedules`` (scope ``schedules:write``, either API
Gateway payload version) with the same JSON body. Replies with the counts (planned, inserted, cancelled,
unchanged...). Every HTTP trigger is written to the audit trail. The plan day must lie within a year of
today (:func:`notify_core.scheduling.service.check_plan_day`). The Store comes from :mod:`lambdas.runtime`
at cold start; tests install their own with :func:`use_store`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic import ValidationError as PydanticValidationError

from lambdas import runtime
from lambdas.coldstart import ColdStart
from lambdas.edge import Edge, current
from notify_core.clock import SYSTEM_CLOCK, Clock, today, utcnow
from notify_core.errors import NotifyError, ValidationError
from notify_core.recommend.artefacts import ArtefactStore, build_artefact_store
from notify_core.security import audit
from notify_core.store.factory import seal_store
from notify_core.store.port import Store

MAX_USERS = 5_000  # per invocation: ~1 s of planning plus the Store writes, well inside a Lambda timeout
MAX_BODY_BYTES = 1024 * 1024


@dataclass(frozen=True, slots=True)
class _Deps:
    store: Store
    artefacts: ArtefactStore | None  # None: the planner's cosine fallback serves
    clock: Clock
    exploration_share: float = 0.0  # NOTIFY_EXPLORATION_SHARE: the bandit's share of slots, as the daily plan


def _build() -> _Deps:
    rt = runtime.get()
    # Where published indexes live; with none published yet the planner uses its cosine fallback.
    return _Deps(rt.store(seal_store), build_artefact_store(rt.settings), rt.clock, rt.settings.exploration_share)


_deps = ColdStart(_build)


def use_store(store: Store | None, *, artefacts: ArtefactStore | None = None, clock: Clock = SYSTEM_CLOCK) -> None:
    """Install the Store (and optionally recommender artefacts and a clock) this handler uses; None: from
    settings."""
    _deps.use(None if store is None else _Deps(store, artefacts, clock))


UserId = Annotated[str, Field(min_length=1, max_length=128)]


class ScheduleIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_ids: list[UserId] = Field(min_length=1, max_length=MAX_USERS)
    plan_day: date | None = Field(default=None, description="default: today (UTC)")


class ScheduleOut(BaseModel):
    plan_day: str
    requested: int
    users_planned: int
    notifications_planned: int
    store_inserted: int
    cancelled: int
    unchanged: int
    kept_delivered: int
    peak_minute_load: int
    capacity_violations: int
    candidate_source: str


def _plan(request: ScheduleIn) -> dict[str, Any]:
    from notify_core.scheduling.models import ExplorationOptions, PlanOptions
    from notify_core.scheduling.service import check_plan_day, plan_for_users

    deps = _deps.get()
    plan_day = check_plan_day(request.plan_day or today(deps.clock), today=today(deps.clock))
    user_ids = list(dict.fromkeys(request.user_ids))
    options = PlanOptions(exploration=ExplorationOptions(share=deps.exploration_share))
    run = plan_for_users(deps.store, user_ids, plan_day=plan_day, now=utcnow(deps.clock), options=options,
                         artefacts=deps.artefacts)
    meta = run.metadata()
    return {"plan_day": str(run.plan_day), "requested": len(user_ids), **{k: meta[k] for k in (
        "users_planned", "notifications_planned", "store_inserted", "cancelled", "unchanged", "kept_delivered",
        "peak_minute_load", "capacity_violations", "candidate_source")}}


def _direct(event: Any, context: Any) -> dict[str, Any]:
    """The counts dict, or ``{"error": ...}`` with ``statusCode`` 4xx/5xx on a bad request."""
    try:
        try:
            request = ScheduleIn.model_validate(event)
        except PydanticValidationError as exc:
            raise ValidationError(f"invalid request: {exc.errors()[0]['msg']}") from None
        return {"statusCode": 200, **_plan(request)}
    except NotifyError as exc:
        return {"statusCode": exc.http_status, "error": {"type": type(exc).__name__, "message": str(exc)}}


edge = Edge("schedules", direct=_direct)


@edge.route("POST", "/v1/schedules", summary="Plan a batch of users' day",
            max_body=MAX_BODY_BYTES)
def schedules(request: ScheduleIn) -> ScheduleOut:
    info = current()
    counts = _plan(request)
    deps = _deps.get()
    audit.record(deps.store, clock=deps.clock, action="schedule.trigger", actor=info.actor, source=info.source,
                 request_id=info.request_id, target=counts["plan_day"],
                 detail={"users": len(request.user_ids), **{k: counts[k] for k in (
                     "notifications_planned", "store_inserted", "cancelled")}})
    return ScheduleOut(**counts)


handler = edge.handler

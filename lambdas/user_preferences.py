"""Lambda ``user_preferences``: a user's notification preferences and history.

* ``GET /v1/users/{user_id}/preferences`` (scope ``users:read``): channels, opted-out categories, quiet
  hours, daily cap, time zone, global opt-out (:class:`notify_core.preferences.Preferences`).
* ``PUT /v1/users/{user_id}/preferences`` (scope ``users:write``): replaces them (400 on a value out of
  range, 404 for an unknown user), audited as ``preferences.update`` with before and after. The worker
  reads them at send time: an opt-out stops notifications already planned.
* ``GET /v1/users/{user_id}/notifications?limit=&cursor=`` (scope ``users:read``): the history, newest first,
  paginated with an opaque cursor (:mod:`notify_core.history`).

Store and clock come from :mod:`lambdas.runtime` at cold start; tests install their own with :func:`use_store`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from aws_lambda_powertools.event_handler.openapi.params import Path, Query
from pydantic import BaseModel

from lambdas import runtime
from lambdas.coldstart import ColdStart
from lambdas.edge import Edge, current
from notify_core.clock import SYSTEM_CLOCK, Clock, utcnow
from notify_core.history import MAX_LIMIT, Entry, user_history
from notify_core.preferences import Preferences, get_preferences, put_preferences
from notify_core.security import audit
from notify_core.store.factory import seal_store
from notify_core.store.port import Store

MAX_BODY = 16 * 1024
UserId = Annotated[str, Path(min_length=1, max_length=128)]


@dataclass(frozen=True, slots=True)
class _Deps:
    store: Store
    clock: Clock


def _build() -> _Deps:
    rt = runtime.get()
    return _Deps(rt.store(seal_store), rt.clock)


_deps = ColdStart(_build)


def use_store(store: Store | None, *, clock: Clock = SYSTEM_CLOCK) -> None:
    """Install the Store and clock these routes use (None: from settings on next use)."""
    _deps.use(None if store is None else _Deps(store, clock))


class PreferencesOut(Preferences):
    user_id: str


class HistoryOut(BaseModel):
    user_id: str
    items: list[Entry]  # the domain's dataclass: its fields are listed once, in notify_core.history
    next_cursor: str | None


edge = Edge("users")


@edge.route("GET", "/v1/users/<user_id>/preferences", summary="A user's notification preferences",
            response_model=PreferencesOut)
def read_preferences(user_id: UserId) -> PreferencesOut:
    prefs = get_preferences(_deps.get().store, user_id)
    return PreferencesOut(user_id=user_id, **prefs.model_dump())


@edge.route("PUT", "/v1/users/<user_id>/preferences", summary="Replace a user's notification preferences",
            max_body=MAX_BODY, response_model=PreferencesOut)
def write_preferences(user_id: UserId, preferences: Preferences) -> PreferencesOut:
    deps = _deps.get()
    info = current()
    change = put_preferences(deps.store, user_id, preferences, now=utcnow(deps.clock))
    audit.record(deps.store, clock=deps.clock, action="preferences.update", actor=info.actor, source=info.source,
                 request_id=info.request_id, target=user_id, before=change.before.model_dump(mode="json"),
                 after=change.after.model_dump(mode="json"))
    return PreferencesOut(user_id=user_id, **change.after.model_dump())


@edge.route("GET", "/v1/users/<user_id>/notifications",
            summary="A user's notification history (newest first, paginated)", response_model=HistoryOut)
def notifications(
    user_id: UserId,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 20,
    cursor: Annotated[str | None, Query(max_length=1024)] = None,
) -> HistoryOut:
    page = user_history(_deps.get().store, user_id, limit=limit, cursor=cursor)
    return HistoryOut(user_id=user_id, items=page.items,
                      next_cursor=page.next_cursor)


handler = edge.handler

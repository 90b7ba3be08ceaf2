"""The HTTP API's route table: method, path, the handler that serves it and the API key scope it needs.

One owner for every consumer: the local gateway mounts these routes, each handler module's
:class:`lambdas.edge.Edge` takes a route's scope from here (so a route cannot be declared with another
scope than the authorizer checks), the Lambda authorizer matches requests against it, and the
CloudFormation template renders its API routes and functions from it (checked against the OpenAPI
document). Plain data on purpose: importing it reaches no Store, so the authorizer's IAM role (derived
from its imports) stays the key table alone.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from notify_core.security.scopes import (
    ADMIN,
    CAMPAIGNS_READ,
    CAMPAIGNS_WRITE,
    EVENTS_WRITE,
    RECOMMENDATIONS_READ,
    SCHEDULES_WRITE,
    USERS_READ,
    USERS_WRITE,
)


@dataclass(frozen=True, slots=True)
class GatewayRoute:
    method: str
    path: str  # API Gateway / starlette template: /v1/users/{user_id}/recommendations
    handler: str  # "module:function"
    inline: bool = False  # local gateway: run on the event loop (only handlers that never wait on I/O)
    # local gateway, inline routes: the requests waiting on one process run as one batch, whose shared asks
    # (notify_core.coalesce) are answered together (recommendations: one ranking of all their users)
    coalesce: bool = False
    scope: str | None = None  # None: public (the signed tracking links)
    regex: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        pattern = "^" + re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(self.path)) + "/?$"
        object.__setattr__(self, "regex", re.compile(pattern))

    @property
    def key(self) -> str:
        """API Gateway's route key: ``GET /v1/users/{user_id}/recommendations``."""
        return f"{self.method} {self.path}"


ROUTES: list[GatewayRoute] = [
    GatewayRoute("POST", "/v1/events", "lambdas.capture_events:handler", scope=EVENTS_WRITE),
    GatewayRoute("POST", "/v1/schedules", "lambdas.generate_schedule:handler", scope=SCHEDULES_WRITE),
    GatewayRoute("GET", "/v1/users/{user_id}/recommendations", "lambdas.get_recommended_campaigns:handler",
                 inline=True, coalesce=True, scope=RECOMMENDATIONS_READ),
    GatewayRoute("POST", "/v1/campaigns", "lambdas.upsert_campaign:handler", scope=CAMPAIGNS_WRITE),
    GatewayRoute("DELETE", "/v1/users/{user_id}", "lambdas.erase_user:handler", scope=ADMIN),
    GatewayRoute("GET", "/t/{notification_id}", "lambdas.track:click"),
    GatewayRoute("GET", "/o/{notification_id}", "lambdas.track:open_pixel"),
    # Issue 19: preferences, history, campaign analytics and previews, the one-click unsubscribe link.
    GatewayRoute("GET", "/v1/users/{user_id}/preferences", "lambdas.user_preferences:handler", scope=USERS_READ),
    GatewayRoute("PUT", "/v1/users/{user_id}/preferences", "lambdas.user_preferences:handler", scope=USERS_WRITE),
    GatewayRoute("GET", "/v1/users/{user_id}/notifications", "lambdas.user_preferences:handler", scope=USERS_READ),
    GatewayRoute("GET", "/v1/campaigns/{campaign_id}/stats", "lambdas.campaign_insights:handler",
                 scope=CAMPAIGNS_READ),
    GatewayRoute("POST", "/v1/campaigns/{campaign_id}/preview", "lambdas.campaign_insights:handler",
                 scope=CAMPAIGNS_READ),
    GatewayRoute("GET", "/u/{token}", "lambdas.unsubscribe:handler"),
    GatewayRoute("POST", "/u/{token}", "lambdas.unsubscribe:handler"),
]


def route_for(method: str, path: str) -> GatewayRoute | None:
    """The route a request is for (a concrete path: /v1/users/42/recommendations), or None."""
    method = method.upper()
    for route in ROUTES:
        if route.method == method and route.regex.match(path):
            return route
    return None


def declared(method: str, template: str) -> GatewayRoute:
    """The route declared as ``method template``; KeyError for a route missing from :data:`ROUTES`."""
    for route in ROUTES:
        if route.method == method.upper() and route.path == template:
            return route
    raise KeyError(f"{method} {template} is not in lambdas.routes.ROUTES")


def http_api_path(event: Mapping[str, Any]) -> str:
    """The path an API Gateway HTTP API (payload 2.0) event routes on: ``rawPath`` less a named stage
    (``/prod/v1/...`` on stage ``prod``), as API Gateway and Powertools' resolver read it; on the
    ``$default`` stage, ``rawPath`` itself."""
    path = str(event.get("rawPath", ""))
    stage = str((event.get("requestContext") or {}).get("stage") or "$default")
    if stage != "$default" and path.startswith(f"/{stage}/"):
        return path[len(stage) + 1 :]
    return path


def requested(event: Mapping[str, Any], method: str, path: str) -> GatewayRoute | None:
    """The route an API Gateway event asks for: the one its ``routeKey`` names when API Gateway matched a
    declared route (an HTTP API's authorizer and integration events carry it), else :func:`route_for`."""
    key = event.get("routeKey")
    if isinstance(key, str) and " " in key:
        key_method, template = key.split(" ", 1)
        try:
            return declared(key_method, template)
        except KeyError:
            return None  # a route API Gateway knows and this table does not: refused
    return route_for(method, path)

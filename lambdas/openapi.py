"""The OpenAPI document of the HTTP API, generated from every handler module's :class:`lambdas.edge.Edge`
(request and response models, typed parameters, scopes), served by ``notify serve`` at /openapi.json.

Its own module, so that a handler importing :mod:`lambdas.edge` does not reach every other handler (each
function's IAM role is derived from what its code can import, see ``notify_cli.deploy_access``).
"""

from __future__ import annotations

import json
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver

from lambdas.edge import SECURITY_SCHEME, Edge


def all_edges() -> list[Edge]:
    """Every HTTP handler module's edge (the OpenAPI document and the audit coverage test read these)."""
    from lambdas import (
        capture_events,
        erase_user,
        generate_schedule,
        get_recommended_campaigns,
        track,
        upsert_campaign,
    )

    return [capture_events.edge, get_recommended_campaigns.edge, upsert_campaign.edge, generate_schedule.edge,
            erase_user.edge, track.edge]


def openapi_document(*, title: str = "Notify API", version: str = "1") -> dict[str, Any]:
    """OpenAPI 3.1, generated from the routes' pydantic models and typed parameters."""
    from aws_lambda_powertools.event_handler.openapi.models import APIKey, APIKeyIn

    app = APIGatewayHttpResolver(enable_validation=True)
    for edge in all_edges():
        edge.register_on(app)
    schema = app.get_openapi_json_schema(
        title=title, version=version,
        description="Every route but the tracking links needs an API key with the route's scope: "
                    "`X-API-Key: nk_...` (or `Authorization: Bearer nk_...`). Errors are "
                    '`{"error": {"type", "message", "request_id"}}`.',
        security_schemes={SECURITY_SCHEME: APIKey.model_validate({"name": "X-API-Key", "in": APIKeyIn.header})})
    document: dict[str, Any] = json.loads(schema)
    return document

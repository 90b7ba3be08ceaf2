"""The API contract: /openapi.json is a valid OpenAPI document generated from the handlers' models, the
docs page serves, the gateway's own 404/405 are JSON, and schemathesis finds no server error on any route."""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from openapi_spec_validator import validate
from schemathesis.checks import not_a_server_error

from lambdas.gateway import build_app
from tests.api.conftest import Served


def test_openapi_json_is_valid_and_covers_every_gateway_route(served: Served) -> None:
    from lambdas.gateway import ROUTES

    reply = served.client.get("/openapi.json")
    assert reply.status_code == 200
    document = reply.json()
    validate(document)
    assert document["openapi"].startswith("3.")
    assert {(r.method, r.path) for r in ROUTES} == {(m.upper(), p) for p, item in document["paths"].items()
                                                   for m in item}
    recs = document["paths"]["/v1/users/{user_id}/recommendations"]["get"]
    assert recs["security"] == [{"apiKey": ["recommendations:read"]}]
    limit = next(p for p in recs["parameters"] if p["name"] == "limit")
    assert limit["schema"]["maximum"] == 100 and limit["schema"]["minimum"] == 1
    assert "CampaignIn" in document["components"]["schemas"]
    assert "security" not in document["paths"]["/t/{notification_id}"]["get"]


def test_docs_page_and_json_404_405(served: Served) -> None:
    docs = served.client.get("/docs")
    assert docs.status_code == 200 and "/openapi.json" in docs.text
    missing = served.client.get("/nowhere")
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "NotFoundError"
    assert missing.headers["content-type"] == "application/json"
    wrong = served.client.delete("/v1/events")
    assert wrong.status_code == 405 and wrong.json()["error"]["type"] == "MethodNotAllowedError"


schema = schemathesis.openapi.from_asgi("/openapi.json", build_app())


@pytest.fixture
def token(served: Served) -> str:
    return served.key("admin", rate_per_minute=1_000_000)


@schema.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_no_server_error_on_any_route(case: Any, served: Served, token: str) -> None:
    case.call_and_validate(headers={"x-api-key": token}, checks=[not_a_server_error])

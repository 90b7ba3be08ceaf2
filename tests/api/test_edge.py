"""The handler edge: both API Gateway payload versions, the inputs that used to be 500s, campaign URLs."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from lambdas import get_recommended_campaigns as recs
from notify_core import bounds
from notify_core.delivery.campaign_checks import check_campaign, check_redirect_url
from notify_core.errors import ValidationError
from notify_core.store import tables
from tests.api.conftest import Served


def rest_v1_event(path: str, *, token: str, method: str = "GET", query: dict[str, str] | None = None,
                  body: str | None = None, resource: str | None = None) -> dict[str, Any]:
    """A REST API (payload 1.0) ``aws-proxy`` event, as `sam local generate-event apigateway aws-proxy`."""
    return {
        "resource": resource or path, "path": path, "httpMethod": method,
        "headers": {"Accept": "application/json", "Content-Type": "application/json", "X-API-Key": token},
        "multiValueHeaders": {"X-API-Key": [token]},
        "queryStringParameters": query, "multiValueQueryStringParameters": {k: [v] for k, v in (query or {}).items()}
        or None, "pathParameters": None, "stageVariables": None, "body": body, "isBase64Encoded": False,
        "requestContext": {"accountId": "123456789012", "resourceId": "abc", "stage": "prod", "requestId": "rest-1",
                           "identity": {"sourceIp": "198.51.100.7", "userAgent": "curl"}, "resourcePath": path,
                           "httpMethod": method, "apiId": "api", "path": f"/prod{path}", "protocol": "HTTP/1.1",
                           "requestTimeEpoch": 1_700_000_000_000},
    }


def test_rest_v1_event_gets_a_proxy_reply_not_a_bare_dict(served: Served) -> None:
    token = served.key("recommendations:read")
    reply = recs.handler(rest_v1_event("/v1/users/u1/recommendations", token=token, query={"limit": "3"}), None)
    assert reply["statusCode"] == 200 and isinstance(reply["body"], str)
    assert len(json.loads(reply["body"])["recommendations"]) == 3
    denied = recs.handler(rest_v1_event("/v1/users/u1/recommendations", token="nope"), None)
    assert denied["statusCode"] == 401 and json.loads(denied["body"])["error"]["request_id"] == "rest-1"
    bad = recs.handler(rest_v1_event("/v1/users/u1/recommendations", token=token, query={"limit": "\u00b2"}), None)
    assert bad["statusCode"] == 400 and json.loads(bad["body"])["error"]["type"] == "ValidationError"


DEEP = "[" * 100_000 + "]" * 100_000


@pytest.mark.parametrize(("method", "path", "body"), [
    ("POST", "/v1/events", DEEP),
    ("POST", "/v1/campaigns", DEEP),
    ("POST", "/v1/schedules", DEEP),
    ("POST", "/v1/campaigns", '{"campaign_id":"c","name":"n","text":"t","x":' + "[" * 50_000 + "]" * 50_000 + "}"),
])
def test_deeply_nested_json_is_400(served: Served, method: str, path: str, body: str) -> None:
    reply = served.client.request(method, path, content=body, headers={"x-api-key": served.key("admin"),
                                                                       "content-type": "application/json"})
    assert reply.status_code in (400, 413) and reply.json()["error"]["type"] in {"ValidationError",
                                                                                 "PayloadTooLargeError"}


def test_the_former_500s_are_4xx(served: Served) -> None:
    headers = {"x-api-key": served.key("admin")}
    assert served.client.get("/v1/users/u1/recommendations?limit=\u00b2", headers=headers).status_code == 400
    campaign = {"campaign_id": "big", "name": "n", "text": "t"}
    for budget in (2**63, 2**64, 10**30):
        reply = served.client.post("/v1/campaigns", json=campaign | {"daily_budget": budget}, headers=headers)
        assert reply.status_code == 400 and "daily_budget" in reply.json()["error"]["message"]
    for ts in ("0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"):  # the calendar's edges
        event = {"type": "click", "user_id": "u1", "campaign_id": "c1", "ts": ts}
        reply = served.client.post("/v1/events", json=[event], headers=headers)
        assert reply.status_code < 500 and reply.json()["results"][0]["status"] == "rejected", reply.text
    today = datetime.fromtimestamp(served.clock.now(), UTC).date()
    for day in ("0001-01-01", "9999-12-31", (today + timedelta(days=400)).isoformat()):
        reply = served.client.post("/v1/schedules", json={"user_ids": ["u1"], "plan_day": day}, headers=headers)
        assert reply.status_code == 400 and "plan_day" in reply.json()["error"]["message"], reply.text
    reply = served.client.get("/v1/campaigns/c001/stats?until=0001-01-05", headers=headers)  # no window before it
    assert reply.status_code == 400 and "since" in reply.json()["error"]["message"], reply.text
    assert served.client.get("/v1/campaigns/c001/stats?since=0001-01-01&until=0001-01-05",
                             headers=headers).status_code == 200
    lone = base64.urlsafe_b64encode(json.dumps({"d": "\ud800", "k": "x"}).encode()).decode().rstrip("=")
    reply = served.client.get(f"/v1/users/u2/notifications?cursor={lone}", headers=headers)  # JSON, not UTF-8
    assert reply.status_code == 400 and "cursor" in reply.json()["error"]["message"], reply.text


@pytest.mark.parametrize("url", [
    "javascript:alert(1)", "data:text/html,<script>alert(1)</script>", "//evil.example/phish",
    "http://shop.example.com/", "https://user:pw@shop.example.com/", "https://shop.example.com@evil.example/",
    "https:\\\\evil.example", "https://", "https:///path", "ftp://shop.example.com",
    "https://shop.example.com/\npath", "JaVaScRiPt:alert(1)",
])
def test_unsafe_campaign_urls_are_refused(served: Served, url: str) -> None:
    with pytest.raises(ValidationError):
        check_redirect_url(url)
    reply = served.client.post("/v1/campaigns", json={"campaign_id": "u", "name": "n", "text": "t", "url": url},
                               headers={"x-api-key": served.key("campaigns:write")})
    assert reply.status_code == 400 and "url" in reply.json()["error"]["message"]


def test_campaign_url_allowlist() -> None:
    check_redirect_url("https://www.shop.example.com/a?b=c", allowed_domains=["shop.example.com"])
    check_redirect_url("https://www.shop.example.com/a?b=c", allowed_domains=[" .shop.example.com "])
    check_campaign(template="", url="")  # no URL: the click goes to the service's own base URL
    for url in ("https://evil.example/", "https://shop.example.com.evil.example/", "https://evilshop.example.com/"):
        with pytest.raises(ValidationError, match="allowed domains"):
            check_redirect_url(url, allowed_domains=["shop.example.com"])


def test_a_body_over_the_route_limit_is_413_before_parsing(served: Served) -> None:
    reply = served.client.post("/v1/campaigns", content=b'{"a":"' + b"x" * 70_000 + b'"}',
                               headers={"x-api-key": served.key("admin"), "content-type": "application/json"})
    assert reply.status_code == 413 and reply.json()["error"]["type"] == "PayloadTooLargeError"


def test_the_lambda_authorizer_makes_the_same_decision(served: Served) -> None:
    from lambdas import authorizer

    reader, writer = served.key("recommendations:read"), served.key("events:write")

    def v2(method: str, path: str, token: str | None) -> dict[str, Any]:
        return {"version": "2.0", "rawPath": path, "headers": {"x-api-key": token} if token else {},
                "requestContext": {"http": {"method": method, "path": path}}}

    assert authorizer.handler(v2("GET", "/v1/users/u1/recommendations", reader), None)["isAuthorized"] is True
    assert authorizer.handler(v2("GET", "/v1/users/u1/recommendations", writer), None)["isAuthorized"] is False
    assert authorizer.handler(v2("GET", "/v1/users/u1/recommendations", None), None)["isAuthorized"] is False
    assert authorizer.handler(v2("GET", "/t/abc", None), None)["isAuthorized"] is True
    # a named stage: the route API Gateway matched (routeKey) decides, else the path less the stage
    staged = {**v2("GET", "/prod/v1/users/u1/recommendations", reader), "routeKey": "$default",
              "requestContext": {"http": {"method": "GET"}, "stage": "prod"}}
    assert authorizer.handler(staged, None)["isAuthorized"] is True
    keyed = {**staged, "routeKey": "GET /v1/users/{user_id}/recommendations"}
    assert authorizer.handler(keyed, None)["isAuthorized"] is True
    assert authorizer.handler({**keyed, "headers": {"x-api-key": writer}}, None)["isAuthorized"] is False
    assert authorizer.handler({**keyed, "routeKey": "GET /v1/unknown"}, None)["isAuthorized"] is False
    assert authorizer.handler({**keyed, "routeKey": "DELETE /v1/users/{user_id}"}, None)["isAuthorized"] is False
    allowed = authorizer.handler(v2("POST", "/v1/events", writer), None)
    assert allowed["context"]["key_id"] == writer.split("_")[1]
    arn = "arn:aws:execute-api:eu-west-1:123456789012:api/prod/POST/v1/events"
    rest = authorizer.handler({"type": "TOKEN", "authorizationToken": f"Bearer {writer}", "methodArn": arn}, None)
    assert rest["policyDocument"]["Statement"][0]["Effect"] == "Allow"
    rest = authorizer.handler({"type": "TOKEN", "authorizationToken": f"Bearer {reader}", "methodArn": arn}, None)
    assert rest["policyDocument"]["Statement"][0]["Effect"] == "Deny"


def http_api_event(method: str, raw_path: str, *, stage: str, token: str | None) -> dict[str, Any]:
    """An HTTP API (payload 2.0) event on a stage: a named stage's ``rawPath`` starts with it."""
    return {"version": "2.0", "routeKey": "$default", "rawPath": raw_path, "rawQueryString": "",
            "headers": {"content-type": "application/json", **({"x-api-key": token} if token else {})},
            "requestContext": {"http": {"method": method, "path": raw_path, "sourceIp": "203.0.113.9"},
                               "stage": stage, "requestId": "r-1"}, "isBase64Encoded": False}


def test_a_path_spelling_the_resolver_routes_is_checked_like_the_route(served: Served) -> None:
    """A REST event's trailing slashes and an HTTP API's named stage: Powertools routes both to the route;
    the key check applies as it does to the plain path (they once ran an admin erase with no key)."""
    from lambdas import erase_user, user_preferences

    reader, admin = served.key("users:read"), served.key("admin")
    for path in ("/v1/users/u2/preferences", "/v1/users/u2/preferences/", "/v1/users/u2/preferences//"):
        assert user_preferences.handler(rest_v1_event(path, token=""), None)["statusCode"] == 401, path
        assert user_preferences.handler(rest_v1_event(path, token=reader), None)["statusCode"] == 200, path
    assert erase_user.handler(rest_v1_event("/v1/users/u2//", token="", method="DELETE"), None)["statusCode"] == 401
    assert erase_user.handler(rest_v1_event("/v1/users/u2//", token=reader, method="DELETE"), None)["statusCode"] == 403
    assert served.world.store.table(tables.USERS).query("u2")  # nothing was erased
    staged = "/prod/v1/users/u1/recommendations"
    assert recs.handler(http_api_event("GET", staged, stage="prod", token=None), None)["statusCode"] == 401
    good = recs.handler(http_api_event("GET", staged, stage="prod", token=served.key("recommendations:read")), None)
    assert good["statusCode"] == 200 and json.loads(good["body"])["user_id"] == "u1"
    assert erase_user.handler(rest_v1_event("/v1/users/u2", token=admin, method="DELETE"), None)["statusCode"] == 200


def test_the_route_checks_its_own_scope_whatever_the_edge_matched(served: Served, monkeypatch: Any) -> None:
    """Fail closed: with the edge's early match disabled (every path unknown to it), every scoped route
    still answers 401 without a key, 403 with another scope's, and runs with its own."""
    from lambdas.edge import Edge

    monkeypatch.setattr(Edge, "_match", lambda self, method, path: None)
    path = "/v1/users/u1/recommendations"
    assert recs.handler(rest_v1_event(path, token=""), None)["statusCode"] == 401
    assert recs.handler(rest_v1_event(path, token=served.key("events:write")), None)["statusCode"] == 403
    assert recs.handler(rest_v1_event(path, token=served.key("recommendations:read")), None)["statusCode"] == 200
    assert served.client.get(path).status_code == 401  # the local gateway runs the same handlers


@pytest.mark.parametrize(("field", "day"), [
    ("start_date", "9999-12-31"),  # no end_date: start + 365 days used to overflow into a 500
    ("start_date", "0001-01-01"),  # accepted here, quarantined by batch ingestion (bounds.MIN_DATE)
    ("end_date", "9999-12-31"),
    ("end_date", "1989-12-31"),
])
def test_campaign_dates_outside_the_bounds_are_a_400_naming_the_field(served: Served, field: str, day: str) -> None:
    """The API takes the campaign dates batch ingestion takes (``bounds.MIN_DATE``..``MAX_DATE``), on
    create and on edit (the same ``POST``), and names the field it refused."""
    headers = {"x-api-key": served.key("admin")}
    reply = served.client.post("/v1/campaigns", json={"campaign_id": "late", "name": "n", "text": "t", field: day},
                               headers=headers)
    assert reply.status_code == 400, reply.text
    assert field in reply.json()["error"]["message"], reply.text


@pytest.mark.parametrize(("field", "value"), [
    ("category", "c" * (bounds.MAX_CATEGORY_LENGTH + 1)),
    ("product_ids", ["p" * (bounds.MAX_ID_LENGTH + 1)]),
    ("target_countries", ["x" * (bounds.MAX_COUNTRY_LENGTH + 1)]),
    # the user's sends a cooldown is judged by are kept no longer (a year was accepted, honoured for 14 days)
    ("cooldown_hours", bounds.MAX_COOLDOWN_HOURS + 1),
])
def test_campaign_text_longer_than_ingestion_takes_is_a_400_naming_the_field(served: Served, field: str,
                                                                            value: object) -> None:
    """The campaign API bounds the same columns as batch ingestion (``notify_core.bounds``): a value one
    backend cannot hold or the lake would quarantine is refused here, not stored."""
    reply = served.client.post("/v1/campaigns", json={"campaign_id": "long", "name": "n", "text": "t", field: value},
                               headers={"x-api-key": served.key("admin")})
    assert reply.status_code == 400, reply.text
    assert field in reply.json()["error"]["message"], reply.text


def test_a_campaign_starting_near_max_date_ends_at_max_date(served: Served) -> None:
    """No end_date: a year after the start, capped at ``bounds.MAX_DATE`` so the stored row stays inside
    the bounds ingestion enforces; then an edit of the same campaign keeps to them as well."""
    headers = {"x-api-key": served.key("admin")}
    start = (bounds.MAX_DATE - timedelta(days=10)).isoformat()
    body = {"campaign_id": "late", "name": "n", "text": "t", "start_date": start}
    assert served.client.post("/v1/campaigns", json=body, headers=headers).status_code == 201
    row = served.world.store.table(tables.CAMPAIGNS).get("late", tables.CAMPAIGN_SK, consistent=True)
    assert row is not None and str(row["end_date"])[:10] == bounds.MAX_DATE.isoformat(), row
    edit = served.client.post("/v1/campaigns", json=body | {"start_date": bounds.MAX_DATE.isoformat()}, headers=headers)
    assert edit.status_code == 200, edit.text
    moved = served.client.post("/v1/campaigns", json=body | {"start_date": "9999-12-31"}, headers=headers)
    assert moved.status_code == 400 and "start_date" in moved.json()["error"]["message"], moved.text


def test_a_configuration_error_is_a_500_without_its_message(caplog: pytest.LogCaptureFixture) -> None:
    """A ConfigurationError (here the API-key pepper readable by others, raised by the key check before the
    caller is known) answered every caller, keyless ones included, with its message: the file's path and the
    server's security posture. It is logged with its message and answered as any 500."""
    from lambdas.http import error_reply
    from notify_core.errors import BackendError, ConfigurationError

    secret_path = "/srv/notify/secrets/pepper"
    with caplog.at_level("ERROR"):
        reply = error_reply(ConfigurationError(f"pepper file {secret_path} is readable by others: chmod 600 it"),
                            rid="r1")
    assert reply["statusCode"] == 500 and secret_path not in reply["body"]
    assert json.loads(reply["body"])["error"] == {"type": "InternalError", "message": "internal error",
                                                  "request_id": "r1"}
    assert any(secret_path in str(r.exc_info[1]) for r in caplog.records if r.exc_info), "logged for the operator"
    busy = error_reply(BackendError("database or disk is full"), rid="r2")  # a 503 still says why
    assert busy["statusCode"] == 503 and "disk is full" in busy["body"]

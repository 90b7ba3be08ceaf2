"""The handler edge: both API Gateway payload versions, the inputs that used to be 500s, campaign URLs."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from lambdas import get_recommended_campaigns as recs
from notify_core.delivery.campaign_checks import check_campaign, check_redirect_url
from notify_core.errors import ValidationError
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
    allowed = authorizer.handler(v2("POST", "/v1/events", writer), None)
    assert allowed["context"]["key_id"] == writer.split("_")[1]
    arn = "arn:aws:execute-api:eu-west-1:123456789012:api/prod/POST/v1/events"
    rest = authorizer.handler({"type": "TOKEN", "authorizationToken": f"Bearer {writer}", "methodArn": arn}, None)
    assert rest["policyDocument"]["Statement"][0]["Effect"] == "Allow"
    rest = authorizer.handler({"type": "TOKEN", "authorizationToken": f"Bearer {reader}", "methodArn": arn}, None)
    assert rest["policyDocument"]["Statement"][0]["Effect"] == "Deny"

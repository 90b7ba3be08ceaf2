"""The Lambda handlers with real API Gateway v2 event shapes, direct invocation, and over the gateway."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from lambdas import get_recommended_campaigns as recs
from lambdas import upsert_campaign as upserts
from notify_core.embeddings.embedder import HashingEmbedder
from tests import auth
from tests.recommend.conftest import DIM, NOW, World
from tests.servers import free_port, local_gateway, stop_process, wait_healthy


def api_event(path: str, *, method: str = "GET", path_params: dict[str, str] | None = None,
              query: dict[str, str] | None = None, body: str | None = None) -> dict[str, Any]:
    """An API Gateway HTTP API payload-2.0 event, as AWS sends it."""
    route = "/v1/users/{user_id}/recommendations" if method == "GET" else "/v1/campaigns"
    event: dict[str, Any] = {
        "version": "2.0", "routeKey": f"{method} {route}", "rawPath": path,
        "rawQueryString": "&".join(f"{k}={v}" for k, v in (query or {}).items()),
        "headers": {"accept": "application/json", "content-type": "application/json", "host": "api.example.com",
                    **auth.headers()},
        "requestContext": {
            "accountId": "123456789012", "apiId": "abc123", "domainName": "api.example.com",
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "203.0.113.1",
                     "userAgent": "pytest"},
            "requestId": "req-1", "routeKey": f"{method} {route}", "stage": "$default",
            "time": "01/Jan/2026:00:00:00 +0000", "timeEpoch": 1767225600000,
        },
        "isBase64Encoded": False,
    }
    if path_params is not None:
        event["pathParameters"] = path_params
    if query:
        event["queryStringParameters"] = query
    if body is not None:
        event["body"] = body
    return event


def rec_event(user_id: str, **query: str) -> dict[str, Any]:
    return api_event(f"/v1/users/{user_id}/recommendations", path_params={"user_id": user_id}, query=query or None)


@pytest.fixture
def installed(world: World) -> Iterator[World]:
    recs.use_recommender(world.recommender)
    upserts.use_state(upserts.UpsertState(store=world.store, embedder=world.embedder, holder=world.holder,
                                          lake=None, clock=world.clock))
    yield world
    recs.use_recommender(None)
    upserts.use_state(None)


def body(reply: dict[str, Any]) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(reply["body"])
    return parsed


def test_api_event_returns_top_10_with_scores_in_order(installed: World) -> None:
    reply = recs.handler(rec_event("u1"), None)
    assert reply["statusCode"] == 200 and reply["headers"]["content-type"] == "application/json"
    payload = body(reply)
    items = payload["recommendations"]
    assert len(items) == 10 and items[0]["campaign_id"] == "c000"
    assert [i["score"] for i in items] == sorted((i["score"] for i in items), reverse=True)
    assert payload["strategy"] == "personalised" and payload["index_version"] == installed.versions[-1]
    assert len(body(recs.handler(rec_event("u1", limit="3"), None))["recommendations"]) == 3


def test_direct_invocation(installed: World) -> None:
    payload = recs.handler({"user_id": "u1", "limit": 5}, None)
    assert "statusCode" not in payload and len(payload["recommendations"]) == 5
    assert recs.handler({"user_id": "u_new"}, None)["strategy"] == "fallback"
    assert recs.handler({"user_id": "nobody"}, None)["statusCode"] == 404


@pytest.mark.parametrize(
    ("event", "status"),
    [
        (rec_event("nobody"), 404),
        (rec_event("u1", limit="abc"), 400),
        (rec_event("u1", limit="0"), 400),
        (rec_event("u1", limit="1000"), 400),
        (rec_event("u1", limit="-1"), 400),
        (api_event("/v1/users//recommendations", path_params={}), 404),  # no such route
        (rec_event("x" * 500), 400),
    ],
    ids=["unknown-user", "limit-not-int", "limit-zero", "limit-too-big", "limit-negative", "no-user", "huge-id"],
)
def test_bad_input_is_a_clear_4xx(installed: World, event: dict[str, Any], status: int) -> None:
    reply = recs.handler(event, None)
    assert reply["statusCode"] == status
    error = body(reply)["error"]
    assert error["type"] in {"NotFoundError", "ValidationError"} and error["message"]


@pytest.mark.parametrize("event", [None, [], "u1", {"user_id": 5}, {"user_id": "u1", "limit": True},
                                   {"user_id": "u1", "limit": 2.5}])
def test_bad_direct_invocations_are_400_not_500(installed: World, event: Any) -> None:
    assert recs.handler(event, None)["statusCode"] == 400


def test_one_json_log_line_per_request_with_latency(installed: World, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="lambdas.get_recommended_campaigns")
    recs.handler(rec_event("u1"), None)
    recs.handler(rec_event("nobody"), None)
    lines = [r for r in caplog.records if r.name == "lambdas.get_recommended_campaigns"]
    assert len(lines) == 2
    assert [r.__dict__["status"] for r in lines] == [200, 404]
    assert all(isinstance(r.__dict__["latency_ms"], float) for r in lines)
    assert lines[0].__dict__["count"] == 10 and lines[0].__dict__["user_id"] == "u1"


def test_upsert_handler_validates(installed: World) -> None:
    bad = upserts.handler(api_event("/v1/campaigns", method="POST", body='{"campaign_id": "x"}'), None)
    assert bad["statusCode"] == 400 and "name" in body(bad)["error"]["message"]
    assert upserts.handler(api_event("/v1/campaigns", method="POST", body="{nope"), None)["statusCode"] == 400
    dates = json.dumps({"campaign_id": "d", "name": "n", "text": "t", "start_date": "2030-01-02",
                        "end_date": "2030-01-01"})
    assert upserts.handler(api_event("/v1/campaigns", method="POST", body=dates), None)["statusCode"] == 400


NEW_CAMPAIGN = {"campaign_id": "garden-lanterns-flash", "name": "garden lanterns flash sale",
                "text": "great garden lanterns deals this weekend", "category": "home decor",
                "product_ids": ["p001"], "priority": 5}


def test_a_created_campaign_is_in_the_top_10_at_once_without_a_rebuild(installed: World) -> None:
    versions = list(installed.versions)
    started = time.perf_counter()
    reply = upserts.handler(api_event("/v1/campaigns", method="POST", body=json.dumps(NEW_CAMPAIGN)), None)
    assert reply["statusCode"] == 201 and body(reply)["embedded"] is True
    top = [i["campaign_id"] for i in recs.handler({"user_id": "u1"}, None)["recommendations"]]
    elapsed = time.perf_counter() - started
    assert "garden-lanterns-flash" in top and elapsed < 60
    assert installed.versions == versions  # no rebuild happened
    # an edit that only pauses it costs no embedding and removes it at once
    paused = upserts.handler(api_event("/v1/campaigns", method="POST",
                                       body=json.dumps(NEW_CAMPAIGN | {"status": "paused"})), None)
    assert paused["statusCode"] == 200 and body(paused)["embedded"] is False
    top = [i["campaign_id"] for i in recs.handler({"user_id": "u1"}, None)["recommendations"]]
    assert "garden-lanterns-flash" not in top




@pytest.fixture
def gateway(installed: World) -> Iterator[str]:
    with local_gateway() as url:
        yield url


def test_through_the_gateway_over_http(gateway: str, installed: World) -> None:
    with httpx.Client(base_url=gateway, timeout=10, headers=auth.headers()) as client:
        ok = client.get("/v1/users/u1/recommendations", params={"limit": 10})
        assert ok.status_code == 200 and ok.json()["recommendations"][0]["campaign_id"] == "c000"
        assert client.get("/v1/users/nobody/recommendations").status_code == 404
        assert client.get("/v1/users/u1/recommendations", params={"limit": "x"}).status_code == 400
        started = time.perf_counter()
        created = client.post("/v1/campaigns", json=NEW_CAMPAIGN | {"campaign_id": "via-http"})
        assert created.status_code == 201
        top = [i["campaign_id"] for i in client.get("/v1/users/u1/recommendations").json()["recommendations"]]
        assert "via-http" in top and time.perf_counter() - started < 60


def test_notify_serve_with_two_worker_processes(installed: World) -> None:
    """`notify serve --workers 2`: two processes on one port, each cold-starting the handlers from the
    environment; concurrent requests (each worker runs those waiting on it as one batch) all answer, each with
    its own user's and limit's ranking as in-process, the unknown user 404."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "notify_cli.stream_commands", "serve", "--data-dir",
                               str(installed.root), "--port", str(port), "--workers", "2"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_healthy(server, base)
        children = Path(f"/proc/{server.pid}/task/{server.pid}/children").read_text().split()
        assert len(children) >= 2  # the forked worker processes
        key_file = installed.root / "secrets" / "admin.key"  # the first start wrote an admin key (0600)
        assert key_file.stat().st_mode & 0o777 == 0o600
        key = key_file.read_text().strip()
        assert httpx.get(f"{base}/v1/users/u1/recommendations", timeout=30).status_code == 401
        served = installed.recommender_with()  # serving's default: the learned ranker
        asks = [(("u1", "u2", "u_new")[i % 3], (10, 3)[i % 2]) for i in range(48)]
        expected = {ask: [r.campaign_id for r in served.recommend(ask[0], limit=ask[1]).items] for ask in set(asks)}
        with ThreadPoolExecutor(8) as pool:
            replies = list(pool.map(lambda ask: httpx.get(f"{base}/v1/users/{ask[0]}/recommendations", timeout=30,
                                                          params={"limit": ask[1]}, headers={"x-api-key": key}),
                                    [*asks, ("nobody", 10)]))
        assert [r.status_code for r in replies] == [200] * len(asks) + [404]
        got = [[i["campaign_id"] for i in r.json()["recommendations"]] for r in replies[:len(asks)]]
        assert got == [expected[ask] for ask in asks], (got[0], expected[asks[0]], replies[0].json())
    finally:
        stop_process(server)


def test_another_serving_process_sees_an_upsert_within_its_refresh_tick(installed: World) -> None:
    """A second holder (as in another gateway process) polls the persisted overlay."""
    from notify_core.recommend.recommender import Recommender
    from notify_core.recommend.serving import IndexHolder
    from notify_core.recommend.updates import upsert_campaign

    other = Recommender(store=installed.store, holder=IndexHolder(installed.artefacts, refresh_seconds=0.2),
                        clock=installed.clock)
    assert "other-proc" not in [r.campaign_id for r in other.recommend("u1").items]
    started = time.perf_counter()
    upsert_campaign(NEW_CAMPAIGN | {"campaign_id": "other-proc"}, store=installed.store,
                    embedder=HashingEmbedder(dim=DIM), holder=installed.holder, now=NOW)
    while "other-proc" not in [r.campaign_id for r in other.recommend("u1").items]:
        assert time.perf_counter() - started < 60
        time.sleep(0.05)
    assert time.perf_counter() - started < 5


def test_upsert_logs_its_result_as_one_json_line(installed: World, caplog: pytest.LogCaptureFixture) -> None:
    """At INFO (as `notify serve --log-level INFO` and Lambda run it) the request log line must not clash
    with LogRecord's own attributes (the result has a ``created`` field)."""
    import logging

    with caplog.at_level(logging.INFO, logger="lambdas.upsert_campaign"):
        reply = upserts.handler(api_event("/v1/campaigns", method="POST", body=json.dumps(NEW_CAMPAIGN)), None)
    assert reply["statusCode"] == 201
    record = next(r for r in caplog.records if r.getMessage() == "upsert_campaign")
    assert record.campaign["created"] is True  # type: ignore[attr-defined]

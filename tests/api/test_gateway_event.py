"""The gateway's request -> API Gateway event translation reads the ASGI scope directly; every field it
fills must be what Starlette's ``Request`` says about the same request (the translation used to ask it)."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.requests import Request

from lambdas.gateway import to_api_event
from lambdas.routes import ROUTES

ROUTE = next(r for r in ROUTES if r.path.endswith("/recommendations"))


def scope_of(path: str, *, query: bytes = b"", headers: list[tuple[bytes, bytes]] | None = None,
             server: tuple[str, int] | None = ("127.0.0.1", 8080), client: tuple[str, int] | None = ("10.1.2.3", 5000),
             scheme: str = "http") -> dict[str, Any]:
    return {"type": "http", "http_version": "1.1", "method": "GET", "path": path, "raw_path": path.encode(),
            "query_string": query, "scheme": scheme, "server": server, "client": client, "root_path": "",
            "path_params": {"user_id": "u1"},
            "headers": headers if headers is not None else [(b"host", b"api.example.com:8080")]}


CASES = [
    scope_of("/v1/users/u1/recommendations"),
    scope_of("/v1/users/u1/recommendations", query=b"limit=5&limit=7&empty=&x=%C3%A9"),
    scope_of("/v1/users/a?b#c\\d/recommendations", query=b"a=1#frag"),  # decoded path with ? # \
    scope_of("/v1/users/tab\there\r\n/recommendations", query=b"q=a\tb"),  # urlsplit drops tab/CR/LF
    scope_of("/v1/users/u1/recommendations", headers=[(b"host", b"[::1]:9000"), (b"X-Odd", b"1")]),
    scope_of("/v1/users/u1/recommendations", headers=[], server=("::1", 80)),  # no Host header: the server's
    scope_of("/v1/users/u1/recommendations", headers=[], server=None, client=None),
    scope_of("/v1/users/u1/recommendations", headers=[(b"host", b"bad host:xx")]),
    scope_of("/v1/users/u1/recommendations", headers=[
        (b"host", b"EXAMPLE.com"), (b"x-request-id", b"first-id"), (b"x-request-id", b"second"),
        (b"accept", b"a"), (b"accept", b"b"), (b"user-agent", b"bench/1 \xe9")]),
]


@pytest.mark.parametrize("scope", CASES, ids=range(len(CASES)))
def test_the_event_says_what_starlettes_request_says(scope: dict[str, Any]) -> None:
    request = Request(scope)
    event = to_api_event(Request(scope), ROUTE, b"")
    assert event["rawPath"] == request.url.path == event["requestContext"]["http"]["path"]
    assert event["rawQueryString"] == request.url.query
    assert event["requestContext"]["domainName"] == (request.url.hostname or "localhost")
    expected_headers: dict[str, str] = {}
    for name, value in request.headers.items():
        expected_headers[name] = f"{expected_headers[name]},{value}" if name in expected_headers else value
    assert event["headers"] == expected_headers
    expected_query: dict[str, str] = {}
    for name, value in request.query_params.multi_items():
        expected_query[name] = f"{expected_query[name]},{value}" if name in expected_query else value
    assert event.get("queryStringParameters", {}) == expected_query
    assert event["requestContext"]["http"]["sourceIp"] == (request.client.host if request.client else "127.0.0.1")
    assert event["requestContext"]["http"]["userAgent"] == request.headers.get("user-agent", "")
    assert event["pathParameters"] == {"user_id": "u1"}
    if request.headers.get("x-request-id") == "first-id":  # the first of repeated ids, as before
        assert event["requestContext"]["requestId"] == "first-id"


def test_the_time_text_follows_the_clock_second_by_second() -> None:
    first = to_api_event(Request(CASES[0]), ROUTE, b"")["requestContext"]
    import time

    expected = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(first["timeEpoch"] // 1000))
    assert first["time"] == expected

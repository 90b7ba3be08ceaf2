"""Event fixtures shared by the event tests: payloads, API Gateway v2 events, reading a Store back."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

from notify_core.clock import ManualClock
from tests import auth

# The event tests' own "now": the day after the events below happened (the capture edge rejects events
# from the future, judged by this clock, never by the calendar).
EVENTS_NOW = datetime(2024, 3, 2, 9, 0, tzinfo=UTC)


def events_clock() -> ManualClock:
    return ManualClock(EVENTS_NOW)


def click(i: int = 0, **extra: Any) -> dict[str, Any]:
    return {"type": "click", "user_id": f"u{i % 13}", "ts": f"2024-03-01T10:{i // 60 % 60:02d}:{i % 60:02d}Z",
            "campaign_id": f"c{i % 5}", **extra}


def order(i: int = 0, **extra: Any) -> dict[str, Any]:
    return {
        "type": "order", "user_id": f"u{i % 13}", "ts": f"2024-03-01T11:{i // 60 % 60:02d}:{i % 60:02d}Z",
        "order_id": f"o{i}", "country": "United Kingdom",
        "items": [{"product_id": "p1", "quantity": 2, "unit_price": 1.5}, {"product_id": f"p{i % 9 + 2}",
                                                                           "quantity": -1, "unit_price": 3.0}],
        **extra,
    }


def api_event(body: Any, *, method: str = "POST", path: str = "/v1/events", base64_body: bool = False,
              raw: bool = False) -> dict[str, Any]:
    """An API Gateway HTTP API payload v2.0 event, as AWS documents it."""
    text = body if raw else json.dumps(body)
    encoded = base64.b64encode(text.encode() if isinstance(text, str) else text).decode() if base64_body else text
    return {
        "version": "2.0",
        "routeKey": f"{method} {path}",
        "rawPath": path,
        "rawQueryString": "",
        "cookies": [],
        "headers": {"content-type": "application/json", "host": "api.example.com", "user-agent": "pytest",
                    **auth.headers()},
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "api-id",
            "domainName": "api.example.com",
            "domainPrefix": "api",
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "192.0.2.1",
                     "userAgent": "pytest"},
            "requestId": "c6af9ac6-7b61-11e6-9a41-93e8deadbeef",
            "routeKey": f"{method} {path}",
            "stage": "$default",
            "time": "12/Mar/2020:19:03:58 +0000",
            "timeEpoch": 1583348638390,
        },
        "body": encoded,
        "isBase64Encoded": base64_body,
    }

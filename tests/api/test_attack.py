"""The scripted attack: every route of the OpenAPI document x (no key, wrong scope, expired, revoked, valid).

Run with ``-s`` to print the table (it is in notes/h14edge.md). Also: rate limits answer 429 with
Retry-After, rotation keeps the old key for the overlap only, and garbage keys are 401 alike.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from lambdas.openapi import openapi_document
from notify_core.delivery.synthetic import seed_due
from notify_core.delivery.tracking import sign_token
from notify_core.security.keys import (
    ADMIN,
    CAMPAIGNS_WRITE,
    EVENTS_WRITE,
    RECOMMENDATIONS_READ,
    SCHEDULES_WRITE,
)
from notify_core.store import tables
from tests.api.conftest import Served
from tests.events.helpers import click

CAMPAIGN = {"campaign_id": "attack-test", "name": "lanterns", "text": "garden lanterns deals",
            "url": "https://shop.example.com/lanterns"}


def _requests(served: Served) -> dict[tuple[str, str], dict[str, Any]]:
    """Per OpenAPI operation: a well-formed request, its scope (None: public) and the status a valid key gets."""
    today = datetime.fromtimestamp(served.clock.now(), UTC).date().isoformat()
    nid = _sent_notification(served)
    forged = f"{nid}.{served.tracking.active_kid}.{'A' * 22}"  # a real id and key id, a guessed mac
    return {
        ("GET", "/v1/users/{user_id}/recommendations"): {
            "path": "/v1/users/u1/recommendations", "scope": RECOMMENDATIONS_READ, "ok": {200}},
        ("POST", "/v1/events"): {"path": "/v1/events", "json": {"events": [click(1)]}, "scope": EVENTS_WRITE,
                                 "ok": {202}},
        ("POST", "/v1/campaigns"): {"path": "/v1/campaigns", "json": CAMPAIGN, "scope": CAMPAIGNS_WRITE,
                                    "ok": {200, 201}},
        ("POST", "/v1/schedules"): {"path": "/v1/schedules", "json": {"user_ids": ["u1"], "plan_day": today},
                                    "scope": SCHEDULES_WRITE, "ok": {200}},
        ("DELETE", "/v1/users/{user_id}"): {"path": "/v1/users/u-erased", "scope": ADMIN, "ok": {200}},
        # public: a forged link is 404 whatever the key; a signed link of a sent notification works
        ("GET", "/t/{notification_id}"): {"path": f"/t/{forged}", "scope": None, "ok": {404},
                                          "valid_path": f"/t/{sign_token(served.tracking, nid, kind='click')}",
                                          "valid_ok": {302}},
        ("GET", "/o/{notification_id}"): {"path": f"/o/{forged}", "scope": None, "ok": {404},
                                          "valid_path": f"/o/{sign_token(served.tracking, nid, kind='open')}",
                                          "valid_ok": {200}},
    }


def _sent_notification(served: Served) -> str:
    """A notification that was delivered (its tracking links are live)."""
    now = datetime.fromtimestamp(served.clock.now(), UTC)
    [item] = seed_due(served.world.store, n=1, start=now)
    nid = str(item["notification_id"])
    served.world.store.table(tables.DEDUPE).put({"pk": nid, "sk": tables.DEDUPE_SK, "user_id": item["user_id"],
                                                 "campaign_id": item["campaign_id"], "delivered_at": now.isoformat()})
    return nid


def _other_scope(scope: str | None) -> str:
    return next(s for s in (EVENTS_WRITE, RECOMMENDATIONS_READ, CAMPAIGNS_WRITE, SCHEDULES_WRITE) if s != scope)


def test_every_route_times_every_credential_gives_the_expected_status(served: Served) -> None:
    requests = _requests(served)
    operations = {(m.upper(), p) for p, item in openapi_document()["paths"].items() for m in item}
    assert operations == set(requests), "a route is missing from the attack table"

    # Expired first (made now, then time moves 91 days on), then the others under the new time.
    expired = {op: served.key(spec["scope"] or EVENTS_WRITE, ttl_days=90) for op, spec in requests.items()}
    served.clock.advance(91 * 86400)
    variants: dict[str, dict[tuple[str, str], str | None]] = {
        "no key": dict.fromkeys(requests),
        "garbage key": dict.fromkeys(requests, "nk_000000000000_" + "A" * 43),
        "wrong scope": {op: served.key(_other_scope(spec["scope"])) for op, spec in requests.items()},
        "expired": expired,
        "revoked": {},
        "valid": {op: served.key(spec["scope"] or EVENTS_WRITE) for op, spec in requests.items()},
    }
    for op, spec in requests.items():
        token = served.key(spec["scope"] or EVENTS_WRITE)
        served.keyring.revoke(token.split("_")[1], actor="tests", source="pytest")
        variants["revoked"][op] = token

    expected = {"no key": {401}, "garbage key": {401}, "wrong scope": {403}, "expired": {401}, "revoked": {401}}
    table: list[str] = ["| route | " + " | ".join(variants) + " |", "|---" * (len(variants) + 1) + "|"]
    failures = []
    for op, spec in requests.items():
        cells = []
        for variant, tokens in variants.items():
            token = tokens[op]
            headers = {"x-api-key": token} if token else {}
            path, want = spec["path"], spec["ok"] if spec["scope"] is None or variant == "valid" else expected[variant]
            if spec["scope"] is None and variant == "valid":
                path, want = spec["valid_path"], spec["valid_ok"]
            reply = served.client.request(op[0], path, json=spec.get("json"), headers=headers,
                                          follow_redirects=False)
            cells.append(str(reply.status_code))
            if reply.status_code not in want:
                failures.append((op, variant, reply.status_code, reply.text[:200]))
            if reply.status_code in (401, 403):
                assert reply.json()["error"]["type"] in {"UnauthorizedError", "ForbiddenError"}
        table.append(f"| {op[0]} {op[1]} ({spec['scope'] or 'public'}) | " + " | ".join(cells) + " |")
    print("\n" + "\n".join(table))
    assert not failures, failures


def test_an_admin_key_may_call_every_scoped_route(served: Served) -> None:
    token = served.key("admin")
    for _op, spec in _requests(served).items():
        reply = served.client.request(_op[0], spec["path"], json=spec.get("json"), headers={"x-api-key": token})
        assert reply.status_code in spec["ok"], (_op, reply.text)


def test_over_the_rate_is_429_with_retry_after_then_admitted_again(served: Served) -> None:
    token = served.key(RECOMMENDATIONS_READ, rate_per_minute=3)
    headers = {"authorization": f"Bearer {token}"}
    statuses = [served.client.get("/v1/users/u1/recommendations", headers=headers).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    limited = served.client.get("/v1/users/u1/recommendations", headers=headers)
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
    assert limited.json()["error"]["type"] == "RateLimitedError"
    served.clock.advance(int(limited.headers["retry-after"]))
    assert served.client.get("/v1/users/u1/recommendations", headers=headers).status_code == 200
    other = served.key(RECOMMENDATIONS_READ, rate_per_minute=3)  # limits are per key
    assert served.client.get("/v1/users/u1/recommendations", headers={"x-api-key": other}).status_code == 200


def test_rotation_keeps_the_old_key_for_the_overlap_only(served: Served) -> None:
    old = served.key(RECOMMENDATIONS_READ)
    _new_key, new = served.keyring.rotate(old.split("_")[1], overlap_s=3600, actor="tests", source="pytest")
    for token in (old, new):
        assert served.client.get("/v1/users/u1/recommendations", headers={"x-api-key": token}).status_code == 200
    served.clock.advance(3601)
    assert served.client.get("/v1/users/u1/recommendations", headers={"x-api-key": old}).status_code == 401
    assert served.client.get("/v1/users/u1/recommendations", headers={"x-api-key": new}).status_code == 200


@pytest.mark.parametrize("token", ["", "Bearer", "nk_", "nk_zzzzzzzzzzzz_" + "A" * 43, "x" * 10_000,
                                   "nk_0123456789ab_" + "A" * 42 + "%"])
def test_malformed_keys_are_401(served: Served, token: str) -> None:
    reply = served.client.get("/v1/users/u1/recommendations", headers={"x-api-key": token})
    assert reply.status_code == 401


def test_a_key_is_stored_only_as_a_keyed_hash(served: Served) -> None:
    token = served.key(RECOMMENDATIONS_READ)
    key_id, secret = token.split("_", 2)[1:]
    rows = list(served.world.store.table("api_keys").scan())
    assert rows and all(secret not in repr(row) for row in rows)
    row = next(r for r in rows if r["pk"] == key_id)
    assert len(row["hash"]) == 64 and row["hash"] != secret

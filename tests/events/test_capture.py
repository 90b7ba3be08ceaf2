"""The capture Lambda handler with real API Gateway v2 events, and the same handler over HTTP."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from lambdas import capture_events
from notify_core.events import CLICKSTREAM, PURCHASE_HISTORY, decode_event
from notify_core.stream.local_log import LocalLog
from notify_core.stream.port import Record
from tests import auth
from tests.events.helpers import api_event, click, order
from tests.servers import local_gateway


@pytest.fixture
def log(tmp_path: Path) -> Iterator[LocalLog]:
    stream = LocalLog(tmp_path / "log.sqlite")
    capture_events.use_stream(stream)
    yield stream
    capture_events.use_stream(None)
    stream.close()


def records(log: LocalLog, *topics: str) -> list[Record]:
    consumer = log.consumer(group=f"check-{time.monotonic_ns()}", topics=list(topics))
    return consumer.poll_batch(max_records=100_000, timeout=0)


def reply(response: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    return response["statusCode"], json.loads(response["body"])


def test_a_mixed_batch_is_accepted_per_event_and_routed_by_type(log: LocalLog) -> None:
    body = {"events": [click(1), order(2), {"type": "bogus", "user_id": "u"}, click(3, event_id="mine")]}
    status, payload = reply(capture_events.handler(api_event(body), None))
    assert status == 202
    assert payload["accepted"] == 3 and payload["rejected"] == 1
    assert [r["status"] for r in payload["results"]] == ["accepted", "accepted", "rejected", "accepted"]
    assert payload["results"][2]["reason"].startswith("unknown event type 'bogus'")
    assert payload["results"][3]["event_id"] == "mine"
    assert payload["results"][1]["topic"] == PURCHASE_HISTORY
    clicks, orders = records(log, CLICKSTREAM), records(log, PURCHASE_HISTORY)
    assert len(clicks) == 2 and len(orders) == 1
    assert {r.key for r in clicks} == {b"u1", b"u3"}  # keyed by user
    assert decode_event(orders[0].value).event_id == payload["results"][1]["event_id"]


def test_base64_bodies_are_decoded(log: LocalLog) -> None:
    status, payload = reply(capture_events.handler(api_event(click(), base64_body=True), None))
    assert status == 202 and payload["accepted"] == 1


def test_a_client_retry_produces_the_same_ids(log: LocalLog) -> None:
    first = reply(capture_events.handler(api_event([click(1), order(1)]), None))[1]
    second = reply(capture_events.handler(api_event([click(1), order(1)]), None))[1]
    assert [r["event_id"] for r in first["results"]] == [r["event_id"] for r in second["results"]]


@pytest.mark.parametrize(
    ("event", "status", "error"),
    [
        (api_event('{"type": "click", "user_id"', raw=True), 400, "malformed JSON"),
        (api_event({"type": "unknown", "user_id": "u", "ts": "2024-01-01T00:00:00Z"}), 400, None),
        (api_event({"type": "click", "ts": "2024-01-01T00:00:00Z"}), 400, None),
        (api_event("x" * (10 * 1024 * 1024), raw=True), 413, "limit"),
        (api_event([click(i) for i in range(501)]), 413, "501 events"),
        (api_event("not base64!", raw=True, base64_body=False) | {"isBase64Encoded": True}, 400, "base64"),
    ],
)
def test_bad_requests_get_a_clear_4xx(log: LocalLog, event: dict[str, Any], status: int, error: str | None) -> None:
    got, payload = reply(capture_events.handler(event, None))
    assert got == status
    if error is not None:
        assert error in payload["error"]["message"]
        assert payload["error"]["request_id"] == event["requestContext"]["requestId"]
    else:  # a single bad event: rejected with its reason, as part of the per-event results
        assert payload["accepted"] == 0 and payload["results"][0]["reason"]
    assert records(log, CLICKSTREAM, PURCHASE_HISTORY) == []


def test_a_stream_failure_is_a_503_and_nothing_is_half_accepted(tmp_path: Path) -> None:
    class Broken(LocalLog):
        def produce_batch(self, messages: Any) -> None:
            from notify_core.errors import BackendError

            raise BackendError("stream down")

    capture_events.use_stream(Broken(tmp_path / "log.sqlite"))
    try:
        status, payload = reply(capture_events.handler(api_event([click(1)]), None))
    finally:
        capture_events.use_stream(None)
    assert status == 503 and payload["error"]["type"] == "BackendError"


# --- over HTTP: the local gateway ------------------------------------------------------------------


@pytest.fixture
def gateway(log: LocalLog) -> Iterator[str]:
    with local_gateway() as url:
        yield url


def test_gateway_serves_the_handler_to_concurrent_clients(gateway: str, log: LocalLog) -> None:
    def send(i: int) -> int:
        body = {"events": [click(i * 100 + j) for j in range(100)]}
        return httpx.post(f"{gateway}/v1/events", json=body, timeout=30, headers=auth.headers()).status_code

    with ThreadPoolExecutor(8) as pool:
        assert set(pool.map(send, range(40))) == {202}
    assert len(records(log, CLICKSTREAM)) == 4000


def test_gateway_cuts_off_a_10_mb_body_and_rejects_bad_json(gateway: str, log: LocalLog) -> None:
    big = httpx.post(f"{gateway}/v1/events", content=b"x" * (10 * 1024 * 1024), timeout=30,
                     headers=auth.headers())
    assert big.status_code == 413
    bad = httpx.post(f"{gateway}/v1/events", content=b"{nope",
                     headers={"content-type": "application/json", **auth.headers()})
    assert bad.status_code == 400 and "malformed JSON" in bad.json()["error"]["message"]
    binary = httpx.post(f"{gateway}/v1/events", content=base64.b64decode("AAEC"),
                        headers={"content-type": "application/octet-stream", **auth.headers()})
    assert binary.status_code == 400
    assert httpx.get(f"{gateway}/v1/events").status_code == 405
    assert httpx.get(f"{gateway}/healthz").json() == {"status": "ok"}


# --- the README's limits: "one event or a batch of up to 500 (1 MiB body)" ---------------------------


def _padded(body: Any, size: int) -> str:
    """``body`` as JSON, padded with trailing spaces (still valid JSON) to exactly ``size`` bytes."""
    text = json.dumps(body)
    assert len(text) <= size
    return text + " " * (size - len(text))


def test_a_batch_of_exactly_500_events_is_accepted_and_501_is_not(log: LocalLog) -> None:
    status, payload = reply(capture_events.handler(api_event([click(i) for i in range(500)]), None))
    assert status == 202 and payload["accepted"] == 500 and payload["rejected"] == 0
    assert len(records(log, CLICKSTREAM)) == 500
    status, payload = reply(capture_events.handler(api_event([click(i) for i in range(501)]), None))
    assert status == 413 and "501 events" in payload["error"]["message"]
    assert len(records(log, CLICKSTREAM)) == 500  # nothing of the refused batch


def test_a_body_of_exactly_1_mib_is_read_and_one_byte_more_is_413(log: LocalLog, gateway: str) -> None:
    mib = 1024 * 1024
    for send in ("handler", "http"):
        for size, want in ((mib, 202), (mib + 1, 413)):
            text = _padded({"events": [click(size % 7)]}, size)
            if send == "handler":
                got = reply(capture_events.handler(api_event(text, raw=True), None))[0]
            else:
                got = httpx.post(f"{gateway}/v1/events", content=text.encode(), timeout=30,
                                 headers={"content-type": "application/json", **auth.headers()}).status_code
            assert got == want, (send, size, got)
    assert len(records(log, CLICKSTREAM)) == 2  # the two bodies of exactly 1 MiB, nothing else


def test_a_batch_whose_every_event_is_rejected_is_400_with_a_reason_each(log: LocalLog) -> None:
    bad = [{"type": "click", "user_id": "u1"}, {"type": "bogus", "user_id": "u2"}]  # no ts; unknown type
    status, payload = reply(capture_events.handler(api_event({"events": bad}), None))
    assert status == 400 and payload["accepted"] == 0 and payload["rejected"] == 2
    assert all(r["status"] == "rejected" and r["reason"] for r in payload["results"])
    status, payload = reply(capture_events.handler(api_event({"events": [*bad, click(3)]}), None))
    assert status == 202 and payload["accepted"] == 1 and payload["rejected"] == 2  # one good event: 202
    assert len(records(log, CLICKSTREAM)) == 1

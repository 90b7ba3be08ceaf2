"""Metrics and logs of the running service: a small load run against a real ``notify serve``, then
/metrics must show per-route histograms with exactly the requests sent; the JSON log lines and the EMF
records of the handler edge."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from lambdas import capture_events
from lambdas.http import api_handler
from notify_core.errors import ValidationError
from notify_core.metrics import emf_line
from notify_core.observability import Invocations, JsonFormatter, request_context
from tests.events.helpers import api_event, click
from tests.servers import free_port, serve_admin_key, stop_process, wait_healthy

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(base: str) -> Samples:
    text = httpx.get(f"{base}/metrics", timeout=10).text
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path, str]]:
    port = free_port()
    log_file = tmp_path / "serve.log"
    with log_file.open("wb") as err:
        server = subprocess.Popen([sys.executable, "-m", "notify_cli.stream_commands", "serve", "--data-dir",
                                   str(tmp_path / "data"), "--port", str(port), "--log-level", "INFO"],
                                  stdout=subprocess.DEVNULL, stderr=err)
        try:
            base = f"http://127.0.0.1:{port}"
            wait_healthy(server, base)
            yield base, log_file, serve_admin_key(tmp_path / "data")
        finally:
            stop_process(server)


def test_a_load_run_shows_per_route_histograms_with_the_right_counts(served: tuple[str, Path, str]) -> None:
    base, log_file, key = served
    good, bad, tracked, stray = 120, 15, 20, 7
    with httpx.Client(base_url=base, timeout=30, headers={"x-api-key": key}) as client, ThreadPoolExecutor(8) as pool:
        posts = list(pool.map(lambda i: client.post("/v1/events", json=[click(i), click(i + 1)]), range(good)))
        rejects = list(pool.map(lambda i: client.post("/v1/events", json=[{"type": "bogus"}]), range(bad)))
        clicks = list(pool.map(lambda i: client.get(f"/t/unknown-{i}"), range(tracked)))  # 20 distinct raw paths
        strays = list(pool.map(lambda i: client.get(f"/no/such/{i}"), range(stray)))
        wrong_method = client.get("/v1/events")
    assert {r.status_code for r in posts} == {202}
    assert {r.status_code for r in rejects} == {400}
    assert {r.status_code for r in clicks} == {404}
    assert {r.status_code for r in strays} == {404} and wrong_method.status_code == 405

    m = scrape(base)
    post = {"route": "/v1/events", "method": "POST"}
    assert value(m, "notify_http_request_duration_seconds_count", **post) == good + bad
    assert value(m, "notify_http_request_duration_seconds_bucket", **post, le="+Inf") == good + bad
    assert 0 < value(m, "notify_http_request_duration_seconds_sum", **post) < 60
    assert value(m, "notify_http_requests_total", **post, status="202") == good
    assert value(m, "notify_http_requests_total", **post, status="400") == bad
    track = {"route": "/t/{notification_id}", "method": "GET"}  # the template, never the raw path
    assert value(m, "notify_http_request_duration_seconds_count", **track) == tracked
    assert value(m, "notify_http_requests_total", **track, status="404") == tracked
    assert value(m, "notify_http_requests_total", route="unmatched", method="GET", status="404") == stray
    assert value(m, "notify_http_requests_total", route="/v1/events", method="GET", status="405") == 1
    routes = {dict(labels).get("route") for name, labels in m if name == "notify_http_requests_total"}
    assert not any(r and "unknown-" in r for r in routes)
    assert value(m, "notify_capture_events_total", outcome="accepted") == 2 * good
    assert value(m, "notify_capture_events_total", outcome="rejected") == bad

    lines = [json.loads(line) for line in log_file.read_text().splitlines() if line.startswith("{")]
    captured = [x for x in lines if x["message"] == "events captured"]
    assert len(captured) == good + bad and all(x["request_id"] for x in captured)
    assert sorted((x["accepted"], x["rejected"]) for x in captured) == [(0, 1)] * bad + [(2, 0)] * good
    failed = [x for x in lines if x["message"] == "request failed"]  # the unknown notification ids
    assert len(failed) == tracked
    assert all({"request_id", "status", "error_type", "error"} <= x.keys() for x in failed)
    assert sum(1 for x in lines if x.get("cold_start") is True) == 2  # capture, click: one cold start each


def test_a_handler_failure_logs_one_json_line_with_its_fields() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("lambdas")
    saved = logger.handlers, logger.level, logger.propagate
    logger.handlers, logger.propagate = [handler], False
    logger.setLevel(logging.INFO)

    @api_handler
    def refuse(event: Any, context: Any) -> dict[str, Any]:
        raise ValidationError("user_id is required")

    try:
        reply = refuse(api_event({}), None)
    finally:
        logger.handlers, logger.level, logger.propagate = saved
    assert reply["statusCode"] == 400
    [line] = [json.loads(x) for x in stream.getvalue().splitlines() if '"request failed"' in x]
    assert line["level"] == "warning" and line["error_type"] == "ValidationError"
    assert line["error"] == "user_id is required" and line["request_id"] == "c6af9ac6-7b61-11e6-9a41-93e8deadbeef"


def test_every_value_a_log_line_can_carry_is_written_and_read_back() -> None:
    """The lines are written by orjson (a line a delivery attempt in ``notify worker``); what it cannot write
    falls back to the standard encoder instead of losing the line, and the ids the erasure looks for read
    the same in either (a user id as a JSON string, quotes included: notify_core.erasure._names_a_user)."""
    import datetime as dt

    import numpy as np

    from notify_core.erasure import _names_a_user

    formatter = JsonFormatter()

    def line(**extra: Any) -> tuple[str, dict[str, Any]]:
        record = logging.makeLogRecord({"name": "notify_core.delivery.worker", "levelname": "INFO", "levelno": 20,
                                        "msg": "delivery attempt %s", "args": ("é",), **extra})
        text = formatter.format(record)
        return text, json.loads(text)

    text, fast = line(user_id="u-1:a@b/c+d=e", attempt=np.int64(2), latency=np.float64(0.25), ok=True, none=None,
                      at=dt.datetime(2031, 1, 2, 3, 4, 5, tzinfo=dt.UTC), counts={7: 1}, tags={"x"},
                      error=ValueError("bad"))
    assert fast["message"] == "delivery attempt é" and fast["level"] == "info"
    assert fast["attempt"] == 2 and fast["latency"] == 0.25 and fast["ok"] is True and fast["none"] is None
    assert fast["at"] == "2031-01-02T03:04:05+00:00" and fast["counts"] == {"7": 1}
    assert fast["tags"] == "{'x'}" and fast["error"] == "bad"
    assert _names_a_user(frozenset({"u-1:a@b/c+d=e"}))(text.encode())
    for odd in ({"big": 2**70}, {"text": "\udc80"}):  # over 64 bits; a lone surrogate: the standard encoder
        _text, slow = line(**odd)
        assert slow["message"] == "delivery attempt é" and slow[next(iter(odd))] == next(iter(odd.values()))


def test_emf_records_on_lambda_carry_the_request_id_and_the_cold_start() -> None:
    lines: list[str] = []
    invocations = Invocations(emit=lines.append)
    with request_context("req-1"):
        assert invocations.cold_start("f") is True
        invocations.done(function="f", status=503, seconds=0.25, cold_start=True)
    assert invocations.cold_start("f") is False
    invocations.done(function="f", status=200, seconds=0.01, cold_start=False)
    first, second = (r for r in map(json.loads, lines) if "function" in r)  # (the rest: counter deltas)
    directive = first["_aws"]["CloudWatchMetrics"][0]
    assert directive["Namespace"] == "Notify" and directive["Dimensions"] == [["function"], []]
    assert {m["Name"]: m["Unit"] for m in directive["Metrics"]} == {
        "Invocations": "Count", "Errors": "Count", "Duration": "Milliseconds"}
    assert (first["function"], first["Errors"], first["Duration"], first["request_id"], first["cold_start"]) == (
        "f", 1, 250.0, "req-1", True)
    assert (second["Errors"], second["cold_start"], second["request_id"]) == (0, False, None)
    assert isinstance(first["_aws"]["Timestamp"], int)


def test_emf_line_names_every_metric_it_carries() -> None:
    record = json.loads(emf_line(namespace="N", metrics={"a": (1, "Count"), "b": (2.5, "Seconds")},
                                 dimensions={"route": "/x"}, timestamp_ms=5))
    assert record["a"] == 1 and record["b"] == 2.5 and record["route"] == "/x" and record["_aws"]["Timestamp"] == 5


def test_capture_in_process_counts_accepted_and_rejected(tmp_path: Path) -> None:
    from prometheus_client import REGISTRY

    from notify_core.stream.local_log import LocalLog

    def accepted() -> float:
        return REGISTRY.get_sample_value("notify_capture_events_total", {"outcome": "accepted"}) or 0.0

    log = LocalLog(tmp_path / "log.sqlite")
    capture_events.use_stream(log)
    try:
        before = accepted()
        reply = capture_events.handler(api_event([click(1), {"type": "nope"}]), None)
    finally:
        capture_events.use_stream(None)
        log.close()
    assert reply["statusCode"] == 202 and accepted() == before + 1


def test_on_lambda_the_slo_counters_reach_cloudwatch_as_emf_deltas() -> None:
    from notify_core.delivery.worker import DELIVERIES

    lines: list[str] = []
    invocations = Invocations(emit=lines.append)
    invocations.flush_counters()  # the baseline: whatever earlier tests counted in this process
    lines.clear()
    DELIVERIES.labels("dead_lettered", "outbox").inc(2)
    DELIVERIES.labels("dead_lettered", "webhook").inc(1)
    invocations.flush_counters()
    [record] = [json.loads(x) for x in lines]
    assert record["outcome"] == "dead_lettered" and record["notify_deliveries_total"] == 3
    assert record["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["outcome"]]
    lines.clear()
    invocations.flush_counters()
    assert lines == []  # nothing new, nothing sent

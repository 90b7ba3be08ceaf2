"""Capture with every Kafka broker down answers 503 with Retry-After inside the route's time limit.

Before, a produce waited for the brokers up to 30 s (``message.timeout.ms``) plus 5 s of report slack: ~35 s
a request. The route functions time out at 30 s and API Gateway at 30 s, so on AWS the client got the
gateway's timeout with the function killed mid-request, never the handler's 503. The wait now comes from
``NOTIFY_KAFKA_DELIVERY_TIMEOUT_S`` (10 s by default).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from lambdas import capture_events
from notify_core.events import CLICKSTREAM, PURCHASE_HISTORY
from notify_core.settings import KAFKA_DELIVERY_TIMEOUT_S, NotifySettings, load_settings
from notify_core.stream import open_stream
from notify_core.stream.kafka import REPORT_SLACK_S
from tests.events.helpers import api_event, click
from tests.kafka_broker import running_broker

API_GATEWAY_LIMIT_S = 30.0  # an HTTP API's integration timeout, and the template's route function timeout

pytestmark = pytest.mark.kafka


def _capture(event_id: str) -> tuple[int, dict[str, str], dict[str, object]]:
    response = capture_events.handler(api_event([click(1, event_id=event_id)]), None)
    return response["statusCode"], response.get("headers") or {}, json.loads(response["body"])


def test_capture_with_the_brokers_down_is_a_503_with_retry_after_before_the_gateway_gives_up(tmp_path: Path) -> None:
    with running_broker([(CLICKSTREAM, 2), (PURCHASE_HISTORY, 2)]) as broker:
        settings = load_settings(data_dir=tmp_path, stream_backend="kafka", kafka_bootstrap=broker.bootstrap)
        assert settings.kafka_delivery_timeout_s == KAFKA_DELIVERY_TIMEOUT_S  # the default, as deployed
        stream = open_stream(settings)
        capture_events.use_stream(stream)
        try:
            status, _, _ = _capture("before")
            assert status == 202
            broker.down()
            started = time.monotonic()
            status, headers, payload = _capture("during")
            waited = time.monotonic() - started
            assert status == 503 and payload["error"]["type"] == "BackendError"  # type: ignore[index]
            assert headers.get("retry-after") == "5"
            assert waited < KAFKA_DELIVERY_TIMEOUT_S + REPORT_SLACK_S + 2 < API_GATEWAY_LIMIT_S
            broker.up()
            deadline = time.monotonic() + 60
            while (status := _capture("after")[0]) != 202 and time.monotonic() < deadline:
                time.sleep(0.5)
            assert status == 202  # the same stream recovers once the brokers are back
        finally:
            capture_events.use_stream(None)
            stream.close()
    print(f"\nbrokers down: 503 after {waited:.1f} s (delivery timeout {KAFKA_DELIVERY_TIMEOUT_S:.0f} s)")


def test_the_settings_bound_keeps_every_produce_under_the_gateways_limit() -> None:
    field = NotifySettings.model_fields["kafka_delivery_timeout_s"]
    bound = next(m.le for m in field.metadata if getattr(m, "le", None) is not None)
    assert bound + REPORT_SLACK_S < API_GATEWAY_LIMIT_S

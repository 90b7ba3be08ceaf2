"""NOTIFY_KAFKA_LINGER_MS reaches the producer that ``open_stream`` builds: a produce waits for its message
set to fill for that long (capture latency, traded against the brokers' work per message set)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from notify_core.events import CLICKSTREAM
from notify_core.settings import KAFKA_LINGER_MS, load_settings
from notify_core.stream import Message, open_stream


def _one_produce_s(settings_kwargs: dict[str, object], tmp_path: Path) -> float:
    stream = open_stream(load_settings(data_dir=tmp_path, stream_backend="kafka", **settings_kwargs))
    try:
        stream.produce_batch([Message(CLICKSTREAM, b"warm", b"{}")])  # connected, metadata known
        started = time.monotonic()
        stream.produce_batch([Message(CLICKSTREAM, b"k", b"{}")])
        return time.monotonic() - started
    finally:
        stream.close()


def test_a_produce_waits_out_the_configured_linger_and_not_the_default(
    kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFY_KAFKA_LINGER_MS", "1000")
    lingering = _one_produce_s({"kafka_bootstrap": kafka_bootstrap}, tmp_path)
    monkeypatch.delenv("NOTIFY_KAFKA_LINGER_MS")
    default = _one_produce_s({"kafka_bootstrap": kafka_bootstrap}, tmp_path)
    assert lingering >= 0.95, lingering  # librdkafka held the message set for the full second
    assert default < 0.95, default  # 5 ms by default
    assert load_settings(data_dir=tmp_path).kafka_linger_ms == KAFKA_LINGER_MS

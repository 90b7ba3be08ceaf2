"""A closed KafkaStream lets its producer go: no librdkafka thread keeps reconnecting to a broker that left."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from notify_core.stream.kafka import KafkaStream
from notify_core.stream.port import Message


def _librdkafka_threads() -> set[str]:
    """This process's librdkafka threads (named ``rdk:...``) by thread id: other tests' threads in the same
    process may start or end meanwhile, and are not this test's business."""
    found = set()
    for task in Path("/proc/self/task").iterdir():
        try:
            if (task / "comm").read_text().startswith("rdk:"):
                found.add(task.name)
        except OSError:  # ended while listed
            continue
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="counts threads in /proc")
def test_close_shuts_the_producer_down_and_is_idempotent(kafka_bootstrap: str) -> None:
    before = _librdkafka_threads()
    stream = KafkaStream(bootstrap_servers=kafka_bootstrap)
    stream.produce_batch([Message("notify_clickstream", b"k", b"v")])
    mine = _librdkafka_threads() - before  # the producer's own: its main thread and one per broker
    assert mine
    stream.close()  # the stream stays referenced: only close may end them
    deadline = time.monotonic() + 10
    while mine & _librdkafka_threads() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not mine & _librdkafka_threads()
    stream.close()  # twice: nothing left to do, no error

"""The pipelined loop's batch (worker._Batch): one pool task per sender drains the batch's claims; every
claim is delivered exactly once, an exception in one does not stop the rest, and collect reports it."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from notify_core.delivery.summary import PassSummary
from notify_core.delivery.worker import _Batch


def test_every_claim_is_delivered_once_by_at_most_one_task_per_sender() -> None:
    seen: list[Any] = []
    threads: set[str] = set()

    def deliver(claim: Any) -> tuple[str, float | None, bool]:
        seen.append(claim)
        threads.add(threading.current_thread().name)
        return "delivered", 0.5, claim % 10 == 0

    with ThreadPoolExecutor(8) as pool:
        first = _Batch(pool, deliver, list(range(500)), senders=4)  # type: ignore[arg-type]
        second = _Batch(pool, deliver, list(range(500, 503)), senders=4)  # type: ignore[arg-type]
        assert first.size == 500 and len(first._tasks) == 4 and len(second._tasks) == 3
        summary = PassSummary()
        first.collect(summary)
        second.collect(summary)
    assert sorted(seen) == list(range(503))  # each once
    assert summary.delivered == 503 and summary.reclaimed == 51 and len(summary.lateness) == 503
    assert len(threads) <= 8


def test_an_exception_in_one_claim_does_not_stop_the_batch_and_is_raised_after_counting() -> None:
    def deliver(claim: Any) -> tuple[str, float | None, bool]:
        if claim == 7:
            raise RuntimeError("boom")
        return "delivered", None, False

    with ThreadPoolExecutor(2) as pool:
        batch = _Batch(pool, deliver, list(range(20)), senders=2)  # type: ignore[arg-type]
        summary = PassSummary()
        with pytest.raises(RuntimeError, match="boom"):
            batch.collect(summary)
    assert summary.delivered == 19  # the other 19 were sent and counted

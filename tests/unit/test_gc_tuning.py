"""The cycle collector's tuning: fewer young collections where it is asked for, and everything put back."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from notify_core.clock import ManualClock
from notify_core.delivery import DeliveryWorker, WorkerOptions
from notify_core.delivery.channels import Message, SendResult
from notify_core.delivery.synthetic import seed_due
from notify_core.gc_tuning import YOUNG_COLLECTION_EVERY, fewer_collections, tune_gc_for_throughput
from notify_core.store.sqlite import SqliteStore
from tests.delivery.conftest import ScriptedChannel, minute_start


@pytest.fixture(autouse=True)
def _default_thresholds() -> Iterator[tuple[int, int, int]]:
    before = gc.get_threshold()
    gc.set_threshold(700, before[1], before[2])  # CPython's default young threshold, whatever ran before
    try:
        yield gc.get_threshold()
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def _young_collections_while_allocating(n: int) -> int:
    """How many collections run while ``n`` short-lived containers are allocated (and kept until the end)."""
    runs = []

    def count(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            runs.append(info["generation"])

    gc.collect()
    gc.callbacks.append(count)
    try:
        kept = [[i] for i in range(n)]
    finally:
        gc.callbacks.remove(count)
    assert len(kept) == n
    return len(runs)


def test_tune_for_throughput_freezes_start_up_objects_and_collects_the_young_generation_less_often(
        _default_thresholds: tuple[int, int, int]) -> None:
    assert _young_collections_while_allocating(5_000) >= 5  # every 700 allocations
    tune_gc_for_throughput()
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == (YOUNG_COLLECTION_EVERY, *_default_thresholds[1:])
    assert _young_collections_while_allocating(5_000) == 0


def test_fewer_collections_holds_for_the_block_only(_default_thresholds: tuple[int, int, int]) -> None:
    with fewer_collections():
        assert gc.get_threshold() == (YOUNG_COLLECTION_EVERY, *_default_thresholds[1:])
        assert _young_collections_while_allocating(5_000) == 0
        assert gc.get_freeze_count() == 0  # nothing frozen: a frozen object would stay so after the block
    assert gc.get_threshold() == _default_thresholds
    assert _young_collections_while_allocating(5_000) >= 5


def test_fewer_collections_nested_and_on_two_threads_is_put_back_by_the_last_to_leave(
        _default_thresholds: tuple[int, int, int]) -> None:
    inside, leave = threading.Event(), threading.Event()

    def other() -> None:
        with fewer_collections():
            inside.set()
            leave.wait(10)

    thread = threading.Thread(target=other)
    thread.start()
    assert inside.wait(10)
    with fewer_collections():
        with fewer_collections():
            pass
        assert gc.get_threshold()[0] == YOUNG_COLLECTION_EVERY  # the inner block left; the outer holds
    assert gc.get_threshold()[0] == YOUNG_COLLECTION_EVERY  # the other thread's block still holds
    leave.set()
    thread.join(10)
    assert gc.get_threshold() == _default_thresholds


def test_fewer_collections_leaves_a_process_wide_tuning_alone(_default_thresholds: tuple[int, int, int]) -> None:
    gc.set_threshold(50_000, *_default_thresholds[1:])
    with fewer_collections():
        assert gc.get_threshold()[0] == 50_000  # already fewer: not raised to more collections
    assert gc.get_threshold()[0] == 50_000

    gc.set_threshold(*_default_thresholds)
    with fewer_collections():
        gc.set_threshold(1_000, *_default_thresholds[1:])  # someone else's setting, made inside the block
    assert gc.get_threshold()[0] == 1_000  # not overwritten by the block's leaving


def test_the_delivery_loop_runs_with_fewer_collections(tmp_path: Path,
                                                      _default_thresholds: tuple[int, int, int]) -> None:
    """The delivery loop holds the setting while it runs, whichever entry point calls it (``notify worker``,
    the Lambda), and puts it back when it returns."""
    seen: list[int] = []

    class Recording(ScriptedChannel):
        def send(self, message: Message, *, idempotency_key: str) -> SendResult:
            seen.append(gc.get_threshold()[0])
            return super().send(message, idempotency_key=idempotency_key)

    clock = ManualClock(1_900_000_000.0)
    store = SqliteStore(tmp_path / "store.sqlite", clock=clock)
    seed_due(store, n=3, start=minute_start(clock.now()))
    worker = DeliveryWorker(store, Recording(), public_base_url="http://t", clock=clock,
                            options=WorkerOptions(concurrency=2, prefetch_s=0.0))
    assert worker.run_until_idle().delivered == 3  # the Lambda's loop
    assert seen == [YOUNG_COLLECTION_EVERY] * 3
    assert gc.get_threshold() == _default_thresholds

    stop = threading.Event()

    def on_pass(_step: Any) -> None:  # the looping worker's (``notify worker``)
        seen.append(gc.get_threshold()[0])
        stop.set()

    seen.clear()
    worker.run_forever(stop, on_pass=on_pass)
    worker.close()
    store.close()
    assert seen == [YOUNG_COLLECTION_EVERY]
    assert gc.get_threshold() == _default_thresholds

"""Fixtures for the delivery tests: a fresh SQLite Store, a loopback webhook sink process, scripted channels."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from notify_core.clock import ManualClock
from notify_core.delivery import DeliveryWorker
from notify_core.delivery.channels import Message, Outcome, SendResult
from notify_core.delivery.sink import read_receipts
from notify_core.delivery.summary import PassSummary
from notify_core.store.port import Store
from notify_core.store.sqlite import SqliteStore
from tests.servers import backend_store

SECRET = "test-secret"
REPO = Path(__file__).resolve().parents[2]


# The delivery tests' own "now" (the start of a minute): workers, channels, the Store's TTLs and the sink
# all read it, so nothing depends on the calendar.
NOW = datetime(2026, 11, 24, 10, 5, tzinfo=UTC)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(NOW)


@pytest.fixture
def store(tmp_path: Path, clock: ManualClock) -> Iterator[SqliteStore]:
    s = SqliteStore(tmp_path / "store.sqlite", clock=clock)
    yield s
    s.close()


@pytest.fixture(params=["sqlite", "dynamodb"])
def either(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Store, ManualClock]]:
    """A scratch Store on each backend (SQLite; fresh tables on DynamoDB Local) with the tests' clock, for the
    tests that hold on both."""
    clock = ManualClock(NOW)
    with backend_store(request.param, request=request, tmp_path=tmp_path, clock=clock, name="delivery") as store:
        yield store, clock


@dataclass
class SinkProcess:
    url: str
    out: Path
    proc: subprocess.Popen[str]

    def stop(self) -> list[dict[str, Any]]:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        return read_receipts(self.out)


def start_sink(tmp_path: Path, *args: str, name: str = "receipts.jsonl") -> SinkProcess:
    """The loopback webhook sink (notify_core.delivery.sink) in its own process; returns once it listens."""
    out = tmp_path / name
    proc = subprocess.Popen([sys.executable, "-m", "notify_core.delivery.sink", "--out", str(out),
                             "--clock-start", NOW.isoformat(), *args],
                            stdout=subprocess.PIPE, text=True, cwd=REPO)
    assert proc.stdout is not None
    port = json.loads(proc.stdout.readline())["port"]
    return SinkProcess(f"http://127.0.0.1:{port}/hook", out, proc)


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[SinkProcess]:
    s = start_sink(tmp_path, "--secret", SECRET)
    yield s
    s.stop()


class ScriptedChannel:
    """A channel whose answers are scripted per notification id (default: delivered); records every call."""

    name = "scripted"

    def __init__(self, script: dict[str, list[Outcome]] | None = None) -> None:
        self.script = script or {}
        self.calls: list[tuple[str, int, str]] = []  # (notification_id, attempt, idempotency key)
        self._lock = threading.Lock()

    def send(self, message: Message, *, idempotency_key: str) -> SendResult:
        with self._lock:
            self.calls.append((message.notification_id, message.attempt, idempotency_key))
            plan = self.script.get(message.notification_id)
            outcome = plan.pop(0) if plan else Outcome.DELIVERED
        return SendResult(outcome, status=200 if outcome is Outcome.DELIVERED else 503, detail=outcome.value)

    def close(self) -> None:
        return None


def minute_start(ts: float) -> datetime:
    return datetime.fromtimestamp(int(ts // 60 * 60), UTC)


class AsyncScripted(ScriptedChannel):
    """The scripted channel with an ``async_sender`` (so the loop takes its async path), answering the
    same script from a coroutine."""

    def async_sender(self) -> AsyncSenderOf:
        return AsyncSenderOf(self)


def with_async_sender(channel: ScriptedChannel) -> ScriptedChannel:
    """``channel`` (any scripted one) given an ``async_sender``: the worker loop then sends on its event loop."""
    channel.async_sender = lambda: AsyncSenderOf(channel)  # type: ignore[attr-defined]
    return channel


class AsyncSenderOf:
    """A coroutine sender answering from a sync channel's ``send``."""

    def __init__(self, channel: ScriptedChannel) -> None:
        self.channel = channel

    async def send(self, message: Message, *, idempotency_key: str) -> SendResult:
        return self.channel.send(message, idempotency_key=idempotency_key)

    def close(self) -> None:
        return None


@contextlib.contextmanager
def raw_receiver(handle: Callable[[socket.socket, threading.Event], None]) -> Iterator[str]:
    """A real HTTP server on a local port whose every connection is ``handle(conn, stop)`` on a thread of its
    own (a receiver misbehaving in a way no framework will: silent, endless, scripted bytes); yields its
    URL. ``stop`` is set when the block ends, then the server closes."""
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=handle, args=(conn, stop), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}/hook"
    finally:
        stop.set()
        with contextlib.suppress(OSError):
            server.close()
        thread.join(timeout=5)


def run_loop_until(worker: DeliveryWorker, done: Callable[[DeliveryWorker], bool], *,
                   timeout_s: float = 60.0) -> list[PassSummary]:
    """``worker.run_forever`` (``notify worker``'s loop) until ``done(worker)`` holds after a pass, then closes
    the worker; the passes' summaries. A bug fails the test after ``timeout_s``, never hangs it."""
    stop = threading.Event()
    steps: list[PassSummary] = []

    def on_pass(step: PassSummary) -> None:
        steps.append(step)
        if done(worker):
            stop.set()

    timer = threading.Timer(timeout_s, stop.set)
    timer.start()
    try:
        worker.run_forever(stop, on_pass=on_pass)
    finally:
        timer.cancel()
        worker.close()
    return steps


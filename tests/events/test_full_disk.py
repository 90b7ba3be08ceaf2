"""A real full disk under the event path (a small tmpfs as the data directory, tests/small_disk.py).

* Capture: `notify serve` answers 503 with the reason for every batch it cannot append, never a 500, and
  stays up; a 202 means the batch is in the log. After space is freed the client re-sends what was
  refused, and the consumer persists every event once.
* Consumer: a Store that cannot grow is retried, never skipped; SIGTERM then ends the process at once
  (exit 75) with the failing batch uncommitted, where before it retried for ever; a re-run with space
  persists every event once.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from notify_cli import STOPPED_UNFINISHED
from notify_core.stream.local_log import LocalLog
from notify_core.stream.port import Message
from tests.events.crash_harness import _committed
from tests.servers import free_port, serve_admin_key, stop_process, wait_healthy
from tests.small_disk import fill, small_disk

ROOT = Path(__file__).resolve().parents[2]
BATCH = 500


def _clicks(batch: int) -> list[dict[str, str]]:
    return [{"type": "click", "user_id": f"u{i % 97}", "ts": f"2024-03-01T10:{i // 60 % 60:02d}:{i % 60:02d}Z",
             "campaign_id": f"c{i % 50}", "event_id": f"e{batch}-{i}"} for i in range(BATCH)]


def _command(data: Path, *args: str) -> dict[str, Any]:
    """``notify <args>`` on ``data``: what Popen and run both take."""
    return {"args": [sys.executable, "-m", "notify_cli.stream_commands", *args, "--data-dir", str(data)],
            "cwd": ROOT, "env": {**os.environ, "NOTIFY_ENV": "local"}}


def _notify(data: Path, *args: str, **kwargs: object) -> subprocess.Popen[bytes]:
    return subprocess.Popen(**_command(data, *args), **kwargs)  # type: ignore[call-overload,no-any-return]


def _consume(data: Path) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(**_command(data, "consume", "--idle-exit", "2"), capture_output=True, timeout=300)


def _persisted(data: Path) -> tuple[int, set[str]]:
    """user_events rows, and the distinct event ids among them (key ``<ts>#<event_id>``)."""
    with sqlite3.connect(data / "store.sqlite") as conn:
        keys = [row[0] for row in conn.execute("SELECT sk FROM user_events")]
    return len(keys), {k.split("#", 1)[1] for k in keys}


def test_capture_on_a_full_disk_answers_503_and_loses_nothing_it_acknowledged(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with small_disk(data, 2048) as resize:
        port = free_port()
        server = _notify(data, "serve", "--port", str(port), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            base = f"http://127.0.0.1:{port}"
            wait_healthy(server, base)
            accepted, refused = [], []
            with httpx.Client(base_url=base, headers={"x-api-key": serve_admin_key(data)}, timeout=30) as client:
                for batch in range(60):  # ~2.5 MB of log: past the disk's room
                    reply = client.post("/v1/events", json=_clicks(batch))
                    assert reply.status_code in (202, 503), (reply.status_code, reply.text)
                    if reply.status_code == 202:
                        assert reply.json()["accepted"] == BATCH
                        accepted.append(batch)
                    else:
                        error = reply.json()["error"]
                        assert error["type"] == "BackendError" and "disk is full" in error["message"], error
                        assert int(reply.headers["retry-after"]) >= 1  # the README: "with the reason and Retry-After"
                        refused.append(batch)
                assert accepted and refused, (accepted, refused)
                assert client.get("/healthz").status_code == 200 and server.poll() is None  # still serving

                resize(65536)  # the operator frees space; the client retries what was refused
                for batch in refused:
                    assert client.post("/v1/events", json=_clicks(batch)).status_code == 202
        finally:
            stop_process(server)
        drained = _consume(data)
        assert drained.returncode == 0, drained.stderr[-2000:]
        rows, ids = _persisted(data)
        expected = {f"e{b}-{i}" for b in range(60) for i in range(BATCH)}
        assert ids == expected and rows == len(expected), (len(expected - ids), rows)  # all, once each


def test_a_consumer_on_a_full_disk_retries_then_stops_on_sigterm_and_a_rerun_persists_all_once(
        tmp_path: Path) -> None:
    data = tmp_path / "data"
    events = 20 * BATCH
    with small_disk(data, 65536):
        log = LocalLog(data / "stream" / "log.sqlite")
        for batch in range(20):
            log.produce_batch([Message("notify_clickstream", e["user_id"].encode(), json.dumps(e).encode(), ())
                               for e in _clicks(batch)])
        log.close()
        filler = fill(data, leave_kib=256)  # the log is written; the Store has no room to grow

        stderr = tmp_path / "consume.err"
        with stderr.open("wb") as err:
            consumer = _notify(data, "consume", stdout=subprocess.DEVNULL, stderr=err)
        try:
            deadline = time.monotonic() + 120
            while b"batch failed, retrying" not in stderr.read_bytes():
                assert consumer.poll() is None and time.monotonic() < deadline, stderr.read_text()[-2000:]
                time.sleep(0.2)
            time.sleep(1.0)  # a few retries in, then the operator stops it
            consumer.send_signal(signal.SIGTERM)
            asked = time.monotonic()
            code = consumer.wait(timeout=30)
            stopped_in = time.monotonic() - asked
        finally:
            if consumer.poll() is None:
                consumer.kill()
        text = stderr.read_text()
        assert code == STOPPED_UNFINISHED, text[-2000:]
        assert stopped_in < 6.0  # the longest pause between retries is 5 s
        assert "disk is full" in text and "not committed" in text
        assert _committed(data / "stream" / "log.sqlite") == 0  # the failing batch was given up, not acknowledged

        filler.unlink()  # space freed: a plain re-run
        drained = _consume(data)
        assert drained.returncode == 0, drained.stderr[-2000:]
        rows, ids = _persisted(data)
        assert ids == {f"e{b}-{i}" for b in range(20) for i in range(BATCH)} and rows == events

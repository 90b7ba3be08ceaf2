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
from notify_core.events.models import TOPICS
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


def test_a_consumer_whose_log_disk_is_full_retries_its_start_and_its_commit_and_stops_on_sigterm_losing_nothing(
        tmp_path: Path) -> None:
    """The Store has room, the log's disk has none. Before, the consumer ended with a traceback (exit 1: a
    crash loop under a supervisor) when it could not create a topic, catch the log's commit up with the
    Store's positions, or commit a batch's offsets. Now each is retried; a SIGTERM ends it with exit 75 and one
    line; once space is freed it goes on without a restart, and every event is persisted once."""
    data = tmp_path / "data"
    log_path = data / "stream" / "log.sqlite"
    stderr = tmp_path / "consume.err"

    def start() -> subprocess.Popen[bytes]:
        with stderr.open("wb") as err:
            return _notify(data, "consume", stdout=subprocess.DEVNULL, stderr=err)

    def wait_for(line: bytes, process: subprocess.Popen[bytes]) -> None:
        deadline = time.monotonic() + 120
        while line not in stderr.read_bytes():
            assert process.poll() is None and time.monotonic() < deadline, stderr.read_text()[-3000:]
            time.sleep(0.2)

    def stopped(process: subprocess.Popen[bytes]) -> tuple[int, str]:
        try:
            time.sleep(1.0)  # a few retries in
            assert process.poll() is None, stderr.read_text()[-3000:]  # retrying, not crashed
            process.send_signal(signal.SIGTERM)
            code = process.wait(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
        return code, stderr.read_text()

    def full() -> Path:
        with sqlite3.connect(log_path) as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # no WAL pages left for a write to reuse
        return fill(data / "stream", leave_kib=0)

    with small_disk(data / "stream", 8192):
        log = LocalLog(log_path)
        try:
            for batch in range(20):
                log.produce_batch([Message("notify_clickstream", e["user_id"].encode(), json.dumps(e).encode(), ())
                                   for e in _clicks(batch)])
            filler = full()
            first = start()  # its other topic cannot be created
            # stopped once it has said so, not a fixed time after the spawn: a loaded CI box once spent that
            # second starting the consumer, whose stderr was still empty when the SIGTERM came
            wait_for(b"consumer could not start, retrying", first)
            code, text = stopped(first)
            assert "consumer could not start, retrying" in text and "creating topic" in text, text[-3000:]
            assert code == STOPPED_UNFINISHED and "stopped before it started" in text, text[-3000:]
            assert "Traceback" not in text and _persisted(data) == (0, set())
            assert first.returncode == code

            filler.unlink()
            log.consumer(group="setup", topics=TOPICS).close()  # the topics exist: what is left is the commit
            filler = full()
            second = start()
            wait_for(b"commit failed, retrying", second)
            code, text = stopped(second)
            assert code == STOPPED_UNFINISHED and "offsets were not committed" in text, text[-3000:]
            assert "Traceback" not in text and _committed(log_path) == 0
            assert _persisted(data)[0] > 0  # its batch is in the Store, with the Store's positions after it

            third = start()  # it must first catch the log's commit up with the Store's positions
            try:
                wait_for(b"consumer could not start, retrying", third)
                filler.unlink()  # the operator frees space; no restart
                deadline = time.monotonic() + 120
                while _committed(log_path) < 20 * BATCH:
                    assert third.poll() is None and time.monotonic() < deadline, stderr.read_text()[-3000:]
                    time.sleep(0.2)
                third.send_signal(signal.SIGTERM)
                assert third.wait(timeout=30) == 0, stderr.read_text()[-3000:]
            finally:
                if third.poll() is None:
                    third.kill()
        finally:
            log.close()
    rows, ids = _persisted(data)
    assert ids == {f"e{b}-{i}" for b in range(20) for i in range(BATCH)} and rows == 20 * BATCH


def test_a_server_started_on_a_full_disk_retries_its_start_then_serves_once_there_is_room(tmp_path: Path) -> None:
    """`notify serve` cannot open the stream log on a full disk (its WAL index cannot be made), nor write the
    audit entry of its start. Before, it exited 75 at once, for its supervisor to start it again every 5 s;
    now it retries in the process, stops on SIGTERM with one line (exit 75), and once space is freed it
    serves without a restart: a batch it acknowledges is in the log."""
    data = tmp_path / "data"
    with small_disk(data, 8192):
        port = free_port()
        first = _notify(data, "serve", "--port", str(port), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_healthy(first, f"http://127.0.0.1:{port}")  # its keys, Store and log made while there is room
        key = serve_admin_key(data)
        stop_process(first)
        filler = fill(data, leave_kib=0)

        stderr = tmp_path / "serve.err"
        with stderr.open("wb") as err:
            refused = _notify(data, "serve", "--port", str(port), stdout=subprocess.DEVNULL, stderr=err)
        try:
            deadline = time.monotonic() + 60
            while b"server could not start, retrying" not in stderr.read_bytes():
                assert refused.poll() is None and time.monotonic() < deadline, stderr.read_text()[-3000:]
                time.sleep(0.2)
            time.sleep(1.0)
            assert refused.poll() is None, stderr.read_text()[-3000:]
            refused.send_signal(signal.SIGTERM)
            assert refused.wait(timeout=30) == STOPPED_UNFINISHED, stderr.read_text()[-3000:]
        finally:
            if refused.poll() is None:
                refused.kill()
        text = stderr.read_text()
        assert "Traceback" not in text and text.strip().splitlines()[-1].startswith("notify serve: stopped before")

        with stderr.open("wb") as err:
            server = _notify(data, "serve", "--port", str(port), stdout=subprocess.DEVNULL, stderr=err)
        try:
            deadline = time.monotonic() + 60
            while b"server could not start, retrying" not in stderr.read_bytes():
                assert server.poll() is None and time.monotonic() < deadline, stderr.read_text()[-3000:]
                time.sleep(0.2)
            filler.unlink()  # the operator frees space; no restart
            base = f"http://127.0.0.1:{port}"
            wait_healthy(server, base)
            with httpx.Client(base_url=base, headers={"x-api-key": key}, timeout=30) as client:
                reply = client.post("/v1/events", json=_clicks(0))
            assert reply.status_code == 202, reply.text
        finally:
            stop_process(server)
        log = LocalLog(data / "stream" / "log.sqlite")
        try:
            assert log.end_offsets("notify_clickstream")[0] == BATCH
        finally:
            log.close()

"""The consumer's decoding process (issue 21): decode + row building + row encoding in a second process.

What must hold: the process changes where the work runs, never what is written. The Store's rows and
the dead letters equal those of the in-process path byte for byte (marked and unmarked records, poison,
duplicates, orders); ``kill -9`` of the decoding process mid-run loses and duplicates nothing (the
batch is decoded in the consumer and a fresh process started); ``kill -9`` of the consumer leaves no
decoding process behind; the Store refusing a row is still isolated and dead-lettered alone.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from notify_core.events import CLICKSTREAM, PURCHASE_HISTORY, dlq_topic
from notify_core.events.consumer import EventConsumer
from notify_core.events.decoder import DecodeProcess
from notify_core.events.models import VALIDATED_HEADERS
from notify_core.store import tables
from notify_core.store.sqlite import SqliteStore
from notify_core.stream.local_log import LocalLog
from notify_core.stream.port import REQUEST_ID_HEADER, Message
from tests.events import crash_harness
from tests.events.helpers import click, events_clock, order

ROOT = Path(__file__).resolve().parents[2]
TABLES = (tables.USER_EVENTS, tables.PURCHASES, tables.EVENTS, tables.STREAM_POSITIONS)


def _messages(count: int) -> list[Message]:
    """``count`` records as a mixed stream: marked and unmarked, clicks and orders, a duplicate id
    every 50, and poison of several kinds (not JSON, unknown type, month 13, wrong topic)."""
    out: list[Message] = []
    for i in range(count):
        headers = ((REQUEST_ID_HEADER, f"req-{i // 100}".encode()),) + (VALIDATED_HEADERS if i % 200 < 100 else ())
        payload: Any = order(i) if i % 10 == 0 else click(i, properties={"n": i, "x": "y"} if i % 3 else {})
        payload["event_id"] = f"e{i - 1 if i % 50 == 49 else i}"  # a replayed id now and then
        payload["ts"] = f"2024-03-01T{i // 3600 % 24:02d}:{i // 60 % 60:02d}:{i % 60:02d}Z"
        topic = PURCHASE_HISTORY if payload["type"] == "order" else CLICKSTREAM
        value = json.dumps(payload).encode()
        if i % 97 == 5:
            value = b"{not json"
        elif i % 97 == 6:
            value = json.dumps({**payload, "type": "teleport"}).encode()
        elif i % 97 == 7:
            value = json.dumps({**payload, "ts": "2024-13-01T00:00:00Z"}).encode()
        elif i % 97 == 8:
            topic = PURCHASE_HISTORY if topic == CLICKSTREAM else CLICKSTREAM  # an event on the wrong topic
        out.append(Message(topic, payload["user_id"].encode(), value, headers))
    return out


def _fill(path: Path, count: int) -> None:
    log = LocalLog(path, clock=events_clock())
    for start in range(0, count, 1000):
        log.produce_batch(_messages(count)[start : start + 1000])
    log.close()


def _consume(data: Path, *, decode_process: bool, max_batch: int = 700, kill_worker: int = 0) -> dict[str, Any]:
    """Drain the log at ``data/log.sqlite`` into ``data/store.sqlite``; ``kill_worker`` times, SIGKILL
    the decoding process while batches flow. The Store's rows, the dead letters and the totals."""
    log = LocalLog(data / "log.sqlite", clock=events_clock())
    store = SqliteStore(data / "store.sqlite")
    consumer = EventConsumer(stream=log, store=store, landing=data / "landing", clock=events_clock(),
                             max_batch=max_batch, poll_timeout=0.05, decode_process=decode_process)
    killed: list[int] = []
    try:
        stop = threading.Event()
        result: dict[str, Any] = {}
        runner = threading.Thread(target=lambda: result.update(out=consumer.run(stop=stop, idle_exit=1.0)))
        runner.start()
        while len(killed) < kill_worker and runner.is_alive():
            decoder = consumer.decoder
            if decoder is None or not decoder.usable:
                break
            pid = decoder.pid
            if pid is not None and pid not in killed and consumer.totals.records > 0:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            time.sleep(0.05)
        runner.join(120)
        assert not runner.is_alive()
        restarts = consumer.decoder.restarts if consumer.decoder is not None else 0
        out = result["out"]
        reasons = sorted(
            (json.loads(r.value)["topic"], json.loads(r.value)["offset"], json.loads(r.value)["reason"],
             json.loads(r.value)["failed_at"])
            for topic in (CLICKSTREAM, PURCHASE_HISTORY)
            for r in log.consumer(group=f"dlq2-{topic}", topics=[dlq_topic(topic)]).poll_batch(max_records=10_000,
                                                                                               timeout=0)
        )
    finally:
        consumer.close()
        log.close()
        store.close()
    with sqlite3.connect(data / "store.sqlite") as conn:
        rows = {name: conn.execute(f"SELECT pk, sk, ttl, body FROM {name} ORDER BY pk, sk").fetchall()
                for name in TABLES}
    landing = {p.name: p.read_bytes() for p in (data / "landing").glob("*.parquet")}
    return {"rows": rows, "reasons": reasons, "persisted": out.persisted,
            "dead_lettered": out.dead_lettered, "killed": killed, "restarts": restarts, "landing": landing}


@pytest.fixture
def filled(tmp_path: Path) -> Any:
    def make(name: str, count: int) -> Path:
        data = tmp_path / name
        data.mkdir()
        _fill(data / "log.sqlite", count)
        return data
    return make


def test_the_decoding_process_writes_what_the_consumer_itself_writes_byte_for_byte(filled: Any) -> None:
    alone = _consume(filled("in-process", 3000), decode_process=False)
    beside = _consume(filled("process", 3000), decode_process=True)
    assert beside["restarts"] == 0
    for name in TABLES:
        assert beside["rows"][name] == alone["rows"][name], name
    assert len(alone["rows"][tables.USER_EVENTS]) > 2000 and len(alone["rows"][tables.PURCHASES]) > 400
    assert beside["reasons"] == alone["reasons"]  # every poison record dead-lettered, same reason, same stamp
    assert len(alone["reasons"]) >= 4 * 30 and all(reason for _t, _o, reason, _f in alone["reasons"])
    assert (beside["persisted"], beside["dead_lettered"]) == (alone["persisted"], alone["dead_lettered"])
    # the landing files the decoding process builds: the same names (content hashes) and the same bytes
    assert beside["landing"] == alone["landing"] and len(alone["landing"]) >= 1


def test_kill_9_of_the_decoding_process_loses_and_duplicates_nothing(filled: Any) -> None:
    clean = _consume(filled("clean", 6000), decode_process=False)
    killed = _consume(filled("killed", 6000), decode_process=True, max_batch=300, kill_worker=3)
    # no shared memory block left behind by the killed workers (the consumer sweeps them)
    assert not list(Path("/dev/shm").glob(f"notify-dec-{os.getpid()}-*"))
    assert len(killed["killed"]) >= 1, "the decoding process was never killed mid-run"
    assert killed["restarts"] >= 1
    for name in (tables.USER_EVENTS, tables.PURCHASES, tables.EVENTS):  # state equals a clean run's
        assert killed["rows"][name] == clean["rows"][name], name
    assert killed["reasons"] == clean["reasons"]  # each poison record dead-lettered once, none lost


def _children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found.update(int(c) for c in text)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_kill_9_of_the_consumer_leaves_no_decoding_process_behind(tmp_path: Path) -> None:
    _fill(tmp_path / "stream" / "log.sqlite", 2000)
    consumer = subprocess.Popen(
        [sys.executable, "-m", "notify_cli.stream_commands", "consume", "--data-dir", str(tmp_path),
         "--decode-process"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "NOTIFY_ENV": "local"},
    )
    try:
        deadline = time.monotonic() + 60
        children: set[int] = set()
        while time.monotonic() < deadline and not any(
                "spawn_main" in Path(f"/proc/{c}/cmdline").read_text() for c in children if _alive(c)):
            time.sleep(0.2)
            children = _children(consumer.pid)
        assert children, "notify consume started no decoding process"
        consumer.kill()
        consumer.wait()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(_alive(c) for c in children):
            time.sleep(0.1)
        assert not any(_alive(c) for c in children), "a decoding process outlived its consumer"
    finally:
        if consumer.poll() is None:
            consumer.kill()
            consumer.wait()


def test_two_kill_9s_of_notify_consume_with_the_decoding_process_lose_and_duplicate_nothing(tmp_path: Path) -> None:
    """The crash harness of tests/events/test_crash.py, with ``notify consume --decode-process``: kill -9
    lands while batches are in the decoding process, in the writer, or between write and commit."""
    report = crash_harness.run(tmp_path, events=20_000, kills=2, seed=7, rate=5_000, kill_window=(1.5, 3.0),
                               consume_args=("--decode-process",))
    print("\ncrash test (decoding process):", report.line())
    assert report.ok, report.line()


def test_calls_and_results_go_through_shared_memory_that_is_removed_after() -> None:
    """The decoding process's calls and results travel as files in a private folder in shared memory, the
    pipes carry only their names (a big pipe message half-written by a killed worker hung the pool): every
    file is removed once its result is taken, whatever the outcome, results of any size come back whole,
    and the folder (0700) goes with the process."""
    shm = Path("/dev/shm")
    before = {p.name for p in shm.glob(f"notify-dec-{os.getpid()}-*")}
    process = DecodeProcess()
    try:
        assert [process.submit(pow, 3, k).result(timeout=60) for k in range(20)] == [3**k for k in range(20)]
        assert process.submit(bytes, 5_000_000).result(timeout=60) == bytes(5_000_000)
        with pytest.raises(ValueError):
            process.submit(int, "not a number").result(timeout=60)
        (folder,) = {p for p in shm.glob(f"notify-dec-{os.getpid()}-*") if p.name not in before}
        assert folder.stat().st_mode & 0o777 == 0o700
        assert not list(folder.iterdir())  # every call's and result's file taken
    finally:
        process.close()
    assert {p.name for p in shm.glob(f"notify-dec-{os.getpid()}-*")} <= before


def test_a_killed_consumers_hand_over_folder_is_removed_by_the_next_decoding_process() -> None:
    """A ``kill -9`` of the consumer skips its cleanup: its folder (named with its pid) would hold memory in
    ``/dev/shm`` until a reboot. The next decoding process removes it on its first call; a live process's
    folder stays."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    shm = Path("/dev/shm")
    left = shm / f"notify-dec-{dead.pid}-killed"
    left.mkdir(mode=0o700)
    (left / "abc.result").write_bytes(b"a batch nobody will read")
    alive = shm / f"notify-dec-{os.getppid()}-alive"  # our parent: running
    alive.mkdir(mode=0o700)
    process = DecodeProcess()
    try:
        assert process.submit(pow, 2, 10).result(timeout=60) == 1024
        assert not left.exists() and alive.exists()
    finally:
        process.close()
        alive.rmdir()

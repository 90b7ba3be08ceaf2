"""A restore never replaces files other processes have open, and a process never writes to a file that is no
longer its path's (notify_core/sqlite_tx.py: the open lease and the file identity).

Before: ``notify restore --force`` under a running ``notify serve`` replaced the Store by a rename; the server
kept its descriptors on the old inode and answered 200 to a preference change that went to the deleted file.
With the data directory wiped under it, it accepted writes the same way. Real processes, real files.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from notify_cli import STOPPED_UNFINISHED
from notify_core.delivery.claims import HEARTBEAT_PK
from notify_core.delivery.synthetic import seed_due
from notify_core.errors import DatabaseInUseError, DatabaseReplacedError
from notify_core.events import CLICKSTREAM, capture_events
from notify_core.sqlite_tx import OPEN_SUFFIX, lock_holders, write_gate
from notify_core.store import tables
from notify_core.store.sqlite import SqliteStore
from notify_core.stream.local_log import LocalLog
from tests.backup.test_backup import ROOT, _cli, backed_up_once
from tests.delivery.crash_harness import _start
from tests.events.helpers import click, events_clock
from tests.servers import free_port, notify_serve, serve_admin_key, stop_process, wait_healthy
from tests.unit.test_write_gate import _hold_in_a_transaction


def _daily_cap(store_path: Path, user_id: str) -> int | None:
    """The user's ``daily_cap`` as the file at ``store_path`` holds it (read with the sqlite3 module, as a
    process opening the data directory afresh would see it)."""
    with sqlite3.connect(store_path) as conn:
        row = conn.execute("SELECT body FROM users WHERE pk=? AND sk=?", (user_id, tables.PROFILE_SK)).fetchone()
    return None if row is None else json.loads(row[0]).get("daily_cap")


def _backed_up_data_dir(tmp_path: Path) -> tuple[Path, Path]:
    data, target = tmp_path / "data", tmp_path / "backup"
    store = SqliteStore(data / "store.sqlite")
    store.table(tables.USERS).put({"pk": "u1", "sk": tables.PROFILE_SK, "user_id": "u1", "daily_cap": 3})
    store.close()
    LocalLog(data / "stream" / "log.sqlite").close()
    out = _cli("backup", "--data-dir", str(data), "--to", str(target), "--once")
    assert out.returncode == 0, out.stderr
    return data, target


def test_a_restore_is_refused_while_notify_serve_has_the_data_directory_open(tmp_path: Path) -> None:
    data, target = _backed_up_data_dir(tmp_path)
    store_path = data / "store.sqlite"
    with notify_serve(data) as (server, base):
        headers = {"Authorization": f"Bearer {serve_admin_key(data)}"}
        assert httpx.get(f"{base}/v1/users/u1/preferences", headers=headers).status_code == 200  # the Store open
        inode = store_path.stat().st_ino

        refused = _cli("restore", "--data-dir", str(data), "--from", str(target), "--force")
        assert refused.returncode == 2
        assert f"process {server.pid} (" in refused.stderr and "serve" in refused.stderr, refused.stderr
        assert store_path.stat().st_ino == inode  # nothing replaced

        # what the server acknowledges after the refused restore is in the data directory's file
        put = httpx.put(f"{base}/v1/users/u1/preferences", headers=headers, json={"daily_cap": 1})
        assert put.status_code == 200
        assert _daily_cap(store_path, "u1") == 1
    out = _cli("restore", "--data-dir", str(data), "--from", str(target), "--force")
    assert out.returncode == 0, out.stderr  # once it stopped, the restore goes ahead
    assert _daily_cap(store_path, "u1") == 3


def test_a_restore_is_refused_while_notify_backup_runs_on_the_data_directory(tmp_path: Path) -> None:
    data, target = _backed_up_data_dir(tmp_path)
    backup = subprocess.Popen(
        [sys.executable, "-m", "notify_cli.backup_commands", "backup", "--data-dir", str(data), "--to", str(target),
         "--interval", "0.5"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "NOTIFY_ENV": "local"})
    try:
        deadline = time.monotonic() + 60
        refused = _cli("restore", "--data-dir", str(data), "--from", str(target), "--force")
        while refused.returncode == 0 and time.monotonic() < deadline:  # not yet leased: it is still starting
            time.sleep(0.5)
            refused = _cli("restore", "--data-dir", str(data), "--from", str(target), "--force")
        assert refused.returncode == 2 and f"process {backup.pid} (" in refused.stderr, refused.stderr
        assert "backup" in refused.stderr
    finally:
        stop_process(backup)


def test_a_process_opening_the_store_during_a_restore_waits_and_opens_the_restored_file(tmp_path: Path) -> None:
    """A process a supervisor starts while a restore runs opens what the restore put in place, not the old
    file (it would have written to a file the rename then unlinked)."""
    path, restored = tmp_path / "store.sqlite", tmp_path / "restored.sqlite"
    SqliteStore(path).close()
    store = SqliteStore(restored)
    store.table(tables.USERS).put({"pk": "from-backup", "sk": tables.PROFILE_SK})
    store.close()
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys; from notify_core.store.sqlite import SqliteStore; "
         "SqliteStore(sys.argv[1]).table('users').put({'pk': 'after', 'sk': 'profile'})", str(path)],
        cwd=ROOT, stderr=subprocess.PIPE)
    with write_gate(path).exclusive(what="a test restore"):
        time.sleep(1.5)
        assert child.poll() is None  # waiting for the restore
        os.replace(restored, path)
    assert child.wait(60) == 0, child.stderr.read() if child.stderr else ""
    with sqlite3.connect(path) as conn:
        assert {row[0] for row in conn.execute("SELECT pk FROM users")} == {"from-backup", "after"}


def test_a_store_or_log_whose_file_was_removed_or_replaced_writes_nothing_more(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "data" / "store.sqlite")
    users = store.table(tables.USERS)
    users.put({"pk": "before", "sk": tables.PROFILE_SK})
    log = LocalLog(tmp_path / "data" / "stream" / "log.sqlite")
    log.produce("events", None, b"before")
    shutil.copytree(tmp_path / "data", tmp_path / "copy")
    shutil.rmtree(tmp_path / "data")
    with pytest.raises(DatabaseReplacedError, match="removed or replaced"):
        users.put({"pk": "after-wipe", "sk": tables.PROFILE_SK})
    with pytest.raises(DatabaseReplacedError):
        log.produce("events", None, b"after-wipe")
    shutil.copytree(tmp_path / "copy", tmp_path / "data")  # a restore, under the same names
    with pytest.raises(DatabaseReplacedError):
        users.put({"pk": "after-restore", "sk": tables.PROFILE_SK})
    with pytest.raises(DatabaseReplacedError):
        log.produce("events", None, b"after-restore")
    store.close()
    log.close()
    fresh = SqliteStore(tmp_path / "data" / "store.sqlite")  # a process started now writes to the new file
    fresh.table(tables.USERS).put({"pk": "fresh", "sk": tables.PROFILE_SK})
    assert {item["pk"] for item in fresh.table(tables.USERS).scan()} == {"before", "fresh"}
    fresh.close()


def _refused_or_stopped(send: Callable[[], httpx.Response]) -> str:
    """A write to a server whose data directory is gone: 503, or no answer because it has stopped already
    (it looks at its files every 2 s); never a 200 or a 500."""
    try:
        reply = send()
    except httpx.TransportError:
        return "stopped"
    assert reply.status_code == 503, reply.text  # the file replaced, or gone (a thread's first open fails)
    return "503"


def test_notify_serve_refuses_writes_and_stops_for_its_supervisor_once_its_data_directory_is_wiped(
        tmp_path: Path) -> None:
    data, _ = _backed_up_data_dir(tmp_path)
    with notify_serve(data) as (server, base):
        headers = {"Authorization": f"Bearer {serve_admin_key(data)}"}
        assert httpx.get(f"{base}/v1/users/u1/preferences", headers=headers).status_code == 200
        shutil.rmtree(data)
        _refused_or_stopped(lambda: httpx.put(f"{base}/v1/users/u1/preferences", headers=headers,
                                              json={"daily_cap": 1}))
        _refused_or_stopped(lambda: httpx.post(f"{base}/v1/events", headers=headers,
                                               json={"events": [click(1, ts=datetime.now(UTC).isoformat())]}))
        assert server.wait(timeout=30) == STOPPED_UNFINISHED  # before: 503 to every write until restarted


@pytest.mark.parametrize("workers", [1, 2])
def test_notify_serve_stops_for_its_supervisor_once_a_restore_replaced_its_wiped_data_directory(
        tmp_path: Path, workers: int) -> None:
    """The disaster drill under a running server: the data directory is wiped (the restore's check cannot see
    the server then: its lease is on the deleted sidecar) and restored. The server stops, exit 75 with one line,
    where it answered 503 to every write and served reads from the deleted file until someone restarted it;
    started again, as its supervisor does, it serves the restored data. With ``--workers 2`` the worker that
    saw it stops the others."""
    data, target = _backed_up_data_dir(tmp_path)
    port = free_port()
    stderr = tmp_path / "serve.err"

    def start() -> subprocess.Popen[bytes]:
        with stderr.open("wb") as err:
            return subprocess.Popen(
                [sys.executable, "-m", "notify_cli.stream_commands", "serve", "--port", str(port), "--data-dir",
                 str(data), "--workers", str(workers)], cwd=ROOT, env={**os.environ, "NOTIFY_ENV": "local"},
                stdout=subprocess.DEVNULL, stderr=err)

    base = f"http://127.0.0.1:{port}"
    server = start()
    try:
        wait_healthy(server, base)
        headers = {"Authorization": f"Bearer {serve_admin_key(data)}"}
        assert httpx.get(f"{base}/v1/users/u1/preferences", headers=headers).status_code == 200
        shutil.rmtree(data)
        restored = _cli("restore", "--data-dir", str(data), "--from", str(target))
        assert restored.returncode == 0, restored.stderr
        _refused_or_stopped(lambda: httpx.put(f"{base}/v1/users/u1/preferences", headers=headers,
                                              json={"daily_cap": 1}))
        assert server.wait(timeout=30) == STOPPED_UNFINISHED, stderr.read_text()[-3000:]
    finally:
        stop_process(server)
    last = stderr.read_text().strip().splitlines()[-1]
    assert last.startswith("error: the server stopped: its Store or stream log file was replaced"), last
    assert _daily_cap(data / "store.sqlite", "u1") == 3  # the refused write went nowhere

    again = start()  # what systemd does on exit 75
    try:
        wait_healthy(again, base)
        # the backup was taken before the server's first start: its admin key was made again, with the Store's
        headers = {"Authorization": f"Bearer {serve_admin_key(data)}"}
        put = httpx.put(f"{base}/v1/users/u1/preferences", headers=headers, json={"daily_cap": 1})
        assert put.status_code == 200, put.text
    finally:
        stop_process(again)
    assert _daily_cap(data / "store.sqlite", "u1") == 1  # in the restored file


def test_one_process_may_restore_what_it_has_open_itself(tmp_path: Path) -> None:
    """The restore command reads the Store's audit head first: its own lease never refuses it, and a second
    process's does."""
    settings, store, service = backed_up_once(tmp_path)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from notify_core.store.sqlite import SqliteStore; "
         "s = SqliteStore(sys.argv[1]); print('open', flush=True); time.sleep(60)", str(settings.sqlite_path)],
        cwd=ROOT, stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"open\n"
        with pytest.raises(DatabaseInUseError, match=f"process {holder.pid} "):
            service.restore(force=True)
        assert [item["pk"] for item in store.table(tables.USERS).scan()] == ["a"]  # still its own file
    finally:
        stop_process(holder)
    assert service.restore(force=True).databases["store"] == "restored"
    store.close()


def _wait_open(database: Path, pid: int, *, timeout: float = 60.0) -> None:
    """Until process ``pid`` holds ``database``'s open lease (it has opened the file)."""
    deadline = time.monotonic() + timeout
    while pid not in lock_holders(Path(f"{database}{OPEN_SUFFIX}")):
        assert time.monotonic() < deadline, f"process {pid} never opened {database}"
        time.sleep(0.1)


def _wait_beating(database: Path, *, timeout: float = 60.0) -> None:
    """Until a worker's heartbeat is in ``database``: it has finished starting. Its lease is taken when it opens
    the Store, before it reads its keys; moved away in between, it made a new master key and Store at the old
    path (seen in CI under load)."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(sqlite3.Error), sqlite3.connect(f"file:{database}?mode=ro", uri=True) as conn:
            if conn.execute("SELECT 1 FROM delivery_cursor WHERE pk = ?", (HEARTBEAT_PK,)).fetchone():
                return
        assert time.monotonic() < deadline, "no worker heartbeat"
        time.sleep(0.1)


def test_a_worker_whose_data_directory_is_moved_away_sends_nothing_and_stops_for_its_supervisor(
        tmp_path: Path) -> None:
    data, aside, outbox = tmp_path / "data", tmp_path / "aside", tmp_path / "outbox.jsonl"
    store = SqliteStore(data / "store.sqlite")
    seed_due(store, n=100, start=datetime.fromtimestamp(int(time.time()) + 4, UTC), campaigns=5)
    store.close()
    worker = _start(data, outbox, lease_s=2.0, concurrency=2, idle_exit=60)
    try:
        _wait_open(data / "store.sqlite", worker.pid)
        _wait_beating(data / "store.sqlite")  # started: its keys read and its loop running
        os.rename(data, aside)  # the data directory gone from under it before anything is due
        _out, err = worker.communicate(timeout=60)
    finally:
        stop_process(worker)
    assert worker.returncode == STOPPED_UNFINISHED, err.decode(errors="replace")[-2000:]
    assert "removed or replaced" in err.decode(errors="replace")
    assert not outbox.exists() or outbox.read_text() == ""  # nothing sent that the Store could not record

    if data.exists():  # what the stopped worker made at the old path: a log folder at most, never a database
        assert not list(data.rglob("*.sqlite")), sorted(str(p) for p in data.rglob("*"))
        shutil.rmtree(data)
    os.rename(aside, data)  # back (a restore): a worker started now sends each notification once
    again = _start(data, outbox, lease_s=2.0, concurrency=2, idle_exit=3)
    _out, err = again.communicate(timeout=120)
    assert again.returncode == 0, err.decode(errors="replace")[-2000:]
    sent = [json.loads(line)["notification_id"] for line in outbox.read_text().splitlines()]
    assert len(sent) == len(set(sent)) == 100


def test_a_consumer_whose_store_is_moved_away_commits_nothing_and_the_next_one_persists_every_event(
        tmp_path: Path) -> None:
    data, aside = tmp_path / "data", tmp_path / "aside"
    SqliteStore(data / "store.sqlite").close()
    log = LocalLog(data / "stream" / "log.sqlite")
    capture_events(json.dumps([click(i) for i in range(50)]), stream=log, clock=events_clock())
    consume = [sys.executable, "-m", "notify_cli.stream_commands", "consume", "--data-dir", str(data),
               "--max-batch", "10"]
    consumer = subprocess.Popen([*consume, "--idle-exit", "60"], cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env={**os.environ, "NOTIFY_ENV": "local"})
    try:
        deadline = time.monotonic() + 60
        while log.committed("notify-event-consumer", CLICKSTREAM) < 50:
            assert consumer.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        os.rename(data / "store.sqlite", aside)  # the Store gone from under it
        capture_events(json.dumps([click(i) for i in range(50, 80)]), stream=log, clock=events_clock())
        _out, err = consumer.communicate(timeout=60)
    finally:
        stop_process(consumer)
    assert consumer.returncode == STOPPED_UNFINISHED, err.decode(errors="replace")[-2000:]
    assert "removed or replaced" in err.decode(errors="replace")
    assert log.committed("notify-event-consumer", CLICKSTREAM) == 50  # the refused batch stays to be read

    os.replace(aside, data / "store.sqlite")
    done = subprocess.run([*consume, "--idle-exit", "2"], cwd=ROOT, capture_output=True, timeout=120,
                          env={**os.environ, "NOTIFY_ENV": "local"})
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    store = SqliteStore(data / "store.sqlite")
    events = [item for item in store.table(tables.USER_EVENTS).scan()]
    assert len(events) == 80 == len({(e["pk"], e["sk"]) for e in events})
    store.close()
    log.close()


def test_a_consumer_whose_log_is_replaced_before_its_commit_stops_cleanly_and_the_next_one_reads_the_batch(
        tmp_path: Path) -> None:
    """The batch is in the Store; its offsets cannot be committed to a log file the path no longer names. The
    consumer stops with exit 75 and a one-line reason (before: a traceback and exit 1, every restart again: a
    crash loop under a supervisor), and nothing is lost: the next consumer reads the new file from the
    Store's positions."""
    data = tmp_path / "data"
    store_path, log_path = data / "store.sqlite", data / "stream" / "log.sqlite"
    SqliteStore(store_path).close()
    log = LocalLog(log_path)
    capture_events(json.dumps([click(i) for i in range(10)]), stream=log, clock=events_clock())
    consume = [sys.executable, "-m", "notify_cli.stream_commands", "consume", "--data-dir", str(data)]
    consumer = subprocess.Popen([*consume, "--idle-exit", "60"], cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env={**os.environ, "NOTIFY_ENV": "local"})
    ctx = multiprocessing.get_context("spawn")
    inside, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold_in_a_transaction, args=(str(store_path), inside, release))
    try:
        deadline = time.monotonic() + 60
        while log.committed("notify-event-consumer", CLICKSTREAM) < 10:
            assert consumer.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        holder.start()
        assert inside.wait(30)  # the Store's writers queue behind this process
        capture_events(json.dumps([click(i) for i in range(10, 20)]), stream=log, clock=events_clock())
        time.sleep(1.5)  # polled: its Store write waits on the holder
        log.close()
        copy = tmp_path / "copy.sqlite"
        with sqlite3.connect(log_path) as source, sqlite3.connect(copy) as target:
            source.backup(target)
        os.replace(copy, log_path)  # a restored log, under the same name
        for sidecar in (f"{log_path}-wal", f"{log_path}-shm"):
            Path(sidecar).unlink(missing_ok=True)
        release.set()
        _out, err = consumer.communicate(timeout=90)
    finally:
        release.set()
        holder.join(30)
        stop_process(consumer)
    text = err.decode(errors="replace")
    assert consumer.returncode == STOPPED_UNFINISHED, text[-3000:]
    assert "removed or replaced" in text and "Traceback" not in text and "\u256d" not in text, text[-3000:]
    done = subprocess.run([*consume, "--idle-exit", "2"], cwd=ROOT, capture_output=True, timeout=120,
                          env={**os.environ, "NOTIFY_ENV": "local"})
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    store = SqliteStore(store_path)
    events = list(store.table(tables.USER_EVENTS).scan())
    assert len(events) == 20 == len({(e["pk"], e["sk"]) for e in events})
    store.close()

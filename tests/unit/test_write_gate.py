"""The SQLite write gate (notify_core/sqlite_tx.py): writers of one file queue in the kernel, across processes.

What must hold: another process cannot take the gate while one holds it (and takes it the moment it is
released); a holder killed with SIGKILL leaves nothing stale; a holder that is alive but stopped makes the
waiter fail after its timeout with an error naming it, not hang; a forked child queues behind its parent
rather than sharing its lock; a nested write in one thread passes; and without a sidecar (a directory it
cannot be created in) writes still work. Real processes, real SQLite files.
"""

from __future__ import annotations

import fcntl
import multiprocessing
import os
import signal
import stat
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from notify_core import sqlite_tx
from notify_core.errors import BackendError
from notify_core.sqlite_tx import LOCK_SUFFIX, OPEN_SUFFIX, WriteGate, lock_holder, lock_holders, write_gate
from notify_core.store.sqlite import SqliteStore
from notify_core.stream.local_log import LocalLog

SPAWN = multiprocessing.get_context("spawn")


def _can_lock(sidecar: str) -> bool:
    """Whether a fresh open file description gets the lock right now (what another process would)."""
    fd = os.open(sidecar, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return True
    finally:
        os.close(fd)


def _hold_in_a_transaction(path: str, inside: Any, release: Any) -> None:
    """A child that writes, then waits inside a write transaction (holding the gate) until told to go on."""
    store = SqliteStore(Path(path))
    table = store.table("t")
    conn = store.connection()
    with store.write_gate.transaction(conn, what="test hold"):
        conn.execute('INSERT INTO "t" (pk, sk, ttl, body) VALUES (?, ?, NULL, ?)',
                     ("held", "s", '{"pk":"held","sk":"s"}'))
        inside.set()
        release.wait(60)
    table.put({"pk": "after", "sk": "s"})
    store.close()


def _child_holding_the_gate(tmp_path: Path) -> tuple[SqliteStore, str, Any, Any]:
    """This process's Store, the sidecar's path, and a child inside a write transaction (with its release)."""
    store = SqliteStore(tmp_path / "store.sqlite")
    store.table("t")
    sidecar = f"{tmp_path / 'store.sqlite'}{LOCK_SUFFIX}"
    inside, release = SPAWN.Event(), SPAWN.Event()
    child = SPAWN.Process(target=_hold_in_a_transaction, args=(str(tmp_path / "store.sqlite"), inside, release))
    child.start()
    assert inside.wait(60)
    assert not _can_lock(sidecar)  # the child's transaction holds the gate
    return store, sidecar, child, release


def test_another_process_waits_while_a_write_transaction_is_open(tmp_path: Path) -> None:
    store, sidecar, child, release = _child_holding_the_gate(tmp_path)
    table = store.table("t")
    try:
        waited: list[float] = []

        def write() -> None:
            started = time.monotonic()
            table.put({"pk": "mine", "sk": "s"})
            waited.append(time.monotonic() - started)

        writer = threading.Thread(target=write)
        writer.start()
        time.sleep(0.3)
        assert writer.is_alive() and not waited  # queued behind the child, not failed
        release.set()
        writer.join(30)
        assert waited and waited[0] >= 0.3
    finally:
        release.set()
        child.join(30)
    assert child.exitcode == 0
    assert {i["pk"] for i in table.scan()} == {"held", "after", "mine"}
    assert _can_lock(sidecar)
    assert stat.S_IMODE(os.stat(sidecar).st_mode) == 0o600
    store.close()


def test_a_holder_killed_with_sigkill_leaves_nothing_stale(tmp_path: Path) -> None:
    store, _sidecar, child, _release = _child_holding_the_gate(tmp_path)
    table = store.table("t")
    assert child.pid is not None
    os.kill(child.pid, signal.SIGKILL)
    child.join(30)
    started = time.monotonic()
    table.put({"pk": "mine", "sk": "s"})
    assert time.monotonic() - started < 5  # the kernel dropped the dead holder's lock (SQLite's too)
    assert [i["pk"] for i in table.scan()] == ["mine"]  # its uncommitted write is gone, as SQLite promises
    store.close()


def test_a_stopped_holder_fails_the_waiter_after_its_timeout_naming_the_holder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(sqlite_tx, "SLOW_WAIT_S", 0.3)  # the warning an operator sees before the failure
    store, sidecar, child, release = _child_holding_the_gate(tmp_path)
    table = store.table("t")
    assert child.pid is not None
    assert lock_holder(Path(sidecar)) == child.pid
    os.kill(child.pid, signal.SIGSTOP)  # alive, holding the lock, never releasing it
    try:
        started = time.monotonic()
        with pytest.raises(BackendError, match=r"test write failed: waited 1 s for the write lock of store\.sqlite, "
                                               f"held by process {child.pid} "), \
                store.write_gate.held(what="test write", timeout=1.0):
            pass
        waited = time.monotonic() - started
        assert 1.0 <= waited < 3.0  # gave up at its deadline, not at once and not never
        slow = [r for r in caplog.records if "waited over" in r.getMessage()]
        assert len(slow) == 1 and slow[0].levelname == "WARNING" and getattr(slow[0], "holder_pid", None) == child.pid
        # the gate is usable again: this process's thread lock was released with the error (asked from
        # another thread: the lock is re-entrant, so this thread would get it even if it were still held)
        free: list[bool] = []

        def try_lock() -> None:
            got = store.write_gate._threads.acquire(timeout=0)
            free.append(got)
            if got:
                store.write_gate._threads.release()

        other = threading.Thread(target=try_lock)
        other.start()
        other.join(10)
        assert free == [True]
    finally:
        os.kill(child.pid, signal.SIGCONT)
        release.set()
        child.join(30)
    assert child.exitcode == 0
    table.put({"pk": "mine", "sk": "s"})  # once the holder goes on, writes get in as before
    assert {i["pk"] for i in table.scan()} == {"held", "after", "mine"}
    assert lock_holder(Path(sidecar)) is None
    store.close()


def test_a_forked_child_queues_behind_its_parent(tmp_path: Path) -> None:
    log = LocalLog(tmp_path / "log.sqlite")
    log.produce("events", None, b"first")
    sidecar = str(log.write_gate.path)
    read, write = os.pipe()
    with log.write_gate.held(what="test"):
        pid = os.fork()
        if pid == 0:  # the child: its own descriptor, so the parent's lock is not its own
            os.close(read)
            fd = log.write_gate._file()
            code = 1
            if fd is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    code = 0
            os.write(write, bytes([code]))
            os._exit(code)
        os.close(write)
        answer = os.read(read, 1)
        os.close(read)
        _, status = os.waitpid(pid, 0)
    assert answer == bytes([0]) and os.waitstatus_to_exitcode(status) == 0
    assert _can_lock(sidecar)


def test_one_gate_per_file_and_nested_writes_pass(tmp_path: Path) -> None:
    a = SqliteStore(tmp_path / "store.sqlite")
    b = SqliteStore(tmp_path / "." / "store.sqlite")
    assert a.write_gate is b.write_gate is write_gate(tmp_path / "store.sqlite")
    with a.write_gate.held(what="outer"), a.write_gate.held(what="inner"):
        assert not _can_lock(str(a.write_gate.path))
    assert _can_lock(str(a.write_gate.path))
    a.close()
    b.close()


def test_without_a_sidecar_writes_still_work(tmp_path: Path) -> None:
    gate = WriteGate(tmp_path / "no-such-folder" / "store.sqlite")
    done = []
    with gate.held(what="test"):
        done.append(True)
    assert done == [True]
    assert not gate.path.exists()


def test_processes_writing_together_lose_nothing(tmp_path: Path) -> None:
    processes = 2
    path = tmp_path / "store.sqlite"
    SqliteStore(path).table("t")
    children = [SPAWN.Process(target=_write_many, args=(str(path), k, 300)) for k in range(processes)]
    for child in children:
        child.start()
    for child in children:
        child.join(120)
        assert child.exitcode == 0
    store = SqliteStore(path)
    items = list(store.table("t").scan())
    assert len(items) == processes * 300 * 3
    assert {i["v"] for i in items if i["pk"].startswith("p0-")} == set(range(300))
    store.close()


def _write_many(path: str, k: int, n: int) -> None:
    from notify_core.store.port import Update

    store = SqliteStore(Path(path))
    table = store.table("t")
    for i in range(n):
        table.update_many([Update(f"p{k}-{i}-{j}", "s", {"v": i}, None) for j in range(3)])
    store.close()


def test_opening_a_new_file_waits_for_another_writer_instead_of_failing_to_turn_wal_on(tmp_path: Path) -> None:
    """A file not yet in WAL mode, another connection writing it: SQLite refuses the switch to WAL at once
    ("database is locked", no busy timeout), which killed a producer opening a new embedded log while its
    consumer created the tables (CI, session 36). ``connect`` now waits for the writer, then turns WAL on."""
    import sqlite3

    path = tmp_path / "new.sqlite"
    writer = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    writer.execute("CREATE TABLE t (x)")
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("INSERT INTO t VALUES (1)")
    released = threading.Timer(0.5, lambda: writer.execute("COMMIT"))
    released.start()
    started = time.monotonic()
    try:
        conn = sqlite_tx.connect(path)
    finally:
        released.join()
    waited = time.monotonic() - started
    assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert waited >= 0.4  # it waited for the writer's commit
    assert conn.execute("SELECT x FROM t").fetchall() == [(1,)]
    conn.close()
    writer.close()


def _held_by(database: Path) -> list[int]:
    return lock_holders(Path(f"{database}{OPEN_SUFFIX}"))


def test_the_open_lease_is_held_while_a_store_or_log_of_the_process_is_open(tmp_path: Path) -> None:
    """What a restore checks: a process holds the file's open lease from the first Store or log that opens it
    to the last one closed (before: until the garbage collector found the closed objects, so a restore was
    refused for a process that had closed the file)."""
    path = tmp_path / "store.sqlite"
    a, b = SqliteStore(path), SqliteStore(path)
    assert _held_by(path) == [os.getpid()]
    a.close()
    assert _held_by(path) == [os.getpid()]  # b is still open
    b.close()
    assert _held_by(path) == []
    log = LocalLog(tmp_path / "log.sqlite")
    assert _held_by(tmp_path / "log.sqlite") == [os.getpid()]
    log.close()
    assert _held_by(tmp_path / "log.sqlite") == []
    c = SqliteStore(path)  # open again: held again
    assert _held_by(path) == [os.getpid()]
    c.close()


def test_a_forked_child_holds_its_own_lease_and_closing_its_store_leaves_the_parents(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite"
    store = SqliteStore(path)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its copy of the Store, closed; then it reports and waits to be told to go
        os.close(read)
        code = 0 if _held_by(path) == sorted({os.getppid(), os.getpid()}) else 1
        store.close()  # releases the child's lease only
        os.write(write, bytes([code]))
        time.sleep(2)
        os._exit(code)
    os.close(write)
    answer = os.read(read, 1)
    os.close(read)
    assert answer == bytes([0])
    assert os.getpid() in _held_by(path)  # the child's close left the parent's lease
    os.waitpid(pid, 0)
    assert _held_by(path) == [os.getpid()]
    store.close()
    assert _held_by(path) == []

"""One way to run a SQLite write transaction, shared by the SQLite Store and the embedded log.

Writers of one file queue on a :class:`WriteGate` before they touch SQLite's write lock. Why: a SQLite
writer that finds the file locked goes into SQLite's busy handler, which sleeps 1, 2, 5, 10, 15 ... 100 ms
between tries whatever the holder has left (usually a fraction of a millisecond). Threads of one process
were already queued on a Python lock for that reason; processes were not, and two ``notify worker``
processes on one Store collided ~2,100 times in a 20k-delivery burst and slept ~1,800 times (strace here):
the second process bought little. A blocking ``flock(2)`` on a sidecar file hands the lock on the moment it
is released, in the kernel, across processes; the kernel drops it when its holder dies (kill -9 leaves
nothing stale). SQLite's own locking stays what makes writes correct: the gate only orders the queue, so a
writer that does not take it (the ``sqlite3`` shell, Litestream's checkpoints) is still safe, it merely
meets the busy handler again.

A waiter gives up after :data:`BUSY_TIMEOUT_S`, as SQLite's busy handler does, and its error names the
process holding the lock: a holder that is alive but stopped (SIGSTOP, a debugger, a hung disk) must
surface as a failed write, not hang every other writer of the file for ever. ``flock(2)`` has no timeout,
so a contended wait polls the lock with ``LOCK_NB`` at short, growing pauses (:data:`POLL_PAUSES_S`, then
every :data:`POLL_MAX_PAUSE_S`): the holder's transactions last a fraction of a millisecond, and the
pauses stay far below the busy handler's 1-100 ms (``bench.delivery_ab --processes 2 --tag gate_wait``:
the two-process delivery burst against the blocking wait, bench/results/delivery_gate_wait_quick.json).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from notify_core.errors import BackendError

log = logging.getLogger(__name__)

BUSY_TIMEOUT_S = 60.0
"""How long a writer waits for the write lock before its write fails (SQLite's busy_timeout, the gate's
in-process wait): long enough for a bulk load's transaction, short enough that a stuck holder surfaces."""

POLL_PAUSES_S = (0.0, 20e-6, 50e-6, 100e-6, 200e-6)
"""The first pauses of a contended wait (0: yield once), before it settles at :data:`POLL_MAX_PAUSE_S`."""

POLL_MAX_PAUSE_S = 500e-6
"""The longest pause between two tries of a contended wait (~2,000 ``flock`` calls a second while waiting:
a few ms of CPU a second, and a released lock is seen within half a millisecond)."""

SLOW_WAIT_S = 5.0
"""A contended wait longer than this logs one warning naming the holder, long before the timeout fails it:
an operator sees a stuck writer while the others still wait."""

LOCK_SUFFIX = "-writer.lock"
"""The gate's sidecar beside the database (``store.sqlite`` -> ``store.sqlite-writer.lock``, mode 0600),
like SQLite's own ``-wal`` and ``-shm``; it holds no data, and a missing one is created again."""


def connect(database: Path) -> sqlite3.Connection:
    """A connection to a Notify SQLite file as the Store and the embedded log open it: autocommit (their
    transactions are :meth:`WriteGate.transaction`'s), usable from whichever thread
    :class:`notify_core.per_thread.PerThread` hands it to, WAL, and :data:`BUSY_TIMEOUT_S` for writers that
    meet SQLite's lock outside the gate. Callers add their own synchronous level and cache pragmas."""
    conn = sqlite3.connect(database, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
    _journal_mode_wal(conn)
    return conn


def _journal_mode_wal(conn: sqlite3.Connection) -> None:
    """``PRAGMA journal_mode=WAL``, waiting out another writer of a file not yet in WAL mode.

    Switching to WAL goes from a read lock to the exclusive one; while another connection holds the write
    lock (creating a new file's tables), SQLite refuses at once ("database is locked") rather than wait,
    as it does to avoid a deadlock: the busy timeout never applies. Seen in CI: a producer opening a new
    embedded log as its consumer created the log's tables died at start (tests/stream/test_groups.py).
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    pauses = iter(POLL_PAUSES_S)
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
        time.sleep(next(pauses, POLL_MAX_PAUSE_S))


class WriteGate:
    """The queue of one database file's writers: a lock for this process's threads, then ``flock`` for
    the other processes. Re-entrant in a thread (a nested write on a second connection of the same file
    passes through; it would wait on SQLite as before)."""

    def __init__(self, database: Path) -> None:
        self.path = Path(f"{database}{LOCK_SUFFIX}")
        self._threads = threading.RLock()
        self._depth = 0
        self._fd: int | None = None
        self._fd_pid = 0
        self._warned = False

    @contextmanager
    def held(self, *, what: str, timeout: float = BUSY_TIMEOUT_S) -> Iterator[None]:
        """This file's write lock for the ``with`` block: first among this process's threads, then among
        processes; ``BackendError`` naming ``what`` (and the holding process, when it is another) after
        ``timeout`` seconds in all."""
        deadline = time.monotonic() + timeout
        if not self._threads.acquire(timeout=timeout):
            raise BackendError(f"{what} failed: waited {timeout:.0f} s for this process's other writers")
        self._depth += 1
        try:
            fd = self._file() if self._depth == 1 else None
            if fd is not None:
                self._lock(fd, deadline=deadline, timeout=timeout, what=what)
            try:
                yield
            finally:
                if fd is not None:
                    fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            self._depth -= 1
            self._threads.release()

    @contextmanager
    def transaction(self, conn: sqlite3.Connection, *, what: str, immediate: bool = True) -> Iterator[None]:
        """BEGIN (IMMEDIATE: take the write lock now, so a read-check-write inside is atomic across threads
        and processes) ... COMMIT; ROLLBACK on any exception, all inside this gate (the file's writer queue).
        SQLite errors become ``BackendError`` naming ``what``; other exceptions (a failed condition, say)
        pass through unchanged after the rollback."""
        with self.held(what=what):
            try:
                conn.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
                try:
                    yield
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise BackendError(f"{what} failed: {exc}") from exc

    def _lock(self, fd: int, *, deadline: float, timeout: float, what: str) -> None:
        """``flock`` the sidecar, polling while another process holds it (module doc: why not block)."""
        pauses = iter(POLL_PAUSES_S)
        first_miss: float | None = None
        warned = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                pass
            now = time.monotonic()
            if first_miss is None:
                first_miss = now
            elif not warned and now - first_miss >= SLOW_WAIT_S:
                warned = True  # once a wait
                log.warning("a writer has waited over %.0f s for this database's write lock", SLOW_WAIT_S,
                            extra={"what": what, "path": str(self.path), "holder_pid": lock_holder(self.path)})
            left = deadline - now
            if left <= 0:
                holder = lock_holder(self.path)
                who = f"process {holder}" if holder is not None else "another process"
                raise BackendError(f"{what} failed: waited {timeout:.0f} s for the write lock of "
                                   f"{self.path.name.removesuffix(LOCK_SUFFIX)}, held by {who} (stopped or stuck?)")
            time.sleep(min(next(pauses, POLL_MAX_PAUSE_S), left))

    def _file(self) -> int | None:
        """The sidecar's descriptor, opened once per process (a forked child opens its own: a descriptor
        shared with the parent would share its lock). None where it cannot be created (a read-only
        directory): then only this process's threads queue, and other processes meet the busy handler."""
        pid = os.getpid()
        if self._fd is not None and self._fd_pid == pid:
            return self._fd
        try:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            if not self._warned:
                self._warned = True
                log.warning("no cross-process write queue for this database; writers fall back to SQLite's "
                            "busy handler", extra={"path": str(self.path), "error": str(exc)})
            self._fd = None
            return None
        self._fd_pid = pid
        return self._fd

    def __del__(self) -> None:
        if self._fd is not None and self._fd_pid == os.getpid():
            os.close(self._fd)

    def _after_fork(self) -> None:
        # A thread of the parent may have held the lock at fork: the child starts with a free one, and
        # closes its copy of the parent's descriptor (the parent's flock lives on through its own copy).
        self._threads = threading.RLock()
        self._depth = 0
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
        self._fd = None


# Weak: a gate lives while a Store or log of its file does (a test suite opens thousands of files).
_gates: weakref.WeakValueDictionary[str, WriteGate] = weakref.WeakValueDictionary()
_gates_lock = threading.Lock()


def write_gate(database: Path | str) -> WriteGate:
    """The one gate of ``database`` in this process: every Store or log object opened on the same file
    queues its writers together."""
    key = os.path.realpath(database)
    with _gates_lock:
        gate = _gates.get(key)
        if gate is None:
            gate = _gates[key] = WriteGate(Path(key))
        return gate


def lock_holder(path: Path) -> int | None:
    """The pid holding a ``flock`` on ``path``, from Linux's ``/proc/locks`` (None elsewhere, or when no
    process holds it): read only to name the culprit in a timeout's error, never on the write path."""
    try:
        st = os.stat(path)
        with open("/proc/locks", encoding="ascii", errors="replace") as locks:
            lines = locks.read().splitlines()
    except OSError:
        return None
    inode = f":{st.st_ino}"
    for line in lines:
        fields = line.split()
        # "1: FLOCK  ADVISORY  WRITE 4242 fd:01:1234 0 EOF"; a waiter's line has "->" after the number
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5].endswith(inode) and fields[4].isdigit():
            device = fields[5].rsplit(":", 1)[0].split(":")
            if len(device) == 2 and os.makedev(int(device[0], 16), int(device[1], 16)) == st.st_dev:
                return int(fields[4])
    return None


def _reset_after_fork() -> None:
    global _gates_lock
    _gates_lock = threading.Lock()
    for gate in list(_gates.values()):
        gate._after_fork()


os.register_at_fork(after_in_child=_reset_after_fork)


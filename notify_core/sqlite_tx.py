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

Every process that opens the file also holds a shared ``flock`` on a second sidecar, ``-open.lock``, for as
long as its gate lives (:meth:`WriteGate.lease`), and checks at each write that the path still names the file
it opened. Why: a restore replaces the file by a rename, and a process that still had the old one open went
on answering from it and writing to it (``notify serve`` answered 200 to a preference change after
``notify restore --force``: the change went to a deleted inode). A restore now takes that lock exclusively
(:meth:`WriteGate.exclusive`) and is refused while any other process holds it; a process opening the file
meanwhile waits for the restore to end; and a process whose file was removed or replaced anyway (a data
directory wiped under it) writes nothing more (:class:`DatabaseReplacedError`) instead of acknowledging
writes nobody will read.

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
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from notify_core.errors import BackendError, DatabaseInUseError, DatabaseReplacedError

log = logging.getLogger(__name__)

BUSY_TIMEOUT_S = 60.0
"""How long a writer waits for the write lock before its write fails (SQLite's busy_timeout, the gate's
in-process wait): long enough for a bulk load's transaction, short enough that a stuck holder surfaces."""

FULL_BELOW_BYTES = 64 * 1024
"""Free space under which a failed open is reported as a full disk: less than a WAL index (``-shm``, 32 KiB)
and a page or two."""

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

OPEN_SUFFIX = "-open.lock"
"""The sidecar every process with the file open holds a shared ``flock`` on (``store.sqlite-open.lock``,
0600): a restore takes it exclusively. Separate from the writers' sidecar, whose exclusive lock comes and
goes with each transaction."""

OPEN_WAIT_S = 600.0
"""How long opening the file waits for a restore that holds it (one of 1M users takes ~17 s): a process a
supervisor starts during a restore opens the restored file instead of failing, or of opening the old one."""

OPEN_POLL_S = 0.05

FileIdentity = tuple[int, int]
"""A file's ``(st_dev, st_ino)``: what a path named when a Store or log opened it."""


def file_identity(path: Path) -> FileIdentity | None:
    """``path``'s device and inode now (None: no such file)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_dev, st.st_ino)


_STARTED_WITH: dict[Path, FileIdentity | None] = {}


def started_with(files: Mapping[Path, FileIdentity | None]) -> None:
    """The SQLite files this process started with (``notify serve``'s workers, which open their Store on their
    first request): a Store or stream log opened later must still find the same file there
    (:func:`opened_since_start`), else a worker whose first request came after a restore answered from the
    restored file with the state of a process that started on the other (401 for a key minted after the backup)."""
    _STARTED_WITH.update({path.resolve(): identity for path, identity in files.items()})


def opened_since_start(database: Path, *, what: str) -> None:
    """:class:`DatabaseReplacedError` when this process started with another file at ``database``
    (:func:`started_with`), or the file is gone; nothing when it did not say which."""
    key = database.resolve()
    if key in _STARTED_WITH:
        refuse_if_replaced(database, _STARTED_WITH[key], what=what)


def refuse_if_replaced(database: Path, opened: FileIdentity | None, *, what: str) -> None:
    """:class:`DatabaseReplacedError` once ``database`` names another file than the one ``opened`` identifies, or
    none (a wiped data directory, or a restore): a write, and a new thread's first connection, which would
    otherwise open the new file and answer from it with this process's stale state (an API key minted after
    the backup: 401 from one thread, the old file's answers from the others). None: not opened yet."""
    if opened is not None and file_identity(database) != opened:
        raise DatabaseReplacedError(
            f"{what} refused: {database} was removed or replaced after this process opened it (a wiped data "
            "directory, or a restore): nothing more is written to the old file; restart this process")


def connect(database: Path, *, opened: FileIdentity | None = None) -> sqlite3.Connection:
    """A connection to a Notify SQLite file as the Store and the embedded log open it: autocommit (their
    transactions are :meth:`WriteGate.transaction`'s), usable from whichever thread
    :class:`notify_core.per_thread.PerThread` hands it to, WAL, and :data:`BUSY_TIMEOUT_S` for writers that
    meet SQLite's lock outside the gate. Callers add their own synchronous level and cache pragmas.
    ``BackendError`` naming the file when it cannot be opened (its folder removed, a full disk): a thread's
    first connection is made mid-request, where a raw ``sqlite3`` error was an HTTP 500. With ``opened`` (the
    file the caller's Store or log opened), :func:`refuse_if_replaced` before anything is read or set."""
    try:
        conn = sqlite3.connect(database, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise BackendError(f"opening {database} failed: {_why(database, exc)}") from exc
    try:
        refuse_if_replaced(database, opened, what="a new SQLite connection")
    except DatabaseReplacedError:
        conn.close()
        raise
    try:
        conn.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
        _journal_mode_wal(conn)
    except sqlite3.Error as exc:
        conn.close()
        raise BackendError(f"opening {database} failed: {_why(database, exc)}") from exc
    return conn


def _why(database: Path, exc: sqlite3.Error) -> str:
    """SQLite's reason, and that the disk is full when it is: opening a WAL file on a full disk fails to make
    its ``-shm`` file, which SQLite reports as "disk I/O error" and sends an operator looking at the hardware."""
    try:
        stats = os.statvfs(database.parent)
    except OSError:
        return str(exc)
    return f"{exc} (its disk is full)" if stats.f_bavail * stats.f_frsize < FULL_BELOW_BYTES else str(exc)


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
        self.database = Path(database)
        self.path = Path(f"{database}{LOCK_SUFFIX}")
        self.open_path = Path(f"{database}{OPEN_SUFFIX}")
        self._threads = threading.RLock()
        self._depth = 0
        self._fd: int | None = None
        self._fd_pid = 0
        self._warned = False
        self._lease_lock = threading.Lock()
        self._open_fd: int | None = None
        self._open_mode = 0  # 0, fcntl.LOCK_SH (leased) or fcntl.LOCK_EX (exclusive(): a restore)
        self._lease_users = 0  # the Stores and logs of this process that hold the lease (lease() - release())

    @contextmanager
    def held(self, *, what: str, timeout: float = BUSY_TIMEOUT_S,
             opened: FileIdentity | None = None) -> Iterator[None]:
        """This file's write lock for the ``with`` block: first among this process's threads, then among
        processes; ``BackendError`` naming ``what`` (and the holding process, when it is another) after
        ``timeout`` seconds in all. With ``opened`` (the identity the caller's Store or log opened),
        :class:`DatabaseReplacedError` once the path names another file or none."""
        deadline = time.monotonic() + timeout
        if not self._threads.acquire(timeout=timeout):
            raise BackendError(f"{what} failed: waited {timeout:.0f} s for this process's other writers")
        self._depth += 1
        try:
            fd = self._file() if self._depth == 1 else None
            if fd is not None:
                self._lock(fd, deadline=deadline, timeout=timeout, what=what)
            try:
                refuse_if_replaced(self.database, opened, what=what)
                yield
            finally:
                if fd is not None:
                    fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            self._depth -= 1
            self._threads.release()

    @contextmanager
    def transaction(self, conn: sqlite3.Connection, *, what: str, immediate: bool = True,
                    opened: FileIdentity | None = None) -> Iterator[None]:
        """BEGIN (IMMEDIATE: take the write lock now, so a read-check-write inside is atomic across threads
        and processes) ... COMMIT; ROLLBACK on any exception, all inside this gate (the file's writer queue).
        SQLite errors become ``BackendError`` naming ``what``; other exceptions (a failed condition, say)
        pass through unchanged after the rollback. ``opened``: see :meth:`held`."""
        with self.held(what=what, opened=opened):
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

    def lease(self) -> None:
        """Hold this file's open lease (a shared ``flock`` on :data:`OPEN_SUFFIX`) until :meth:`release` (or
        this gate's end): every Store and log takes it before it opens the file and releases it when closed, so
        :meth:`exclusive` sees the file is in use. While a restore holds the file, this waits for it (up to
        :data:`OPEN_WAIT_S`), so what opens next is the restored file. Without a sidecar (a read-only
        directory) nothing is held."""
        with self._lease_lock:
            fd = None if self._open_mode else self._open_file()
            if fd is not None:
                self._wait_shared(fd)
            self._lease_users += 1  # counted once taken (a timeout leaves no lease to release)

    def _wait_shared(self, fd: int) -> None:
        """The shared lock on the open lease, polling while a restore holds it exclusively."""
        deadline = time.monotonic() + OPEN_WAIT_S
        warned = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                self._open_mode = fcntl.LOCK_SH
                return
            except BlockingIOError:
                pass
            holder = lock_holder(self.open_path)
            if not warned:
                warned = True
                log.warning("waiting for the process that holds this database to itself (a restore) to finish",
                            extra={"path": str(self.database), "holder_pid": holder})
            if time.monotonic() >= deadline:
                raise BackendError(f"{self.database.name} not opened: held to itself by process {holder} "
                                   f"(a restore?) for {OPEN_WAIT_S:.0f} s")
            time.sleep(OPEN_POLL_S)

    def release(self) -> None:
        """One :meth:`lease` less; the shared lock goes with the last (a closed Store no longer refuses a
        restore; one still open in the same process keeps it)."""
        with self._lease_lock:
            self._lease_users = max(0, self._lease_users - 1)
            if self._lease_users == 0 and self._open_mode == fcntl.LOCK_SH and self._open_fd is not None:
                fcntl.flock(self._open_fd, fcntl.LOCK_UN)
                self._open_mode = 0

    @contextmanager
    def exclusive(self, *, what: str) -> Iterator[None]:
        """The file to this process alone for the ``with`` block (``what``: a restore that replaces it), or
        :class:`DatabaseInUseError` at once naming the other processes that have it open. This process's own
        lease does not count (the restore's command opened the Store to read its audit head); a Store or
        log this process opens inside the block opens the file as it is then."""
        with self._lease_lock:
            fd = self._open_file()
            if fd is None:
                raise BackendError(f"{what}: cannot create {self.open_path}")
            had = self._open_mode
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                others = [pid for pid in lock_holders(self.open_path) if pid != os.getpid()]
                self._open_mode = 0
                if had:  # a refused conversion drops the shared lock it started from (flock(2))
                    with contextlib.suppress(BlockingIOError):
                        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                        self._open_mode = fcntl.LOCK_SH
                named = ", ".join(_describe_process(pid) for pid in others) or "another process"
                them, they = ("them", "they") if len(others) > 1 else ("it", "it")
                raise DatabaseInUseError(
                    f"{self.database} is open in {named}: stop {them} before {what} ({they} would go on writing "
                    "to the replaced file, and what was acknowledged after that would be lost)") from None
            self._open_mode = fcntl.LOCK_EX
        try:
            yield
        finally:
            with self._lease_lock:
                if self._lease_users:
                    fcntl.flock(fd, fcntl.LOCK_SH)  # only another restore could hold it in between
                    self._open_mode = fcntl.LOCK_SH
                else:
                    fcntl.flock(fd, fcntl.LOCK_UN)
                    self._open_mode = 0

    def _open_file(self) -> int | None:
        """The open lease's descriptor, once per gate (a forked child opens its own: :meth:`_after_fork`)."""
        if self._open_fd is None:
            try:
                self._open_fd = os.open(self.open_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError as exc:
                log.warning("no open lease for this database: a restore cannot see this process",
                            extra={"path": str(self.open_path), "error": str(exc)})
                return None
        return self._open_fd

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
        if self._open_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._open_fd)

    def _after_fork(self) -> None:
        # A thread of the parent may have held the lock at fork: the child starts with a free one, and
        # closes its copy of the parent's descriptor (the parent's flock lives on through its own copy).
        self._threads = threading.RLock()
        self._depth = 0
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
        self._fd = None
        # The open lease too: on the parent's open file description, the child's release (closing the Store it
        # inherited) would unlock the parent's lease, and the parent's the child's. The child takes its own.
        self._lease_lock = threading.Lock()
        leased, self._open_mode = self._open_mode == fcntl.LOCK_SH, 0
        if self._open_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._open_fd)
            self._open_fd = None
            if leased and (fd := self._open_file()) is not None:
                with contextlib.suppress(BlockingIOError):
                    fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                    self._open_mode = fcntl.LOCK_SH


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
    """The pid holding a ``flock`` on ``path`` (the first, for a shared lock), from Linux's ``/proc/locks``
    (None elsewhere, or when no process holds it): read only to name the culprit in a timeout's error, never
    on the write path."""
    return next(iter(lock_holders(path)), None)


def lock_holders(path: Path) -> list[int]:
    """Every pid holding a ``flock`` on ``path`` (``/proc/locks`` names the process that took the lock, not
    a forked child sharing it); empty elsewhere than Linux."""
    try:
        st = os.stat(path)
        with open("/proc/locks", encoding="ascii", errors="replace") as locks:
            lines = locks.read().splitlines()
    except OSError:
        return []
    inode = f":{st.st_ino}"
    pids = []
    for line in lines:
        fields = line.split()
        # "1: FLOCK  ADVISORY  WRITE 4242 fd:01:1234 0 EOF"; a waiter's line has "->" after the number
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5].endswith(inode) and fields[4].isdigit():
            device = fields[5].rsplit(":", 1)[0].split(":")
            if len(device) == 2 and os.makedev(int(device[0], 16), int(device[1], 16)) == st.st_dev:
                pids.append(int(fields[4]))
    return sorted(set(pids))


def _describe_process(pid: int) -> str:
    """``process 4242 (notify serve --port 8080)``: the command line, for an operator to find it."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            argv = [part.decode(errors="replace") for part in cmdline.read().split(b"\0") if part]
    except OSError:
        return f"process {pid}"
    if argv and os.path.basename(argv[0]).startswith("python") and len(argv) > 1:
        argv = argv[1:]
    if argv:
        argv[0] = os.path.basename(argv[0])
    command = " ".join(argv)
    return f"process {pid} ({command[:80]})" if command else f"process {pid}"


def _reset_after_fork() -> None:
    global _gates_lock
    _gates_lock = threading.Lock()
    for gate in list(_gates.values()):
        gate._after_fork()


os.register_at_fork(after_in_child=_reset_after_fork)


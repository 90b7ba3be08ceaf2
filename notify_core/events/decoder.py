"""The event consumer's decoding process: decode + row building + row encoding beside the writer.

Why a process and not a thread: decoding a batch (orjson, the shape checks, a dict per row) and encoding
its rows for SQLite are pure Python, ~6 us an event, and a thread doing them holds the same GIL the
polling loop and the writer's Python need: on two cores the consumer ran at ~94k events/s where raw
SQLite on the same rows takes ~200k. A second process has its own GIL, so that work runs on the other
core while this process polls, hands over and writes. What crosses the boundary is cheap on purpose:
the polled records in (tuples of bytes), and out a :class:`~notify_core.events.consumer.PreparedBatch`
whose rows are already the Store adapter's ready-made statement payloads (bytes; see
``SqliteTable.put_encoded``), not a pickled dict per row.

What the process never does: touch the Store or the stream. The consuming process keeps the single
SQLite connection, the poll, the writes and the commits, in the same order as without it, so the
commit-after-write rule (and every crash guarantee that follows from it) is untouched: the process
only turns bytes into bytes. If it dies (``kill -9``, out of memory) the consumer notices on the
batch's future, starts a fresh one and decodes that batch itself meanwhile: a batch is never skipped.
If the consumer dies, the process notices its parent is gone within ``notify_core.orphans.ORPHAN_CHECK_S`` and exits.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import pickle
import signal
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, TypeVar

from notify_core import handover
from notify_core.handover import HandoverDir
from notify_core.orphans import exit_when_orphaned

log = logging.getLogger(__name__)

_T = TypeVar("_T")


def _init_worker(parent_pid: int) -> None:
    """In the decoding process, once: Ctrl-C is the consumer's to handle (it finishes and commits the
    batch in hand, which needs this process's results), an orphan exits, imports and GC tuning up front."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    exit_when_orphaned(parent_pid, code=0)  # the consumer died (kill -9): nothing will ever read our results
    from notify_core.gc_tuning import tune_gc_for_throughput

    tune_gc_for_throughput()


def _ready() -> int:
    return os.getpid()


_DIR_PREFIX = "notify-dec-"  # + the consumer's pid: a killed consumer's folder goes with the next one's start


def _run_shared(request: str, result: str) -> str:
    """In the worker: the call from its file (the consumer owns and removes it), its result into the file
    ``result`` the consumer takes (a worker killed before returning leaves that file behind: the consumer
    clears its folder when it replaces or closes the worker)."""
    fn, args = pickle.loads(handover.read(Path(request)))
    handover.write_private(Path(result), pickle.dumps(fn(*args), protocol=pickle.HIGHEST_PROTOCOL))
    return result


class DecodeProcess:
    """One spawned worker process running module-level functions on picklable arguments, in order.

    ``spawn``, not ``fork``: the consumer has threads (the writer, the landing pusher, metrics) and a
    fork copies their locks in whatever state they are in.
    """

    GIVE_UP_AFTER = 3  # failures in a row with no batch decoded between them

    def __init__(self) -> None:
        self._pool: ProcessPoolExecutor | None = None
        self._started: Future[int] | None = None
        self.restarts = 0
        self._failures_in_a_row = 0
        self._dir: HandoverDir | None = None  # its calls and its worker's results, created with the first call

    @property
    def usable(self) -> bool:
        """False once the process failed :attr:`GIVE_UP_AFTER` times in a row: it cannot run here (e.g.
        a main script without the ``if __name__ == "__main__"`` guard that ``spawn`` needs); the
        consumer then decodes in its own process, as it would without one."""
        return self._failures_in_a_row < self.GIVE_UP_AFTER

    def succeeded(self) -> None:
        self._failures_in_a_row = 0

    def start(self) -> None:
        """Start the process now (it imports the decoder, ~1 s) rather than on the first batch."""
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker, initargs=(os.getpid(),),
            )
            self._started = self._pool.submit(_ready)

    @property
    def pid(self) -> int | None:
        """The worker's process id once it is up (for tests and logs); None before, or once it is lost.
        Only reads: safe from another thread."""
        started = self._started
        if started is None or not started.done() or started.cancelled() or started.exception() is not None:
            return None
        return started.result()

    def submit(self, fn: Callable[..., _T], *args: Any) -> Future[_T]:
        """Run ``fn(*args)`` in the process; a broken process is replaced once before giving up.

        The call and its result travel as files in shared memory (:mod:`notify_core.handover`), and only
        their names through the pool's pipes (:func:`_run_shared`), so a pipe message is never big enough
        to be half-written: a worker killed (``kill -9``) between the two writes multiprocessing makes of
        a message over 16 KB left the pool's reader waiting for the rest forever, and the consumer with it
        (seen in the kill -9 test under load). A message of a few dozen bytes is one ``write`` of a pipe's
        atomic size.
        """
        if self._dir is None:
            self._dir = HandoverDir(prefix=_DIR_PREFIX)
        name = uuid.uuid4().hex
        request, result = self._dir.path / f"{name}.call", self._dir.path / f"{name}.result"
        call = pickle.dumps((fn, args), protocol=pickle.HIGHEST_PROTOCOL)
        out: Future[_T] = Future()
        for attempt in (1, 2):
            self.start()
            assert self._pool is not None
            handover.write_private(request, call)
            try:
                inner = self._pool.submit(_run_shared, str(request), str(result))
                break
            except (BrokenProcessPool, RuntimeError):
                request.unlink(missing_ok=True)  # (the restart clears the folder too)
                if attempt == 2:
                    raise
                self.restart()

        def done(finished: Future[str]) -> None:  # on the pool's thread; ``out`` always ends
            try:
                request.unlink(missing_ok=True)
                if finished.cancelled():
                    result.unlink(missing_ok=True)
                    out.cancel()
                    return
                error = finished.exception()
                if error is not None:
                    result.unlink(missing_ok=True)  # a worker that died after writing it
                    if not out.cancelled():
                        out.set_exception(error)
                    return
                value = pickle.loads(handover.take(result))  # taken (removed) in any case
                if not out.cancelled():
                    out.set_result(value)
            except BaseException as exc:  # never out of a pool callback: the caller gets it
                if not out.done():
                    out.set_exception(exc)
            finally:
                if not out.done():  # e.g. cancelled after finishing: whoever waits must not wait forever
                    out.set_exception(BrokenProcessPool("the decoding call ended without a result"))

        inner.add_done_callback(done)
        return out

    def restart(self) -> None:
        """Drop a dead (or wedged) process; the next :meth:`submit` starts a fresh one."""
        self.restarts += 1
        self._failures_in_a_row += 1
        if self.usable:
            log.warning("decoding process lost; starting a new one", extra={"restarts": self.restarts})
        else:
            log.error("decoding process keeps failing; decoding in the consumer from now on",
                      extra={"restarts": self.restarts})
        self._shutdown(wait=False)

    def close(self) -> None:
        self._shutdown(wait=True)
        folder, self._dir = self._dir, None
        if folder is not None:
            folder.close()

    def _shutdown(self, *, wait: bool) -> None:
        pool, self._pool = self._pool, None
        self._started = None
        if pool is not None:
            pool.shutdown(wait=wait, cancel_futures=True)
            # Files a dead worker wrote and never handed over. A call still in flight whose file goes
            # here fails, and the consumer decodes that batch itself: never a skipped batch.
            if self._dir is not None:
                self._dir.clear()

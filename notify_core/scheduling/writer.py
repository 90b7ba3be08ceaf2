"""The plan writer process: a chunk's Store writes on the other core while the next chunk is planned.

Why a process and not the writer thread it replaces: ``write_plans`` is mostly SQLite's insert, which
releases the GIL around each row's ``sqlite3_step`` but must take it back to bind the next row; beside
a planning thread running Python (ANN bookkeeping, state decoding, the planner) each take-back waits for
the GIL. In the quiet 10M run the writer thread was busy 576 s for ~300 s of its own CPU. A process has
its own GIL and its own SQLite connection, so the insert runs on one core while candidates + planning
run on the other.

What crosses the boundary is cheap: the chunk's plan-items frame as an Arrow IPC file in shared memory
(``/dev/shm``, 0600 in a 0700 folder; the process reads it and unlinks it: 0.14 CPU-s for 300k rows
where pickling them through the pipe cost 0.44 plus the pipe's copies), the planned user ids, and the
few users that already had items stored for the day. The
process runs exactly :func:`~notify_core.scheduling.store.write_plans`, so the Store state, its order
(plans before schedules) and its idempotence are the thread's. What it must never do:

* drop a write silently: an error in the process is raised by the run (the future carries it), and a
  dead process (``kill -9``, out of memory) raises :class:`PlanWriterLost` instead of hanging;
* outlive the run: it dies with its parent (``PR_SET_PDEATHSIG`` on Linux, and a parent-pid watch
  elsewhere), so a killed run leaves no orphan writing beside the re-run. A killed writer's open
  transaction is rolled back by SQLite (WAL), so each chunk's table write is whole or absent, as before.

The process's Store clock stands at the parent's ``clock.now()`` of each hand-over (a clock object with
a lock does not pickle, and a ManualClock of a test must read the same in both processes); it only
judges TTL expiry of the few items re-read for repairs, whose TTLs are days away.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

import polars as pl

from notify_core.clock import Clock, ManualClock
from notify_core.errors import BackendError
from notify_core.handover import HandoverDir, create_private
from notify_core.malloc_tuning import keep_freed_memory
from notify_core.orphans import exit_when_orphaned, set_parent_death_signal
from notify_core.scheduling.store import WriteSummary, write_plans
from notify_core.store.port import Item, Store

log = logging.getLogger(__name__)

# Opens the same Store in another process, given the clock to use there (SqliteStore.reopener()).
StoreOpener = Callable[..., Store]


class PlanWriterLost(BackendError):
    """The plan writer process died mid-run (killed, out of memory): the run fails; a re-run repairs
    whatever chunk it was writing (write_plans is idempotent)."""


@dataclass(frozen=True, slots=True)
class WriteResult:
    """One chunk's write as the process did it: the summary, its wall and CPU seconds, its peak RSS."""

    summary: WriteSummary
    wall_s: float
    cpu_s: float
    peak_rss_mb: float


_STORE: Store | None = None
_CLOCK: ManualClock | None = None


def _init(parent_pid: int, opener: StoreOpener) -> None:
    """Once, in the process: die with the parent, Ctrl-C is the parent's, open the Store for bulk writes."""
    global _STORE, _CLOCK
    set_parent_death_signal(signal.SIGKILL)
    exit_when_orphaned(parent_pid, code=1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _CLOCK = ManualClock(0.0)
    _STORE = opener(clock=_CLOCK)
    _STORE.tune_for_bulk_writes()
    keep_freed_memory()  # each chunk's transaction fills and empties the same memory
    # write_plans' campaign counters import the delivery package (~1.4 s here): now, beside the first
    # chunk's planning, not on the writer's critical path when the first chunk arrives.
    import notify_core.delivery.feedback  # noqa: F401


def _write(now: float, plan: pl.DataFrame, user_ids: Sequence[str], plan_day: str, shards: int,
           existing: dict[str, list[Item]], items_file: str | None) -> WriteResult:
    import resource

    assert _STORE is not None and _CLOCK is not None
    _CLOCK.set(now)
    started, cpu = time.perf_counter(), time.process_time()
    items = None
    if items_file is not None:
        items = pl.read_ipc(items_file)
        os.unlink(items_file)
    summary = write_plans(_STORE, plan, user_ids=user_ids, plan_day=plan_day, shards=shards, existing=existing,
                          items=items)
    return WriteResult(summary, time.perf_counter() - started, time.process_time() - cpu,
                       resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


_DIR_PREFIX = "notify-plan-writer-"  # + the run's pid: the next run removes a killed run's folder


def _ready() -> int:
    return os.getpid()


class PlanWriterProcess:
    """One spawned process that runs :func:`write_plans` for the chunks handed to it, in order.

    ``spawn``, not ``fork``: the planning process has threads (polars' pool, faiss, metrics) whose locks a
    fork would copy in whatever state they are in. Use as a context manager; :meth:`close` waits for the
    chunk in hand (a run that fails mid-way still leaves that chunk whole or absent, never half)."""

    def __init__(self, opener: StoreOpener, *, clock: Clock) -> None:
        self._clock = clock
        self._dir = HandoverDir(prefix=_DIR_PREFIX)
        self._handed = 0
        self._pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                                         initializer=_init, initargs=(os.getpid(), opener))
        self._ready = self._pool.submit(_ready)  # start it now: imports take ~1 s, beside the first plan

    @property
    def pid(self) -> int:
        """The process id (waits for the start): for tests and logs."""
        pid: int = self._wait(self._ready)
        return pid

    def started(self) -> bool:
        """Whether the process came up (waits for it). False where ``spawn`` cannot run the caller's main
        module again (``python -`` or a script without the ``__main__`` guard): the run then keeps the
        writer thread rather than failing on an optimisation."""
        try:
            self._wait(self._ready)
        except PlanWriterLost:
            log.warning("the plan writer process did not start; writing from a thread")
            return False
        return True

    def submit(self, *, plan: pl.DataFrame, user_ids: list[str], plan_day: str, shards: int,
               existing: dict[str, list[Item]], items: pl.DataFrame | None) -> Future[WriteResult]:
        """Hand one chunk over. ``existing`` is sent only for users that have stored items (on a fresh day
        none), and ``plan`` only when ``items`` was not built (write_plans reads the plan only to build them)."""
        stored = {u: v for u, v in existing.items() if v}
        lean = plan.clear() if items is not None else plan
        path = None
        if items is not None:
            self._handed += 1
            path = self._dir.path / f"chunk-{self._handed}.arrow"
            with create_private(path) as fh:
                items.write_ipc(fh, compression="uncompressed")
        try:
            return self._pool.submit(_write, self._clock.now(), lean, user_ids, plan_day, shards, stored,
                                     None if path is None else str(path))
        except (BrokenProcessPool, RuntimeError) as exc:
            raise PlanWriterLost(f"the plan writer process is gone: {exc}") from exc

    def result(self, future: Future[WriteResult]) -> WriteResult:
        """The chunk's result; the process's own error as raised there, or :class:`PlanWriterLost`."""
        done: WriteResult = self._wait(future)
        return done

    @staticmethod
    def _wait(future: Future[Any]) -> Any:
        try:
            return future.result()
        except BrokenProcessPool as exc:
            raise PlanWriterLost("the plan writer process died mid-write (killed or out of memory); "
                                 "a re-run writes what is missing") from exc

    def close(self) -> None:
        try:
            self._pool.shutdown(wait=True, cancel_futures=True)
        finally:
            self._dir.close()  # and a chunk the process never read (it died, or failed)

    def __enter__(self) -> PlanWriterProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def opener_for(store: Store) -> tuple[StoreOpener, Clock] | None:
    """How the writer process opens ``store``, or None when it cannot (no adapter ``reopener``: DynamoDB
    and test doubles keep the writer thread). A :class:`~notify_core.store.sealed.SealedStore` is opened
    as its adapter: write_plans writes only ``plans``, ``schedules`` and ``campaign_stats``, none of them
    sealed (checked here, so a personal field added to them one day falls back to the thread, sealed)."""
    from notify_core.security.crypto import PERSONAL_FIELDS
    from notify_core.store import tables
    from notify_core.store.sealed import SealedStore

    if any(t in PERSONAL_FIELDS for t in (tables.PLANS, tables.SCHEDULES, tables.CAMPAIGN_STATS)):
        return None
    target = store.inner if isinstance(store, SealedStore) else store
    reopener = getattr(type(target), "reopener", None)
    clock = getattr(target, "clock", None)
    return (reopener(target), clock) if callable(reopener) and clock is not None else None

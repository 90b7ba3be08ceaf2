"""Finding and claiming due notifications: minute scans, the retry index, leases, heartbeats, dedupe.

This is steps 1-3 of :mod:`notify_core.delivery.worker`'s docstring; the sending and the recording of
outcomes live in the worker and in :mod:`notify_core.delivery.outcomes`.

**Shares.** Workers that beat on one Store split each minute's items between them: a scan reads the live
heartbeats and keeps in its queue the items that hash (crc32 of the sort key) to its own place among the
live workers' ids. Without it every worker queued every item and raced for it: two ``notify worker``
processes on a 40k burst lost 40,000 claims between them, one per item, each a conditional write for
nothing (on DynamoDB, write capacity paid for every worker). The other workers' items are kept aside and
taken from the latest end once ``steal_after_s`` overdue: one item first, then twice as many each time
those claims all win (that worker is behind, or dead and not yet noticed); a lost one means its owner has
got that far, so everything due before it is left to the owner. Claims stay conditional, so workers that
see different sets of live workers (one starting, one stopping) cost lost claims, never a second send;
and an item left out of every queue is found again by the minute's rescan.

**Catching up.** A worker looks at every minute from the oldest one not yet done, not only at the last
``lookback_minutes``: the oldest minute not done is kept in ``delivery_cursor`` (the *watermark*, written once a
minute as it moves on), so a worker started after an outage, the minute Lambda after EventBridge stopped
calling it, or a worker whose wall clock was stepped forward finds every notification due meanwhile, up to
:data:`CATCH_UP_S` back. Before, minutes older than ``lookback_minutes`` (15) were never looked at: after a
20-minute outage the first 5 minutes' notifications stayed ``pending`` for good, sent by no one, counted
nowhere. What is found more than ``max_late_s`` late is not sent but finished as suppressed ``too_late``
(:meth:`Claims._in_time`), so the outage is visible in the deliveries rows and ``notify_delivery_missed_total``.
The minutes older than the lookback are read :data:`CATCH_UP_SCANS` at a time, oldest first, and until their
turn are only a queue of minute starts (:meth:`Claims.plan_scans`), so a pass costs the same a day behind as
caught up.
"""

from __future__ import annotations

import bisect
import contextlib
import dataclasses
import itertools
import math
import secrets
import threading
import zlib
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from notify_core.clock import Clock, since
from notify_core.delivery.day_cap import DAILY_CAP, UNCAPPED, DayCap
from notify_core.delivery.outcomes import (
    Outcomes,
    _log_fields,
    _send_ts,
    in_time,
    iso,
    log,
    minute_key,
)
from notify_core.delivery.summary import TOO_LATE, Kind, PassSummary, WorkerOptions
from notify_core.errors import DatabaseReplacedError, NotifyError
from notify_core.lifecycle import CLAIMED, DEAD_LETTERED, DUPLICATE, PENDING, RETRY_SCHEDULED, SENT, SUPPRESSED
from notify_core.store import tables
from notify_core.store.port import Condition, Item, KeyRange, Store, Update

DEDUPE_WINDOW_S = 24 * 3600
HEARTBEAT_PK = "worker"  # delivery_cursor partition of the workers' heartbeats (sk = worker id)
WATERMARK_KEY = ("watermark", "minutes")  # delivery_cursor item: the oldest minute not known done
# How far back a worker catches up: the dedupe window, since a claim older than its dedupe record could be sent
# twice (every item that old is past any sensible ``max_late_s`` anyway and is only finished, not sent).
CATCH_UP_S = DEDUPE_WINDOW_S
# Minutes older than the lookback loaded at a time while catching up: a day's backlog (5M items for 1M users) is
# not read into memory at once, and the recent minutes' scans are not queued behind it.
CATCH_UP_SCANS = 2
# How often a pass re-reads the retries index between full scans, at most (see Claims.due_retries).
RETRIES_READ_EVERY_S = 1.0


def catch_up_start(now: float) -> int:
    """The oldest minute a worker still looks at (:data:`CATCH_UP_S` back): its floor's, and its retries'."""
    return math.floor((now - CATCH_UP_S) / 60) * 60


@dataclass(slots=True)
class _Work:
    pk: str
    sk: str
    kind: Kind
    due_at: float
    item: Item  # the schedule item as scanned (new/reclaim) or the retries index entry (retry)
    retry_key: tuple[str, str] | None = None
    stolen: bool = False  # taken from another live worker's share


def _due(work: _Work) -> float:
    return work.due_at


@dataclass(frozen=True, slots=True)
class _Claim:
    """A due item this worker holds: the claimed schedule item, its claim token and attempt number, and the
    number of the day's send token it holds (:mod:`notify_core.delivery.day_cap`)."""

    work: _Work
    item: Item
    token: str
    attempt: int
    day_token: int = UNCAPPED


@dataclass(slots=True)
class _Minute:
    key: str
    start: float
    queue: deque[_Work] = field(default_factory=deque)
    loaded: bool = False
    done: bool = False
    recheck_at: float = 0.0
    scanning: bool = False
    # Other workers' claims the last scan saw running, looked at again by key at ``held_at`` while the queue
    # is still busy (:meth:`Claims._recheck_held`): the full rescan waits for the queue to drain.
    held: set[tuple[str, str]] = field(default_factory=set)
    held_at: float = math.inf
    # The other live workers' share of the last scan's work, in due order (the module's docstring: Shares);
    # none of it is taken before ``steal_at``, and at most ``steal_size`` items a pass.
    others: list[_Work] = field(default_factory=list)
    steal_at: float = 0.0
    steal_size: int = 1


def _watch(minute: _Minute, still: list[Item], at: float, *, looked_at: set[tuple[str, str]]) -> None:
    """After a look at ``minute``'s claims (caller holds the lock): watch those still held by another worker
    from ``at``, and keep the claims lost to another worker while the look was under way (``_recheck_soon``
    adds them; overwriting them would leave them to the minute's rescan)."""
    added = minute.held - looked_at
    minute.held = {(it["pk"], it["sk"]) for it in still} | added
    minute.held_at = min(at, minute.held_at) if added else at


class Claims:
    """The finding-and-claiming side of one worker (thread-safe; scans run on their own thread)."""

    def __init__(
        self, store: Store, *, clock: Clock, options: WorkerOptions, worker_id: str, channel_name: str,
        write_lock: contextlib.AbstractContextManager[Any], outcomes: Outcomes, totals: PassSummary,
    ) -> None:
        self.clock = clock
        self.options = options
        self.worker_id = worker_id
        self.channel_name = channel_name
        self.outcomes = outcomes
        self.totals = totals
        self._write_lock = write_lock
        self._schedules = store.table(tables.SCHEDULES)
        self._dedupe = store.table(tables.DEDUPE)
        self._day_cap = DayCap(self._dedupe, write_lock=write_lock)
        self._retries = store.table(tables.RETRIES)
        self._cursor = store.table(tables.DELIVERY_CURSOR)
        self._maintenance = ThreadPoolExecutor(1, thread_name_prefix="deliver-scan")
        self._lock = threading.Lock()
        # Every minute from the floor to ``_listed_to`` is in one of three places: ``_minutes`` (being looked
        # at), ``_closed`` (done), or ``_unread`` (a backlog minute, older than the lookback, whose turn has
        # not come). The backlog stays bare starts until read: a state object for each minute of a day's
        # backlog made each pass O(minutes held), quadratic over a catch-up (see :meth:`plan_scans`).
        self._minutes: dict[str, _Minute] = {}
        self._closed: set[int] = set()  # starts of done minutes after the floor
        self._unread: deque[int] = deque()  # backlog minutes not yet read, oldest first
        self._listed_to: int | None = None  # the start after the last minute listed (None: list from the floor)
        self._floor: int | None = None  # start of the oldest minute not known done (None: not read yet)
        self._watermark: int | None = None  # the floor last written as the watermark, and when
        self._watermark_written = 0.0
        self._last_now = 0.0  # the clock at the last plan (a step back is seen against it)
        self._scans: list[Future[None]] = []
        self.wake = threading.Event()
        self._last_full_retry_scan = ""
        # every retries-index minute before this one was read by a full scan once it had ended (None: none yet)
        self._retries_swept_to: int | None = None
        # the clock when the retries index was last read whole (None: read it at the next pass)
        self._retries_read_at: float | None = None
        self._heartbeat_stop = threading.Event()
        self._heartbeat_thread: threading.Thread | None = None

    def close(self) -> None:
        self.wait_scans()
        self._maintenance.shutdown(wait=True)
        if self._floor is not None:
            with self._lock:
                self._floor = self._advance(self._floor)
            with contextlib.suppress(DatabaseReplacedError):  # a replaced file takes no write; a start looks back
                self._write_watermark(self.clock.now())
        if self._heartbeat_thread is not None:
            self._heartbeat_stop.set()
            self._heartbeat_thread.join()
            self._beat(alive_for=0.0)  # gone: nothing of ours is in flight any more

    # -- liveness ----------------------------------------------------------------------------------
    def start_heartbeat(self) -> None:
        """Say "alive" now and every ``heartbeat_s`` from a thread of its own (a long pass cannot starve it)."""
        if self.options.heartbeat_s <= 0 or self._heartbeat_thread is not None:
            return

        def beat() -> None:
            """A refused beat (the Store's disk full) is tried again at the next: the first one raising ended
            a worker that started on a full disk (exit 75, and its supervisor's restart every 5 s); until one
            is written the others do not count this worker in their shares, and conditional claims keep any
            item from being taken twice."""
            try:
                self._beat(alive_for=self.options.liveness_s)
            except DatabaseReplacedError:
                raise
            except NotifyError as exc:
                log.warning("heartbeat write failed", extra={"worker": self.worker_id, "error": str(exc)})

        beat()

        def loop() -> None:
            while not self._heartbeat_stop.wait(self.options.heartbeat_s):
                with contextlib.suppress(DatabaseReplacedError):  # the next claim says so and stops the worker
                    beat()

        self._heartbeat_thread = threading.Thread(target=loop, name="deliver-heartbeat", daemon=True)
        self._heartbeat_thread.start()

    def _beat(self, *, alive_for: float) -> None:
        now = self.clock.now()
        with self._write_lock:
            self._cursor.batch_put([{"pk": HEARTBEAT_PK, "sk": self.worker_id, "alive_until": now + alive_for,
                                     "ttl": int(now + 86400)}])

    def _share(self, now: float) -> tuple[int, int] | None:
        """This worker's place among the live workers and their number, when it beats and others do too
        (None: every item is its own)."""
        if self._heartbeat_thread is None:
            return None
        rows = self._cursor.query(HEARTBEAT_PK, consistent=True)
        live = sorted({str(r["sk"]) for r in rows if float(r.get("alive_until") or 0) > now} | {self.worker_id})
        return (live.index(self.worker_id), len(live)) if len(live) > 1 else None

    def _dead_workers(self, workers: set[str], now: float) -> set[str]:
        """Workers among ``workers`` whose last heartbeat has run out (no heartbeat at all: not known dead)."""
        if not workers:
            return set()
        rows = self._cursor.batch_get([(HEARTBEAT_PK, w) for w in sorted(workers)], consistent=True)
        return {str(r["sk"]) for r in rows if float(r.get("alive_until") or 0) <= now}

    # -- finding work ------------------------------------------------------------------------------
    def plan_scans(self, now: float, summary: PassSummary) -> None:
        """Keep a state for every minute from the lookback to ``now + prefetch_s``, and for the oldest minutes
        of a backlog as their turn comes, and start the scans that are due: a new minute's, a passed minute's
        once its queue drained, other workers' claims seen running. Done minutes move the floor on; no minute
        after it is skipped, so a clock stepped forward or a loop that stalled leaves no minute unlooked at.

        A backlog (minutes older than the lookback, from the watermark after an outage) is read
        :data:`CATCH_UP_SCANS` minutes at a time, oldest first, and holds no state until its turn: before, each
        of a day's 1,440 minutes had one from the start, and every pass walked them all (listing, counting,
        sorting). A day's catch-up on SQLite, one notification a minute on 16 shards: 4.3 s of CPU before,
        3.6 s with this (medians of 3)."""
        floor = self._floor if self._floor is not None else self._start_floor(now)
        if now < self._last_now - 1.0:
            floor = self._stepped_back(now, floor)
        self._last_now = now
        floor = max(floor, catch_up_start(now))
        last = math.floor((now + self.options.prefetch_s) / 60) * 60
        recent = self._lookback_start(now)
        self._list(floor, last, recent, now)
        if self._unread:
            with self._lock:
                _recent, catching_up, waiting = self._backlog(now)
            if catching_up + waiting < CATCH_UP_SCANS:
                self._take_unread(CATCH_UP_SCANS - catching_up - waiting, now)
        with self._lock:
            floor = self._advance(floor)
            recent, catching_up, _waiting = self._backlog(now)
            for m in self._minutes.values():
                if m.done or m.scanning:
                    continue
                if not m.loaded and m.start < recent:  # a backlog is read a few minutes at a time, oldest first
                    if catching_up >= CATCH_UP_SCANS:
                        continue
                    catching_up += 1
                if not m.loaded or (not m.queue and now >= m.recheck_at):
                    m.scanning = True
                    self._scans.append(self._maintenance.submit(self._scan, m))
                elif m.held and now >= m.held_at:
                    m.scanning = True
                    self._scans.append(self._maintenance.submit(self._recheck_held, m))
        self._floor = floor
        if since(now, self._watermark_written) >= 60:
            self._write_watermark(now)

    def _list(self, floor: int, last: int, recent: int, now: float) -> None:
        """Minutes not listed yet, up to ``last``: those before ``recent`` join the unread backlog, the others
        get a state (done already if the cursor says so)."""
        with self._lock:
            self._drop_unread(floor)
            begin = floor if self._listed_to is None else max(floor, self._listed_to)
            if begin > last:
                return
            known = {int(m.start) for m in self._minutes.values()}
            new = [s for s in range(begin, last + 1, 60) if s not in self._closed and s not in known]
            self._unread.extend(s for s in new if s < recent)
            self._listed_to = last + 60
        newer = [s for s in new if s >= recent]
        self._add_minutes(newer, now, self._done_marks(newer))

    def _take_unread(self, count: int, now: float) -> None:
        """Give the next ``count`` unread backlog minutes a state (their scans start this pass). Those the
        cursor marks done on the way (another worker caught them up) are closed without one: their marks are
        read ``count`` first, then twice as many a read while all were done."""
        taken: list[int] = []
        size = count
        while len(taken) < count and self._unread:
            head = list(itertools.islice(self._unread, size))
            done = self._done_marks(head)
            with self._lock:
                for start in head:
                    if len(taken) >= count or not self._unread or self._unread[0] != start:
                        break
                    self._unread.popleft()
                    if minute_key(start) in done:
                        self._closed.add(start)
                    else:
                        taken.append(start)
            size = min(2 * size, 512)
        self._add_minutes(taken, now, set())

    def _add_minutes(self, starts: list[int], now: float, marks: set[str]) -> None:
        """A state for each of ``starts``; ``marks``: the keys of those ``delivery_cursor`` marks done."""
        with self._lock:
            for start in starts:
                key = minute_key(start)  # a mark on a minute not yet passed came from a clock that was ahead
                self._minutes[key] = _Minute(key, float(start), done=key in marks and start + 60 <= now)

    def _done_marks(self, starts: list[int]) -> set[str]:
        """The keys of the minutes among ``starts`` that ``delivery_cursor`` marks done."""
        if not starts:
            return set()
        return {str(i["sk"]) for i in self._cursor.batch_get([("minute", minute_key(s)) for s in starts])}

    def _drop_unread(self, floor: int) -> None:
        """(caller holds the lock) Unread backlog minutes the floor has passed (older than :data:`CATCH_UP_S`:
        a catch-up slower than the clock), said once for all of them."""
        first, dropped = (self._unread[0] if self._unread else 0), 0
        while self._unread and self._unread[0] < floor:
            self._unread.popleft()
            dropped += 1
        if dropped:
            log.error("minutes older than the catch-up window were left unread; not known done", extra={
                "from": minute_key(first), "minutes": dropped, "worker": self.worker_id})

    def _stepped_back(self, now: float, floor: int) -> int:
        """The wall clock went back (an NTP step, a VM restored): the minutes closed while it was ahead are not
        done by this clock (a re-plan may still put notifications in them), so they are looked at again from
        the lookback on; returns the floor."""
        log.warning("the wall clock went back; minutes closed ahead of it are looked at again", extra={
            "by_s": round(self._last_now - now, 3), "worker": self.worker_id})
        with self._lock:
            self._closed = {s for s in self._closed if s + 60 <= now}
            for m in self._minutes.values():
                if m.done and m.start + 60 > now:
                    m.done = m.loaded = False
            self._unread.clear()  # listed again from the floor, as the minutes the floor had passed
            self._listed_to = None
        return min(floor, self._lookback_start(now))

    def _advance(self, floor: int) -> int:
        """(caller holds the lock) Drop the minutes before ``floor`` (past :data:`CATCH_UP_S`), retire the done
        ones, and return the floor moved past every done minute at its head."""
        for key in [k for k, m in self._minutes.items() if m.start < floor]:
            self._give_up(self._minutes.pop(key))
        for key in [k for k, m in self._minutes.items() if m.done and not m.queue and not m.others]:
            self._closed.add(int(self._minutes.pop(key).start))
        while floor in self._closed:  # every minute before the floor is done
            self._closed.discard(floor)
            floor += 60
        return floor

    def _lookback_start(self, now: float) -> int:
        """The start of the oldest minute within ``lookback_minutes``: older ones are a backlog."""
        return math.floor(now / 60 - self.options.lookback_minutes) * 60

    def _backlog(self, now: float) -> tuple[int, int, int]:
        """(caller holds the lock) The start of the lookback, and of the minutes before it with a state: those
        being caught up (scanning, or with work queued) and those waiting for their scan. The unread ones
        (``_unread``) wait too."""
        recent = self._lookback_start(now)
        busy = waiting = 0
        for m in self._minutes.values():
            if m.start >= recent:
                continue
            busy += m.scanning or bool(m.queue)
            waiting += not m.loaded and not m.done and not m.scanning
        return recent, busy, waiting

    def _start_floor(self, now: float) -> int:
        """Where a worker starts looking: the watermark's minute when it is older than the lookback, else the
        lookback (a first start, or a watermark from a fast-forwarded clock ahead of this one)."""
        row = self._cursor.get(*WATERMARK_KEY, consistent=True)
        lookback = self._lookback_start(now)
        mark = int(row["minute"]) if row and isinstance(row.get("minute"), int | float) else lookback
        self._watermark = mark if row else None
        if mark < lookback:
            log.info("catching up from the oldest minute not done", extra={
                "since": minute_key(mark), "minutes": (lookback - mark) // 60 + self.options.lookback_minutes,
                "worker": self.worker_id})
        return min(mark, lookback)

    def _write_watermark(self, now: float) -> None:
        """Once it moved (at most once a minute, and at close). Best-effort: a watermark not written costs the
        next start a longer look back, nothing else."""
        floor = self._floor
        if floor is None or floor == self._watermark:
            return
        try:
            with self._write_lock:
                self._cursor.batch_put([{"pk": WATERMARK_KEY[0], "sk": WATERMARK_KEY[1], "minute": floor,
                                         "at": iso(now), "worker": self.worker_id}])
            self._watermark, self._watermark_written = floor, now
        except DatabaseReplacedError:
            raise
        except NotifyError as exc:
            log.warning("the delivery watermark could not be written", extra={"error": str(exc)})

    def _give_up(self, minute: _Minute) -> None:
        """A minute older than :data:`CATCH_UP_S` still not done (caller holds the lock): said, and left."""
        if not minute.done:
            log.error("a minute older than the catch-up window is still not done; left as it is", extra={
                "minute": minute.key, "queued": len(minute.queue), "worker": self.worker_id})

    @property
    def scanning(self) -> bool:
        """A minute scan is still running: a pass that found nothing may only mean it has not been found yet
        (a worker deciding it is idle must not count that time; a 100k-item minute takes seconds to scan)."""
        with self._lock:
            return any(not f.done() for f in self._scans)

    def wait_scans(self) -> None:
        while True:
            with self._lock:
                pending = [f for f in self._scans if not f.done()]
                self._scans = pending
            if not pending:
                return
            for fut in pending:
                fut.result()

    def _scan(self, minute: _Minute) -> None:
        """Query the minute's shard partitions; queue what needs delivering; close the minute when all done."""
        try:
            with self._lock:
                watched = set(minute.held)
            items = [i for s in range(self.options.shards)
                     for i in self._schedules.query(tables.schedule_pk(minute.key, s), consistent=True)]
            now = self.clock.now()
            work: list[_Work] = []
            open_items = 0
            recheck = math.inf
            finished: list[Item] = []
            held: list[Item] = []  # claimed by another worker, lease still running
            for it in items:
                status = it.get("status")
                if status == PENDING:
                    work.append(_Work(it["pk"], it["sk"], "new", _send_ts(it), it))
                elif status == CLAIMED:
                    lease = float(it.get("lease_until") or 0)
                    if lease <= now:
                        work.append(_Work(it["pk"], it["sk"], "reclaim", _send_ts(it), it))
                    elif it.get("worker") != self.worker_id:
                        held.append(it)
                    else:
                        open_items += 1
                        recheck = min(recheck, lease)
                elif status == RETRY_SCHEDULED:
                    due = float(it.get("next_attempt_at") or 0) + self.options.orphan_grace_s
                    if due <= now:
                        work.append(_Work(it["pk"], it["sk"], "retry", due, it))
                    else:
                        open_items += 1
                        recheck = min(recheck, due)
                elif status in (SENT, DEAD_LETTERED, SUPPRESSED):
                    finished.append(it)
            taken, still_held, held_at = self._take_over(held, now)
            work += taken
            if still_held:  # look again within a heartbeat: that worker may die with them
                open_items += 1
                recheck = min(recheck, held_at)
            passed = now >= minute.start + 60
            repaired = 0
            if passed and finished:
                repaired, settles = self.outcomes.repair(finished, now=now, grace_s=self.options.lease_s,
                                                         dead=lambda workers: self._dead_workers(workers, now))
                if settles is not None:  # outcomes another flush may still write: the minute stays open
                    open_items += 1
                    recheck = min(recheck, settles)
            # By send time; among sends due at once, a killed worker's claims (its sends in flight) first: the
            # 100k kill loop's 100k due at one second put them behind the rest of the minute (~60 s late).
            work.sort(key=lambda w: (w.due_at, w.kind != "reclaim"))
            mark_done = passed and not work and not open_items
            own: list[_Work] = work
            others: list[_Work] = []
            share = self._share(now) if work else None
            if share is not None:
                place, live = share
                own, others = [], []
                for w in work:
                    (own if zlib.crc32(w.sk.encode()) % live == place else others).append(w)
            if mark_done:
                with self._write_lock:
                    self._cursor.batch_put([{"pk": "minute", "sk": minute.key, "closed_at": iso(now),
                                             "items": len(items), "ttl": int(now + 7 * 86400)}])
            with self._lock:
                minute.queue.extend(own)
                minute.others = others
                minute.steal_size = 1
                _watch(minute, still_held, held_at, looked_at=watched)
                minute.loaded = True
                minute.done = mark_done
                # open claims: look again when the first lease expires; a current minute: once it has passed
                # (late additions by a re-plan); a passed one with queued work: as soon as the queue drains.
                minute.recheck_at = recheck if open_items else (now if passed else minute.start + 60)
                self.totals.repaired += repaired
                self.totals.minutes_done += int(mark_done)
        finally:
            minute.scanning = False
            self.wake.set()

    def _take_over(self, held: list[Item], now: float) -> tuple[list[_Work], list[Item], float]:
        """Of other workers' claims: the work of re-claiming those whose lease ran out or whose worker stopped
        beating, the claims still held, and when to look at those again (their lease's end, or within a
        heartbeat)."""
        beating = self.options.heartbeat_s > 0
        dead = self._dead_workers({str(it.get("worker")) for it in held}, now) if beating else set()
        work: list[_Work] = []
        still: list[Item] = []
        at = math.inf
        for it in held:
            lease = float(it.get("lease_until") or 0)
            if lease <= now or str(it.get("worker")) in dead:  # expired, or its worker stopped beating
                work.append(_Work(it["pk"], it["sk"], "reclaim", _send_ts(it), it))
            else:
                still.append(it)
                at = min(at, lease, now + self.options.heartbeat_s) if beating else min(at, lease)
        return work, still, at

    def _recheck_held(self, minute: _Minute) -> None:
        """Look again, by key, at the other workers' claims a scan of this minute saw running, while its queue
        is still busy: a worker killed mid-minute has its claims (its sends in flight and a batch claimed
        ahead) taken over within a heartbeat, not once this worker has drained the minute. In the 100k kill
        loop that drain took ~60 s: those notifications were a minute late, and their resend came from a
        worker started after the killed one's successor."""
        try:
            with self._lock:
                watched = set(minute.held)
            items = self._schedules.batch_get(sorted(watched), consistent=True)
            now = self.clock.now()
            claimed = [it for it in items if it.get("status") == CLAIMED and it.get("worker") != self.worker_id]
            taken, still, at = self._take_over(claimed, now)
            taken.sort(key=lambda w: w.due_at)
            with self._lock:
                minute.queue.extendleft(reversed(taken))  # overdue since their first claim: ahead of the queue
                _watch(minute, still, at, looked_at=watched)
        finally:
            minute.scanning = False
            self.wake.set()

    def take_due(self, now: float, limit: int) -> list[_Work]:
        """This worker's due items, then, up to ``limit``, what it may take of the others' shares."""
        out: list[_Work] = []
        with self._lock:
            for key in sorted(self._minutes):
                queue = self._minutes[key].queue
                while queue and len(out) < limit and queue[0].due_at <= now:
                    out.append(queue.popleft())
                if len(out) >= limit:
                    return out
            cutoff = now - self.options.steal_after_s
            for key in sorted(self._minutes):
                minute = self._minutes[key]
                if not minute.others or now < minute.steal_at:
                    continue
                end = bisect.bisect_right(minute.others, cutoff, key=_due)
                start = max(0, end - min(limit - len(out), minute.steal_size))
                for w in minute.others[start:end]:
                    w.stolen = True
                    out.append(w)
                del minute.others[start:end]
                if len(out) >= limit:
                    break
        return out

    def _stolen(self, results: list[tuple[_Work, bool]], now: float) -> None:
        """What the steals' claims say: all won, take twice as many next time; one lost, its owner got there
        first, so the items due no later are left to it, and the next steal waits ``steal_after_s`` and takes
        one."""
        by_minute: dict[str, list[tuple[_Work, bool]]] = {}
        for w, won in results:
            by_minute.setdefault(w.pk.rsplit("#", 1)[0], []).append((w, won))
        with self._lock:
            for key, outcomes in by_minute.items():
                minute = self._minutes.get(key)
                if minute is None:
                    continue
                lost = [w.due_at for w, won in outcomes if not won]
                minute.steal_size = 1 if lost else min(2 * minute.steal_size, self.options.max_batch)
                if lost:
                    del minute.others[:bisect.bisect_right(minute.others, max(lost), key=_due)]
                    minute.steal_at = now + self.options.steal_after_s

    def due_retries(self, now: float, limit: int) -> list[_Work]:
        """Retry index entries due by ``now``: a bounded sort-key range per shard partition.

        The index is partitioned by the minute a retry is due (:func:`~notify_core.delivery.outcomes.retry_entry`).
        Every pass looks at the last 3 minutes; once per minute, back over the lookback and to where the last
        complete full scan reached. This worker's first full scan goes back to the floor (the oldest minute not
        done): a retry due while no worker ran (a redrive of dead letters just before an outage, whose item's own
        minute is done and never scanned again) is still found. Why not back to the floor every minute, as
        before: while a worker caught up on a backlog the floor stayed up to a day behind, so each minute cost
        16 queries (one a shard) for every minute of the backlog, 23,000 after a day's outage (minutes of
        DynamoDB calls a pass), for minutes already read after they ended, where nothing new is written: a
        retry is due at or after the time it is written (the lookback covers writers' clocks a little behind).

        Between full scans a pass reads the index only when :data:`RETRIES_READ_EVERY_S` passed since the last
        read, or a retry this worker wrote fell due since, or the last read was cut by ``limit`` or a claim of
        it was refused (:meth:`_put_back`): passes back to back (a catch-up reads its backlog two minutes a
        pass; a Lambda invocation loops while it sends) read it once, not each time. Another worker's retry,
        or a redrive's, is found at most that much later."""
        if limit <= 0:
            return []
        current = minute_key(now)
        span = 3
        base = math.floor(now / 60) * 60
        full = current != self._last_full_retry_scan
        if not full and not self._retries_to_read(now):
            return []
        self._retries_read_at = now
        if full:
            swept = self._retries_swept_to
            since = swept if swept is not None else self._floor if self._floor is not None else now
            since = max(since, catch_up_start(now))  # a day back at most, as the floor
            span = max(self.options.lookback_minutes, math.ceil((now - since) / 60)) + 1
            self._last_full_retry_scan = current
        end = tables.retry_sk(int(now * 1000), "~")
        out: list[_Work] = []
        for back in range(span):
            mkey = minute_key(base - back * 60)
            for shard in range(self.options.shards):
                entries = self._retries.query(tables.schedule_pk(mkey, shard), key_range=KeyRange(end=end),
                                              limit=limit - len(out))
                for e in entries:
                    out.append(_Work(e["schedule_pk"], e["schedule_sk"], "retry", float(e["due_at"]), e,
                                     retry_key=(e["pk"], e["sk"])))
                if len(out) >= limit:
                    self._retries_read_at = None  # more may be due: the next pass reads again
                    return out  # cut short: the next full scan goes back as far again
        if full:
            self._retries_swept_to = base  # every minute before the current one read once it had ended
        return out

    def _retries_to_read(self, now: float) -> bool:
        """Whether a pass at ``now`` reads the retries index (see :meth:`due_retries`)."""
        read_at = self._retries_read_at
        if read_at is None or not 0 <= now - read_at < RETRIES_READ_EVERY_S:  # due again, or the clock went back
            return True
        own = self.outcomes.next_retry(read_at)  # this worker's earliest retry after that read
        return own is not None and own <= now

    def next_due(self, now: float) -> float | None:
        candidates: list[float] = [now + self.options.poll_s]
        retry = self.outcomes.next_retry(now)
        if retry is not None:
            candidates.append(retry)
        with self._lock:
            _recent, busy, waiting = self._backlog(now)
            if (waiting or self._unread) and busy < CATCH_UP_SCANS:  # more backlog to read: next pass scans it
                candidates.append(now)
            for m in self._minutes.values():
                if m.queue:
                    candidates.append(m.queue[0].due_at)
                elif not m.done and m.loaded and now < m.start + 60:
                    candidates.append(m.start + 60)
                if m.others:
                    candidates.append(max(m.others[0].due_at + self.options.steal_after_s, m.steal_at))
            nxt_minute = (math.floor((now + self.options.prefetch_s) / 60) + 1) * 60 - self.options.prefetch_s
        candidates.append(nxt_minute)
        return min(candidates)

    # -- one notification ------------------------------------------------------------------------
    def claim_batch(self, work: list[_Work], summary: PassSummary) -> list[_Claim]:
        """Claim a pass's due items and take their dedupe records in two batched writes.

        Batching is safe here and only here: a crash after a claim but before the send loses nothing
        (the lease expires and the item is re-claimed, never sent twice). Outcomes, written after the
        send, stay one per item, so a crash can repeat at most the sends in flight.
        """
        now = self.clock.now()
        updates: list[Update] = []
        attempts: list[int] = []
        tokens: list[str] = []
        # One random draw for the batch's claim tokens (128 bits each, as uuid4's): a uuid4 per claim was
        # a getrandom call and a UUID object each, ~5 % of the claiming thread.
        random_hex = secrets.token_hex(16 * len(work))
        for k, w in enumerate(work):
            if w.kind == "new":
                condition, attempt = Condition.matches(status=PENDING), 1
            elif w.kind == "reclaim":
                condition = Condition.matches(status=CLAIMED, claim_token=w.item.get("claim_token"))
                attempt = int(w.item.get("attempt") or 1)
            else:
                failed = int(w.item.get("attempt") or 1)
                condition, attempt = Condition.matches(status=RETRY_SCHEDULED, attempt=failed), failed + 1
            token = random_hex[32 * k : 32 * k + 32]
            claim = {"status": CLAIMED, "claim_token": token, "claimed_at": now,
                     "lease_until": now + self.options.lease_s, "attempt": attempt, "worker": self.worker_id}
            updates.append(Update(w.pk, w.sk, claim, condition))
            attempts.append(attempt)
            tokens.append(token)
        try:
            with self._write_lock:
                items = self._schedules.update_many(updates)
                for w in work:
                    if w.retry_key is not None:
                        self._retries.delete(*w.retry_key)
        except DatabaseReplacedError:
            raise  # no later pass reaches the new file: the worker stops, for its supervisor to restart it
        except NotifyError as exc:
            # Nothing was claimed (SQLite) or some were: their leases expire and a later pass re-claims them.
            # A line without the traceback: on a full disk this repeats every pause (run_forever's backoff).
            log.warning("claiming a batch failed; its items stay due", extra={"items": len(work), "error": str(exc)})
            summary.refused_claims += len(work)
            self._put_back(work)
            return []
        summary.lost_claims += sum(1 for i in items if i is None)
        stolen = [(w, i is not None) for w, i in zip(work, items, strict=True) if w.stolen]
        if stolen:
            summary.stolen += sum(1 for _, won in stolen if won)
            self._stolen(stolen, now)
        self._recheck_soon([(w.pk, w.sk) for w, i in zip(work, items, strict=True) if i is None], now)
        claimed = [_Claim(w, i, t, a) for w, i, t, a in zip(work, items, tokens, attempts, strict=True)
                   if i is not None]
        try:
            return self._within_day_cap(self._in_time(self._drop_duplicates(claimed, now, summary), now, summary),
                                        now, summary)
        except DatabaseReplacedError:
            raise
        except NotifyError as exc:
            # Claimed, but the dedupe records could not be written (the Store's disk full): unsent, since a
            # send without its record could be sent twice; the leases expire and a later pass re-claims them.
            log.warning("recording the claims' dedupe failed; they stay claimed until their lease ends",
                        extra={"items": len(claimed), "error": str(exc)})
            summary.refused_claims += len(claimed)
            return []

    def _put_back(self, work: list[_Work]) -> None:
        """Work whose claim the Store refused (its disk full), back at the head of its minute's queue (or in
        the others' share it was stolen from), to be claimed again after the worker's pause. Before, it had
        left the queue for good: one refused claim, then nothing until the minute's rescan. Retries stay in
        their index, which the next pass reads again."""
        if any(w.kind == "retry" for w in work):
            self._retries_read_at = None
        with self._lock:
            for w in reversed(work):  # appendleft in reverse: each minute's order kept
                minute = self._minutes.get(w.pk.rsplit("#", 1)[0])
                if w.kind == "retry" or minute is None or minute.done:
                    continue
                if w.stolen:
                    w.stolen = False
                    bisect.insort(minute.others, w, key=_due)
                else:
                    minute.queue.appendleft(w)

    def _recheck_soon(self, lost: list[tuple[str, str]], now: float) -> None:
        """Items another worker claimed first: look at them again within a heartbeat, to take over its claims
        if it dies (a scan that saw them all pending would otherwise wait for the minute's end), by key while
        their minute's queue is busy and with the minute's rescan once it has drained."""
        if not lost or self.options.heartbeat_s <= 0:
            return
        at = now + self.options.heartbeat_s
        with self._lock:
            for pk, sk in lost:
                minute = self._minutes.get(pk.rsplit("#", 1)[0])
                if minute is not None and not minute.done:
                    minute.recheck_at = min(minute.recheck_at, at)
                    minute.held.add((pk, sk))
                    minute.held_at = min(minute.held_at, at)

    def _drop_duplicates(self, claimed: list[_Claim], now: float, summary: PassSummary) -> list[_Claim]:
        """Take the 24-hour dedupe record of every claimed notification in one batched write; a second
        schedule item with the same notification id within 24 h is finished as ``duplicate``, unsent."""
        records = []
        for c in claimed:
            item = c.item
            records.append(Update(str(item["notification_id"]), tables.DEDUPE_SK, {
                "schedule_pk": item["pk"], "schedule_sk": item["sk"], "user_id": item["user_id"],
                "campaign_id": item["campaign_id"], "send_at": item.get("send_at"), "plan_day": item.get("plan_day"),
                "claimed_at": now, "ttl": int(now + DEDUPE_WINDOW_S)}, Condition.absent()))
        with self._write_lock:
            taken = self._dedupe.update_many(records)
        keep: list[_Claim] = []
        for c, record in zip(claimed, taken, strict=True):
            if record is not None or self._owns_dedupe(c.item):
                keep.append(c)
                continue
            self.outcomes.finish(c.item, c.token, {"status": DUPLICATE, "outcome_at": iso(now)})
            log.info("delivery suppressed: duplicate within 24 h", extra=_log_fields(c.item, c.attempt, "duplicate"))
            self.outcomes.count("duplicate")
            summary.count("duplicate", None, c.work.kind == "reclaim")
        return keep

    def _in_time(self, claimed: list[_Claim], now: float, summary: PassSummary) -> list[_Claim]:
        """The claims found no more than ``max_late_s`` after their send time; the others (a worker down for
        hours, a clock stepped forward: the window the plan chose has passed, and a day's backlog sent at once
        is what a restart must not do) are finished ``suppressed``, reason ``too_late``, unsent, before they
        take a day's send token: a notification never attempted leaves the user's cap to the rest of the day."""
        keep: list[_Claim] = []
        for c in claimed:
            if in_time(c.item, now=now, max_late_s=self.options.max_late_s):
                keep.append(c)
                continue
            summary.count(*self.outcomes.suppress(c.item, c.token, c.attempt, TOO_LATE, now,
                                                  reclaimed=c.work.kind == "reclaim", request_id=None))
        return keep

    def _within_day_cap(self, claimed: list[_Claim], now: float, summary: PassSummary) -> list[_Claim]:
        """The claims that hold one of their day's send tokens (:mod:`notify_core.delivery.day_cap`); the
        others are finished ``suppressed`` (reason ``daily_cap``), unsent."""
        held = self._day_cap.take([c.item for c in claimed], now=now)
        keep: list[_Claim] = []
        for c, day_token in zip(claimed, held, strict=True):
            if day_token is not None:
                keep.append(dataclasses.replace(c, day_token=day_token))
                continue
            summary.count(*self.outcomes.suppress(c.item, c.token, c.attempt, DAILY_CAP, now,
                                                  reclaimed=c.work.kind == "reclaim", request_id=None))
        return keep

    def _owns_dedupe(self, item: Item) -> bool:
        """The record exists: ours (re-claimed after a crash) or expired-and-gone, else another item's."""
        current = self._dedupe.get(str(item["notification_id"]), tables.DEDUPE_SK, consistent=True)
        owner = None if current is None else (current.get("schedule_pk"), current.get("schedule_sk"))
        return owner is None or owner == (item["pk"], item["sk"])

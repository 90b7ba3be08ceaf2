"""The delivery worker: due notifications -> claim -> render -> channel -> outcome, at least once.

How one notification goes through (the schedule item in ``schedules`` is the source of truth):

1. **Find.** The worker keeps a small in-memory state per due minute ``M`` in ``[now - lookback, now +
   prefetch]``. A minute is *scanned* (one query per shard partition ``"M#00".."M#15"``) in a background
   thread when it comes within ``prefetch_s`` of starting, so a 100k-item minute is in memory, sorted
   by ``send_at``, before its first item is due; each pass hands the items whose ``send_at <= now`` to the
   sending threads. A passed minute is scanned again once its queue is empty ("close"): late additions
   and expired leases are picked up there; when every item is terminal the minute is marked done in
   ``delivery_cursor`` and a restarted worker skips it.
2. **Claim.** ``schedules`` update ``status: pending -> claimed`` with ``Condition.matches(status="pending")``
   and a lease (``claim_token``, ``lease_until = now + lease_s``). Of two workers, exactly one wins.
   A claim whose lease expired (the worker died between claim and outcome) is re-claimed with
   ``Condition.matches(status="claimed", claim_token=<old>)``: that is the at-least-once path, and the only
   source of duplicates; the channel's ``Idempotency-Key`` (the notification id) lets receivers drop them.
   A worker that loops (``run_forever``) also writes a heartbeat every ``heartbeat_s`` (``delivery_cursor``
   pk ``"worker"``, sk its id, ``alive_until``); a claim whose worker's heartbeat is older than
   ``liveness_s`` is re-claimed at once, lease or not, so a ``kill -9`` costs seconds, not the lease. A
   worker that lost claims to another one re-scans that minute every ``heartbeat_s`` until it is done.
3. **Dedupe.** ``dedupe`` put with ``Condition.absent()``, key = notification id, TTL 24 h, naming the
   schedule item that owns it. A second schedule item with the same id within 24 h (a re-plan that
   re-created it) is marked ``duplicate`` and not sent; the owner re-claiming after a crash passes.
4. **Send** through the channel with the notification id as Idempotency-Key; render from the campaign's
   template and the user's profile (campaigns cached per worker).
5. **Outcome,** written at once with ``Condition.matches(claim_token=<ours>)``: ``sent`` (delivered_at,
   latency from send_at); or ``retry_scheduled`` at +1 s, +5 s, +20 s after the failed attempt (an index
   entry in ``retries``, pk due minute#shard, sk due epoch-ms, written *before* the status so a crash
   never strands a retry; a retry is claimed with ``matches(status="retry_scheduled", attempt=n)``); or
   ``dead_lettered`` after the 4th failed attempt or any permanent failure. Derived rows (``deliveries``
   per attempt, ``sends`` for the recommender's cooldowns, the ``plans`` item's ``sent`` status for the
   planner's history and fatigue, ``dead_letters``, campaign ``sent`` counts) are written in batches at the
   end of each pass; a crash can lose one pass of them, and closing the minute re-creates missing ones
   from the schedule items. Every attempt is also one JSON log line and Prometheus samples.
"""

from __future__ import annotations

import contextlib
import heapq
import logging
import math
import os
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from prometheus_client import Counter, Histogram

from notify_core.clock import Clock, utcnow
from notify_core.delivery.channels import Channel, Outcome, SendResult
from notify_core.delivery.render import render
from notify_core.delivery.tracking import TRACKING_PURPOSE, TrackingLinks
from notify_core.errors import NotifyError
from notify_core.observability import current_request_id
from notify_core.security.keyring import KeyRing, ephemeral_keyring, load_keyring
from notify_core.slo import LOG_RETENTION_DAYS
from notify_core.store import tables
from notify_core.store.port import Condition, Item, KeyRange, Store, Update

if TYPE_CHECKING:
    from notify_core.settings import NotifySettings

log = logging.getLogger(__name__)

PENDING = "pending"
CLAIMED = "claimed"
SENT = "sent"
RETRY_SCHEDULED = "retry_scheduled"
DEAD_LETTERED = "dead_lettered"
DUPLICATE = "duplicate"
CANCELLED = "cancelled"
TERMINAL = frozenset({SENT, DEAD_LETTERED, DUPLICATE, CANCELLED})

RETRY_DELAYS_S: tuple[float, ...] = (1.0, 5.0, 20.0)  # requirement 4.1: 1 s -> 5 s -> 20 s, then dead letter
DEDUPE_WINDOW_S = 24 * 3600
LOG_TTL_S = LOG_RETENTION_DAYS * 24 * 3600  # spec §8's log retention, owned by the SLO table
DEFAULT_SHARDS = 16
HEARTBEAT_PK = "worker"  # delivery_cursor partition of the workers' heartbeats (sk = worker id)
_PLAN_KEYS = ("notification_id", "user_id", "campaign_id", "plan_day", "slot", "send_at", "due_minute", "shard",
              "expected_value", "ttl")

DELIVERIES = Counter("notify_deliveries_total", "Delivery attempts by outcome", ["outcome", "channel"])
LATENESS = Histogram("notify_delivery_lateness_seconds", "Delivered time minus scheduled time",
                     buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0))
SEND_SECONDS = Histogram("notify_delivery_send_seconds", "Channel send time", ["channel"],
                         buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 2.0, 5.0))

Kind = Literal["new", "reclaim", "retry"]
Result = Literal["delivered", "retried", "dead_lettered", "duplicate", "lost_claim"]


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerOptions:
    """Knobs of the delivery loop. Defaults suit one machine; the Lambda uses the same ones."""

    concurrency: int = 16  # sending threads
    lease_s: float = 30.0  # a claim older than this may be re-claimed by another worker
    lookback_minutes: int = 15  # passed minutes still checked for work (a missed run catches up)
    prefetch_s: float = 5.0  # scan a minute this long before it starts
    max_batch: int = 1000  # items handed to the threads per pass (retries interleave with big minutes)
    shards: int = DEFAULT_SHARDS
    poll_s: float = 0.25  # idle poll interval (retries due, other workers' expired leases)
    retry_delays_s: tuple[float, ...] = RETRY_DELAYS_S
    orphan_grace_s: float = 60.0  # a retry_scheduled item this overdue without an index entry is retried
    worker_id: str | None = None
    heartbeat_s: float = 1.0  # how often a looping worker says it is alive (0: never; claims then wait the lease)
    liveness_s: float = 4.0  # a heartbeat older than this: the worker is dead and its claims are re-claimed now

    @property
    def max_attempts(self) -> int:
        return 1 + len(self.retry_delays_s)


@dataclass(slots=True)
class PassSummary:
    claimed: int = 0
    delivered: int = 0
    retried: int = 0
    dead_lettered: int = 0
    duplicates: int = 0  # suppressed by the 24 h dedupe window
    lost_claims: int = 0  # another worker had it first
    reclaimed: int = 0  # expired leases taken over
    minutes_done: int = 0
    repaired: int = 0  # derived rows re-created at minute close
    lateness: list[float] = field(default_factory=list)
    next_due_at: float | None = None

    def add(self, other: PassSummary) -> None:
        for name in ("claimed", "delivered", "retried", "dead_lettered", "duplicates", "lost_claims", "reclaimed",
                     "minutes_done", "repaired"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.lateness.extend(other.lateness)

    @property
    def attempts(self) -> int:
        return self.delivered + self.retried + self.dead_lettered

    def as_dict(self) -> dict[str, Any]:
        lat = sorted(self.lateness)
        return {
            "claimed": self.claimed, "delivered": self.delivered, "retried": self.retried,
            "dead_lettered": self.dead_lettered, "duplicates": self.duplicates, "lost_claims": self.lost_claims,
            "reclaimed": self.reclaimed, "minutes_done": self.minutes_done, "repaired": self.repaired,
            "lateness_p50_s": percentile(lat, 50), "lateness_p99_s": percentile(lat, 99),
            "lateness_max_s": lat[-1] if lat else None,
        }


def percentile(sorted_values: list[float], q: float) -> float | None:
    """Nearest-rank percentile of an already sorted list (None when empty)."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


@dataclass(slots=True)
class _Work:
    pk: str
    sk: str
    kind: Kind
    due_at: float
    item: Item  # the schedule item as scanned (new/reclaim) or the retries index entry (retry)
    retry_key: tuple[str, str] | None = None


@dataclass(frozen=True, slots=True)
class _Claim:
    """A due item this worker holds: the claimed schedule item, its claim token and attempt number."""

    work: _Work
    item: Item
    token: str
    attempt: int


@dataclass(slots=True)
class _Minute:
    key: str
    start: float
    queue: deque[_Work] = field(default_factory=deque)
    loaded: bool = False
    done: bool = False
    recheck_at: float = 0.0
    scanning: bool = False


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_ts(value: Any) -> float:
    """ISO (``Z`` or offset) -> epoch seconds."""
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()


def minute_key(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M")


@dataclass(eq=False)
class _Finish:
    """One sender's outcome waiting to be group-committed (see ``DeliveryWorker._finish``)."""

    update: Update
    done: threading.Event = field(default_factory=threading.Event)
    lost: bool = False
    error: NotifyError | None = None


class DeliveryWorker:
    """Delivers due notifications from a Store through a Channel (see the module docstring).

    ``run_pass`` is one bounded step (the Lambda calls it until the due work is done); ``run_forever``
    loops it, sleeping until the next due time (at most ``poll_s``). Threads: ``concurrency`` senders and
    one maintenance thread for minute scans.
    """

    def __init__(
        self, store: Store, channel: Channel, *, public_base_url: str, clock: Clock,
        options: WorkerOptions | None = None,
        on_campaign_counts: Callable[[Store, Mapping[tuple[str, str], int]], None] | None = None,
        tracking_keys: KeyRing | None = None,
    ) -> None:
        self.store = store
        self.channel = channel
        self.clock: Clock = clock
        self.options = options or WorkerOptions()
        self.public_base_url = public_base_url
        # Links are signed with the data directory's tracking ring (build_worker passes it); without one a
        # throwaway key signs them, and those links will not verify anywhere: fine for tests, not for serving.
        self.links = TrackingLinks(public_base_url, tracking_keys or ephemeral_keyring(
            TRACKING_PURPOSE, now=utcnow(self.clock)))
        self.worker_id = self.options.worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self._schedules = store.table(tables.SCHEDULES)
        self._dedupe = store.table(tables.DEDUPE)
        self._retries = store.table(tables.RETRIES)
        self._cursor = store.table(tables.DELIVERY_CURSOR)
        self._deliveries = store.table(tables.DELIVERIES)
        self._users = store.table(tables.USERS)
        self._campaigns = store.table(tables.CAMPAIGNS)
        # SQLite serialises writers anyway; queueing them on a lock here keeps 16 threads out of
        # SQLite's busy handler, which sleeps 1-100 ms per collision and wrecked throughput.
        self._write_lock: contextlib.AbstractContextManager[Any] = (
            threading.Lock() if store.single_writer else contextlib.nullcontext())
        self._pool = ThreadPoolExecutor(self.options.concurrency, thread_name_prefix="deliver")
        self._maintenance = ThreadPoolExecutor(1, thread_name_prefix="deliver-scan")
        self._lock = threading.Lock()
        self._request_id: str | None = None
        self._minutes: dict[str, _Minute] = {}
        self._scans: list[Future[None]] = []
        self._wake = threading.Event()
        self._campaign_cache: dict[str, tuple[float, Item | None]] = {}
        self._projections: list[tuple[str, Item]] = []
        self._campaign_counts: dict[tuple[str, str], int] = {}
        self._proj_lock = threading.Lock()
        self._finishes: list[_Finish] = []  # outcomes waiting for the next group commit
        self._finish_lock = threading.Lock()
        if on_campaign_counts is None:
            from notify_core.delivery.feedback import add_campaign_counts

            on_campaign_counts = add_campaign_counts
        self._on_counts = on_campaign_counts
        self._last_full_retry_scan = ""
        self._retry_hints: list[float] = []  # due times of retries this worker scheduled (a heap)
        self._heartbeat_stop = threading.Event()
        self._heartbeat_thread: threading.Thread | None = None
        self.totals = PassSummary()

    # ------------------------------------------------------------------------------------------
    def run_pass(self, *, wait_for_scans: bool = True) -> PassSummary:
        """Deliver what is due now (at most ``max_batch`` items); returns counts and the next due time."""
        summary = PassSummary()
        self._request_id = current_request_id()  # the invocation's id (Lambda request, Dagster run), if any
        now = self.clock.now()
        self._plan_scans(now, summary)
        if wait_for_scans:
            self._wait_scans()
        work = self._take_due(now, self.options.max_batch)
        if len(work) < self.options.max_batch:
            work += self._due_retries(now, self.options.max_batch - len(work))
        if work:
            claims = self._claim_batch(work, summary)
            for result, lateness, reclaimed in self._pool.map(self._deliver, claims):
                self._count(summary, result, lateness, reclaimed)
        self.flush()
        summary.next_due_at = self._next_due(self.clock.now())
        self.totals.add(summary)
        return summary

    def run_until_idle(self, *, deadline: float | None = None, linger_until: float | None = None) -> PassSummary:
        """Passes until nothing is due (the Lambda's loop). With ``linger_until`` it also waits (on the clock)
        for work due before that time, e.g. the +1 s and +5 s retries inside one invocation."""
        total = PassSummary()
        while True:
            step = self.run_pass(wait_for_scans=True)
            total.add(step)
            now = self.clock.now()
            if deadline is not None and now >= deadline:
                break
            if step.attempts or step.duplicates or step.lost_claims:
                continue
            nxt = step.next_due_at
            limit = linger_until if linger_until is not None else now
            if deadline is not None:
                limit = min(limit, deadline)
            if nxt is None or nxt > limit:
                break
            self.clock.sleep(max(0.0, min(nxt, limit) - now))
        total.next_due_at = self._next_due(self.clock.now())
        return total

    def run_forever(self, stop: threading.Event, *, on_pass: Callable[[PassSummary], None] | None = None) -> None:
        """The ``notify worker`` loop: a pass whenever something is due, else sleep (<= ``poll_s``)."""
        self.start_heartbeat()
        while not stop.is_set():
            step = self.run_pass(wait_for_scans=False)
            if on_pass is not None:
                on_pass(step)
            if step.attempts or step.duplicates or step.lost_claims:
                continue
            now = self.clock.now()
            nxt = step.next_due_at if step.next_due_at is not None else now + self.options.poll_s
            delay = min(max(0.0, nxt - now), self.options.poll_s)
            if delay > 0:
                self._wake.wait(delay)
                self._wake.clear()

    def close(self) -> None:
        self._wait_scans()
        self.flush()
        self._pool.shutdown(wait=True)
        self._maintenance.shutdown(wait=True)
        if self._heartbeat_thread is not None:
            self._heartbeat_stop.set()
            self._heartbeat_thread.join()
            self._beat(alive_for=0.0)  # gone: nothing of ours is in flight any more

    # -- liveness ----------------------------------------------------------------------------------
    def start_heartbeat(self) -> None:
        """Say "alive" now and every ``heartbeat_s`` from a thread of its own (a long pass cannot starve it)."""
        if self.options.heartbeat_s <= 0 or self._heartbeat_thread is not None:
            return
        self._beat(alive_for=self.options.liveness_s)

        def loop() -> None:
            while not self._heartbeat_stop.wait(self.options.heartbeat_s):
                try:
                    self._beat(alive_for=self.options.liveness_s)
                except NotifyError:
                    log.warning("heartbeat write failed", extra={"worker": self.worker_id})

        self._heartbeat_thread = threading.Thread(target=loop, name="deliver-heartbeat", daemon=True)
        self._heartbeat_thread.start()

    def _beat(self, *, alive_for: float) -> None:
        now = self.clock.now()
        with self._write_lock:
            self._cursor.batch_put([{"pk": HEARTBEAT_PK, "sk": self.worker_id, "alive_until": now + alive_for,
                                     "ttl": int(now + 86400)}])

    def _dead_workers(self, workers: set[str], now: float) -> set[str]:
        """Workers among ``workers`` whose last heartbeat has run out (no heartbeat at all: not known dead)."""
        if not workers:
            return set()
        rows = self._cursor.batch_get([(HEARTBEAT_PK, w) for w in sorted(workers)], consistent=True)
        return {str(r["sk"]) for r in rows if float(r.get("alive_until") or 0) <= now}

    # -- finding work ------------------------------------------------------------------------------
    def _plan_scans(self, now: float, summary: PassSummary) -> None:
        first = math.floor(now / 60 - self.options.lookback_minutes) * 60
        last = math.floor((now + self.options.prefetch_s) / 60) * 60
        starts = list(range(int(first), int(last) + 1, 60))
        with self._lock:
            new = [s for s in starts if minute_key(s) not in self._minutes]
        if new:
            keys = [minute_key(s) for s in new]
            done = {i["sk"] for i in self._cursor.batch_get([("minute", k) for k in keys])}
            with self._lock:
                for start, key in zip(new, keys, strict=True):
                    self._minutes[key] = _Minute(key, float(start), done=key in done)
        with self._lock:
            for key in [k for k, m in self._minutes.items() if m.start < first and (m.done or not m.queue)]:
                del self._minutes[key]
            for m in self._minutes.values():
                if m.done or m.scanning:
                    continue
                if not m.loaded or (not m.queue and now >= m.recheck_at):
                    m.scanning = True
                    self._scans.append(self._maintenance.submit(self._scan, m))

    def _wait_scans(self) -> None:
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
                        work.append(_Work(it["pk"], it["sk"], "reclaim", lease, it))
                    elif self.options.heartbeat_s > 0 and it.get("worker") != self.worker_id:
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
                elif status in (SENT, DEAD_LETTERED):
                    finished.append(it)
            dead = self._dead_workers({str(it.get("worker")) for it in held}, now)
            for it in held:
                if str(it.get("worker")) in dead:  # its worker stopped beating: take it over now
                    work.append(_Work(it["pk"], it["sk"], "reclaim", now, it))
                else:  # look again within a heartbeat: that worker may die with it
                    open_items += 1
                    recheck = min(recheck, float(it.get("lease_until") or 0), now + self.options.heartbeat_s)
            passed = now >= minute.start + 60
            repaired = self._repair(finished) if passed and finished else 0
            work.sort(key=lambda w: w.due_at)
            mark_done = passed and not work and not open_items
            if mark_done:
                with self._write_lock:
                    self._cursor.batch_put([{"pk": "minute", "sk": minute.key, "closed_at": iso(now),
                                             "items": len(items), "ttl": int(now + 7 * 86400)}])
            with self._lock:
                minute.queue.extend(work)
                minute.loaded = True
                minute.done = mark_done
                # open claims: look again when the first lease expires; a current minute: once it has passed
                # (late additions by a re-plan); a passed one with queued work: as soon as the queue drains.
                minute.recheck_at = recheck if open_items else (now if passed else minute.start + 60)
                self.totals.repaired += repaired
                self.totals.minutes_done += int(mark_done)
        finally:
            minute.scanning = False
            self._wake.set()

    def _take_due(self, now: float, limit: int) -> list[_Work]:
        out: list[_Work] = []
        with self._lock:
            for key in sorted(self._minutes):
                queue = self._minutes[key].queue
                while queue and len(out) < limit and queue[0].due_at <= now:
                    out.append(queue.popleft())
                if len(out) >= limit:
                    break
        return out

    def _due_retries(self, now: float, limit: int) -> list[_Work]:
        """Retry index entries due by ``now``: a bounded sort-key range per shard partition.

        Every pass looks at the last 3 minutes; once per minute, the whole lookback."""
        if limit <= 0:
            return []
        current = minute_key(now)
        span = 3
        if current != self._last_full_retry_scan:
            span = self.options.lookback_minutes + 1
            self._last_full_retry_scan = current
        end = tables.retry_sk(int(now * 1000), "~")
        out: list[_Work] = []
        base = math.floor(now / 60) * 60
        for back in range(span):
            mkey = minute_key(base - back * 60)
            for shard in range(self.options.shards):
                entries = self._retries.query(tables.schedule_pk(mkey, shard), key_range=KeyRange(end=end),
                                              limit=limit - len(out))
                for e in entries:
                    out.append(_Work(e["schedule_pk"], e["schedule_sk"], "retry", float(e["due_at"]), e,
                                     retry_key=(e["pk"], e["sk"])))
                if len(out) >= limit:
                    return out
        return out

    def _next_due(self, now: float) -> float | None:
        candidates: list[float] = [now + self.options.poll_s]
        with self._lock:
            while self._retry_hints and self._retry_hints[0] <= now:  # due ones were taken by this pass
                heapq.heappop(self._retry_hints)
            if self._retry_hints:
                candidates.append(self._retry_hints[0])
            for m in self._minutes.values():
                if m.queue:
                    candidates.append(m.queue[0].due_at)
                elif not m.done and m.loaded and now < m.start + 60:
                    candidates.append(m.start + 60)
            nxt_minute = (math.floor((now + self.options.prefetch_s) / 60) + 1) * 60 - self.options.prefetch_s
        candidates.append(nxt_minute)
        return min(candidates)

    # -- one notification ------------------------------------------------------------------------
    def _claim_batch(self, work: list[_Work], summary: PassSummary) -> list[_Claim]:
        """Claim a pass's due items and take their dedupe records in two batched writes.

        Batching is safe here and only here: a crash after a claim but before the send loses nothing
        (the lease expires and the item is re-claimed, never sent twice). Outcomes, written after the
        send, stay one per item, so a crash can repeat at most the sends in flight.
        """
        now = self.clock.now()
        updates: list[Update] = []
        attempts: list[int] = []
        tokens: list[str] = []
        for w in work:
            if w.kind == "new":
                condition, attempt = Condition.matches(status=PENDING), 1
            elif w.kind == "reclaim":
                condition = Condition.matches(status=CLAIMED, claim_token=w.item.get("claim_token"))
                attempt = int(w.item.get("attempt") or 1)
            else:
                failed = int(w.item.get("attempt") or 1)
                condition, attempt = Condition.matches(status=RETRY_SCHEDULED, attempt=failed), failed + 1
            token = uuid.uuid4().hex
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
        except NotifyError:
            # Nothing was claimed (SQLite) or some were: their leases expire and a later pass re-claims them.
            log.exception("claiming a batch failed; its items stay due", extra={"items": len(work)})
            summary.lost_claims += len(work)
            return []
        summary.lost_claims += sum(1 for i in items if i is None)
        self._recheck_soon({w.pk.rsplit("#", 1)[0] for w, i in zip(work, items, strict=True) if i is None}, now)
        claimed = [_Claim(w, i, t, a) for w, i, t, a in zip(work, items, tokens, attempts, strict=True)
                   if i is not None]
        return self._drop_duplicates(claimed, now, summary)

    def _recheck_soon(self, minute_keys: set[str], now: float) -> None:
        """Minutes where another worker won claims: re-scan them within a heartbeat, to take over its
        claims if it dies (a scan that saw them all pending would otherwise wait for the minute's end)."""
        if not minute_keys or self.options.heartbeat_s <= 0:
            return
        with self._lock:
            for key in minute_keys:
                minute = self._minutes.get(key)
                if minute is not None and not minute.done:
                    minute.recheck_at = min(minute.recheck_at, now + self.options.heartbeat_s)

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
            self._finish(c.item, c.token, {"status": DUPLICATE, "outcome_at": iso(now)})
            log.info("delivery suppressed: duplicate within 24 h", extra=_log_fields(c.item, c.attempt, "duplicate"))
            DELIVERIES.labels("duplicate", self.channel.name).inc()
            self._count(summary, "duplicate", None, c.work.kind == "reclaim")
        return keep

    def _owns_dedupe(self, item: Item) -> bool:
        """The record exists: ours (re-claimed after a crash) or expired-and-gone, else another item's."""
        current = self._dedupe.get(str(item["notification_id"]), tables.DEDUPE_SK, consistent=True)
        owner = None if current is None else (current.get("schedule_pk"), current.get("schedule_sk"))
        return owner is None or owner == (item["pk"], item["sk"])

    def _deliver(self, claim: _Claim) -> tuple[Result, float | None, bool]:
        try:
            return self._send(claim)
        except NotifyError:
            # A Store failure mid-flight: the claim's lease expires and another pass re-claims it.
            log.exception("delivery step failed; the lease will expire and the item be retried",
                          extra={"schedule_pk": claim.work.pk, "schedule_sk": claim.work.sk})
            return "lost_claim", None, False

    def _send(self, claim: _Claim) -> tuple[Result, float | None, bool]:
        item = claim.item
        message = render(item, campaign=self._campaign(str(item["campaign_id"])), user=self._user(str(item["user_id"])),
                         links=self.links, attempt=claim.attempt)
        started = time.perf_counter()
        try:
            result = self.channel.send(message, idempotency_key=str(item["notification_id"]))
        except Exception as exc:  # a channel bug must not kill the worker: treat as retryable
            result = SendResult(Outcome.RETRYABLE, detail=f"{type(exc).__name__}: {exc}")
        SEND_SECONDS.labels(self.channel.name).observe(time.perf_counter() - started)
        done = self.clock.now()
        return self._record(item, claim.token, claim.attempt, result, done, reclaimed=claim.work.kind == "reclaim")

    def _record(
        self, item: Item, token: str, attempt: int, result: SendResult, now: float, *, reclaimed: bool,
    ) -> tuple[Result, float | None, bool]:
        send_at = _send_ts(item)
        lateness = now - send_at
        common = {"attempt": attempt, "outcome_at": iso(now), "channel": self.channel.name,
                  "status_code": result.status, "detail": result.detail}
        if self._request_id:  # the delivery log row says which invocation made the attempt
            common["request_id"] = self._request_id
        outcome: Result
        if result.ok:
            fields = {**common, "status": SENT, "delivered_at": iso(now), "delivered_ts": now,
                      "latency_s": round(lateness, 4)}
            outcome = "delivered"
            LATENESS.observe(max(0.0, lateness))
        elif result.outcome is Outcome.RETRYABLE and attempt < self.options.max_attempts:
            due = now + self.options.retry_delays_s[attempt - 1]
            shard = int(item.get("shard") or 0)
            entry = {"pk": tables.schedule_pk(minute_key(due), shard), "sk": tables.retry_sk(int(due * 1000),
                     str(item["notification_id"])), "schedule_pk": item["pk"], "schedule_sk": item["sk"],
                     "attempt": attempt, "due_at": due, "ttl": int(due + 7 * 86400)}
            with self._write_lock:  # the index first: a crash after it leaves a harmless stale entry
                self._retries.batch_put([entry])
            with self._lock:
                heapq.heappush(self._retry_hints, due)
            fields = {**common, "status": RETRY_SCHEDULED, "next_attempt_at": due, "last_error": result.detail}
            outcome = "retried"
        else:
            fields = {**common, "status": DEAD_LETTERED, "last_error": result.detail, "dead_lettered_at": iso(now)}
            outcome = "dead_lettered"
        final = {**item, **fields}
        self._finish(item, token, fields)
        self._project(final, outcome)
        DELIVERIES.labels(outcome, self.channel.name).inc()
        if log.isEnabledFor(logging.INFO):
            extra = _log_fields(item, attempt, outcome)
            extra.update(delivered_at=iso(now), lateness_s=round(lateness, 4), status_code=result.status,
                         detail=result.detail, channel=self.channel.name, worker=self.worker_id)
            if self._request_id:
                extra["request_id"] = self._request_id
            log.info("delivery attempt", extra=extra)
        return outcome, (lateness if result.ok else None), reclaimed

    def _finish(self, item: Item, token: str, fields: Mapping[str, Any]) -> None:
        """Record an outcome under the claim token, group-committed with the other senders' outcomes.

        Between a send and this write, a ``kill -9`` means a resend after the lease (a duplicate at the
        channel, which dedupes on the Idempotency-Key). Committing each outcome alone made 16 senders
        queue for one single-row transaction each, and the queue is that window: whoever gets the
        write lock commits every outcome waiting, in one transaction, and the others just wait for it.
        """
        entry = _Finish(Update(item["pk"], item["sk"], dict(fields), Condition.matches(claim_token=token)))
        with self._finish_lock:
            self._finishes.append(entry)
        with self._write_lock:
            with self._finish_lock:
                batch, self._finishes = self._finishes, []
            if batch:
                self._commit_finishes(batch)
        entry.done.wait()
        if entry.error is not None:
            raise entry.error
        if entry.lost:
            # Our lease expired and another worker re-claimed it: its outcome will stand.
            log.warning("lease lost before the outcome was recorded",
                        extra={"notification_id": item.get("notification_id"), "worker": self.worker_id})

    def _commit_finishes(self, batch: list[_Finish]) -> None:
        try:
            results = self._schedules.update_many([f.update for f in batch])
            for finish, result in zip(batch, results, strict=True):
                finish.lost = result is None
        except NotifyError as exc:
            for finish in batch:
                finish.error = exc
        finally:
            for finish in batch:
                finish.done.set()

    # -- derived rows ------------------------------------------------------------------------------
    def _project(self, final: Item, outcome: str) -> None:
        rows = projections(final, outcome, now=self.clock.now())
        with self._proj_lock:
            self._projections.extend(rows)
            if outcome == "delivered":
                key = (str(final["campaign_id"]), str(final.get("delivered_at", ""))[:10])
                self._campaign_counts[key] = self._campaign_counts.get(key, 0) + 1

    def flush(self) -> None:
        """Write the batched derived rows (one batch per table)."""
        with self._proj_lock:
            rows, self._projections = self._projections, []
            counts, self._campaign_counts = self._campaign_counts, {}
        by_table: dict[str, list[Item]] = {}
        for table, row in rows:
            by_table.setdefault(table, []).append(row)
        with self._write_lock:
            for table, items in by_table.items():
                self.store.table(table).batch_put(items)
        if counts and self._on_counts is not None:
            with self._write_lock:
                self._on_counts(self.store, counts)

    def _repair(self, finished: list[Item]) -> int:
        """Re-create derived rows a crash lost (the schedule item says sent/dead-lettered, no deliveries row)."""
        keys = [(str(i["notification_id"]), tables.attempt_sk(int(i.get("attempt") or 1))) for i in finished]
        have = {(r["pk"], r["sk"]) for r in self._deliveries.batch_get(keys)}
        missing = [i for i, k in zip(finished, keys, strict=True) if k not in have]
        for item in missing:
            self._project(item, "delivered" if item.get("status") == SENT else "dead_lettered")
        if missing:
            self.flush()
        return len(missing)

    # -- context -------------------------------------------------------------------------------------
    def _campaign(self, campaign_id: str) -> Item | None:
        now = time.monotonic()
        cached = self._campaign_cache.get(campaign_id)
        if cached is not None and cached[0] > now:
            return cached[1]
        item = self._campaigns.get(campaign_id, tables.CAMPAIGN_SK)
        self._campaign_cache[campaign_id] = (now + 60.0, item)
        return item

    def _user(self, user_id: str) -> Item | None:
        return self._users.get(user_id, tables.PROFILE_SK)

    @staticmethod
    def _count(summary: PassSummary, result: Result, lateness: float | None, reclaimed: bool) -> None:
        if result == "lost_claim":
            summary.lost_claims += 1
            return
        summary.claimed += 1
        summary.reclaimed += int(reclaimed)
        if result == "delivered":
            summary.delivered += 1
            if lateness is not None:
                summary.lateness.append(lateness)
        elif result == "retried":
            summary.retried += 1
        elif result == "dead_lettered":
            summary.dead_lettered += 1
        else:
            summary.duplicates += 1


def _send_ts(item: Mapping[str, Any]) -> float:
    value = item.get("send_at")
    if not value:
        return 0.0
    return parse_ts(value)


def _log_fields(item: Mapping[str, Any], attempt: int, outcome: str) -> dict[str, Any]:
    return {"notification_id": item.get("notification_id"), "user_id": item.get("user_id"),
            "campaign_id": item.get("campaign_id"), "attempt": attempt, "outcome": outcome,
            "scheduled_at": item.get("send_at")}


def projections(final: Mapping[str, Any], outcome: str, *, now: float) -> Iterator[tuple[str, Item]]:
    """The derived rows of one attempt's outcome: (table, item) pairs (see the module docstring); ``now``
    (the worker's clock) starts their retention."""
    nid = str(final["notification_id"])
    uid = str(final["user_id"])
    cid = str(final["campaign_id"])
    attempt = int(final.get("attempt") or 1)
    outcome_at = str(final.get("outcome_at") or final.get("delivered_at") or "")
    ttl = int(now + LOG_TTL_S)
    delivery: Item = {
        "pk": nid, "sk": tables.attempt_sk(attempt), "notification_id": nid, "user_id": uid, "campaign_id": cid,
        "attempt": attempt,
        "outcome": {"delivered": SENT, "retried": RETRY_SCHEDULED}.get(outcome, outcome),
        "scheduled_at": final.get("send_at"), "attempted_at": outcome_at, "delivered_at": final.get("delivered_at"),
        "latency_s": final.get("latency_s"), "status_code": final.get("status_code"), "detail": final.get("detail"),
        "channel": final.get("channel"), "worker": final.get("worker"), "plan_day": final.get("plan_day"),
        "schedule_pk": final.get("pk"), "schedule_sk": final.get("sk"), "ttl": ttl,
    }
    if final.get("request_id"):
        delivery["request_id"] = final["request_id"]
    yield tables.DELIVERIES, delivery
    if outcome == "delivered":
        when = datetime.fromisoformat(str(final["delivered_at"]).replace("Z", "+00:00"))
        yield tables.SENDS, {"pk": uid, "sk": tables.send_sk(when, cid), "campaign_id": cid,
                             "ts": str(final["delivered_at"]), "notification_id": nid, "ttl": ttl}
        if final.get("plan_day"):
            plan = {k: final[k] for k in _PLAN_KEYS if k in final}
            yield tables.PLANS, {**plan, "pk": uid, "sk": tables.plan_sk(str(final["plan_day"]), nid), "status": SENT,
                                 "sent_at": str(final["delivered_at"])}
    elif outcome == "dead_lettered":
        day = outcome_at[:10] or "unknown"
        yield tables.DEAD_LETTERS, {"pk": day, "sk": f"{outcome_at}#{nid}", "notification_id": nid, "user_id": uid,
                                    "campaign_id": cid, "attempts": attempt, "last_error": final.get("last_error"),
                                    "schedule_pk": final.get("pk"), "schedule_sk": final.get("sk"), "ttl": ttl}


def build_worker(
    settings: NotifySettings, store: Store, *, clock: Clock, channel: Channel | None = None,
    options: WorkerOptions | None = None,
) -> DeliveryWorker:
    """A worker wired from settings: the settings' channel, concurrency, lease and public base URL."""
    from notify_core.delivery.channels import build_channel

    opts = options or WorkerOptions(concurrency=settings.delivery_concurrency, lease_s=settings.delivery_lease_s)
    keys = load_keyring(settings.secrets_dir, TRACKING_PURPOSE, clock=clock)
    return DeliveryWorker(store, channel or build_channel(settings, clock=clock),
                          public_base_url=settings.public_base_url, clock=clock, options=opts, tracking_keys=keys)


def execution_report(
    store: Store, *, start: float, end: float, now: float, shards: int = DEFAULT_SHARDS,
) -> dict[str, int]:
    """Statuses of the schedule items due in ``[start, end]``; ``stuck`` = claimed with an expired lease
    (a claim without an outcome: what the "delivery execution" check fails on)."""
    table = store.table(tables.SCHEDULES)
    counts: dict[str, int] = {"stuck": 0}
    for m in range(int(start // 60 * 60), int(end) + 1, 60):
        for shard in range(shards):
            for it in table.query(tables.schedule_pk(minute_key(m), shard)):
                status = str(it.get("status"))
                counts[status] = counts.get(status, 0) + 1
                if status == CLAIMED and float(it.get("lease_until") or 0) <= now:
                    counts["stuck"] += 1
    return counts

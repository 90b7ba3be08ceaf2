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
   re-claim goes ahead of the sends due with it, and another worker's claims (seen by a scan, or lost to it)
   are looked at again by key every ``heartbeat_s`` while the minute's queue is busy, then with the
   minute's rescan until it is done.
3. **Dedupe.** ``dedupe`` put with ``Condition.absent()``, key = notification id, TTL 24 h, naming the
   schedule item that owns it. A second schedule item with the same id within 24 h (a re-plan that
   re-created it) is marked ``duplicate`` and not sent; the owner re-claiming after a crash passes.
4. **Send** through the channel with the notification id as Idempotency-Key; render from the campaign's
   template and the user's profile (campaigns cached per worker). The profile is read right after the
   claim (one batch read per pass) and checked first (:func:`notify_core.preferences.suppression_reason`):
   a user who opted out of everything, of every channel or of the campaign's category since the plan was
   made, whose own daily cap is spent, or for whom it is now a quiet hour (set since the plan, or reached
   by a send an outage or a retry made late) gets nothing, and the item
   finishes as ``suppressed`` (with its reason, a deliveries row and a campaign count).
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
import dataclasses
import functools
import os
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from prometheus_client import Histogram

from notify_core.backoff import Backoff
from notify_core.clock import Clock, utcnow
from notify_core.delivery.async_senders import AsyncBatch, AsyncSenders
from notify_core.delivery.channels import Channel, Message, Outcome, SendResult
from notify_core.delivery.claims import Claims, _Claim
from notify_core.delivery.outcomes import (
    DELIVERIES,
    LOG_TTL_S,
    OutcomeHealth,
    Outcomes,
    log,
    minute_key,
    parse_ts,
    projections,
)
from notify_core.delivery.render import campaign_context, render
from notify_core.delivery.summary import RETRY_DELAYS_S, PassSummary, Result, WorkerOptions, percentile
from notify_core.delivery.tracking import TRACKING_PURPOSE, TrackingLinks
from notify_core.erasure_queue import ErasingUsers
from notify_core.errors import BackendError, NotifyError
from notify_core.gc_tuning import fewer_collections
from notify_core.lifecycle import CLAIMED
from notify_core.observability import current_request_id
from notify_core.preferences import ERASING, suppression_reason
from notify_core.scheduling.ids import DEFAULT_SHARDS
from notify_core.security.keyring import Ring, ephemeral_keyring
from notify_core.store import tables
from notify_core.store.expiry import ExpirySweep
from notify_core.store.port import Item, Store

if TYPE_CHECKING:
    from notify_core.settings import NotifySettings

__all__ = ["DELIVERIES", "LOG_TTL_S", "RETRY_DELAYS_S", "DeliveryWorker", "PassSummary", "WorkerOptions",
           "build_worker", "execution_report", "parse_ts", "percentile", "projections", "worker_options"]

SEND_SECONDS = Histogram("notify_delivery_send_seconds", "Channel send time", ["channel"],
                         buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 2.0, 5.0))


class DeliveryWorker:
    """Delivers due notifications from a Store through a Channel (see the module docstring).

    ``run_pass`` is one bounded step (the Lambda calls it until the due work is done); ``run_forever``
    loops it, sleeping until the next due time (at most ``poll_s``). Threads: ``concurrency`` senders and
    one maintenance thread for minute scans; ``run_forever`` with a channel that offers ``async_sender()``
    (the webhook) sends from ``concurrency`` coroutines on one event loop instead, with one outcome
    committer thread (:mod:`notify_core.delivery.async_senders`). What it does is split three ways:
    :class:`Claims` finds and claims work, this class renders and sends, :class:`Outcomes` records what happened.
    """

    def __init__(
        self, store: Store, channel: Channel, *, public_base_url: str, clock: Clock,
        options: WorkerOptions | None = None,
        on_campaign_counts: Callable[[Store, Mapping[tuple[str, str], int]], None] | None = None,
        tracking_keys: Ring | None = None,
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
        self._users = store.table(tables.USERS)
        self._erasing = ErasingUsers(store)
        self._campaigns = store.table(tables.CAMPAIGNS)
        # SQLite takes one writer at a time (its Store queues them on its write gate, across processes
        # too); this lock is the group commit's: whoever holds it commits every outcome waiting, so 16
        # senders make a few larger transactions instead of 16 small ones (Outcomes.finish).
        write_lock: contextlib.AbstractContextManager[Any] = (
            threading.Lock() if store.single_writer else contextlib.nullcontext())
        self._pool = ThreadPoolExecutor(self.options.concurrency, thread_name_prefix="deliver")
        self._request_id: str | None = None
        self._campaign_cache: dict[str, tuple[float, Item | None, dict[str, Any]]] = {}
        if on_campaign_counts is None:
            from notify_core.delivery.feedback import add_campaign_counts

            on_campaign_counts = add_campaign_counts
        self._async: AsyncSenders | None = None
        self.health = OutcomeHealth()  # the senders stop sending while the Store refuses outcomes
        self.totals = PassSummary()
        self.outcomes = Outcomes(store, clock=clock, options=self.options, channel_name=channel.name,
                                 worker_id=self.worker_id, write_lock=write_lock, on_campaign_counts=on_campaign_counts)
        self.claims = Claims(store, clock=clock, options=self.options, worker_id=self.worker_id,
                             channel_name=channel.name, write_lock=write_lock, outcomes=self.outcomes,
                             totals=self.totals)
        # the embedded Store removes expired rows only when asked: this worker asks, hourly (DynamoDB: no-op)
        self.expiry = ExpirySweep(store, now=clock.now())

    # ------------------------------------------------------------------------------------------
    def run_pass(self, *, wait_for_scans: bool = True) -> PassSummary:
        """Deliver what is due now (at most ``max_batch`` items); returns counts and the next due time."""
        summary = PassSummary()
        self._request_id = current_request_id()  # the invocation's id (Lambda request, Dagster run), if any
        now = self.clock.now()
        self.claims.plan_scans(now, summary)
        if wait_for_scans:
            self.claims.wait_scans()
        work = self.claims.take_due(now, self.options.max_batch)
        if len(work) < self.options.max_batch:
            work += self.claims.due_retries(now, self.options.max_batch - len(work))
        if work:
            claimed = self.claims.claim_batch(work, summary)
            if claimed:  # the Store took the claims' writes: let the senders try again
                self.health.ok()
            profiles = self._profiles(claimed)
            for result, lateness, reclaimed in self._pool.map(functools.partial(self._deliver, profiles=profiles),
                                                              claimed):
                summary.count(result, lateness, reclaimed)
        self.flush()
        self.expiry.maybe_sweep(self.clock.now())
        summary.next_due_at = self.claims.next_due(self.clock.now())
        self.totals.add(summary)
        return summary

    @fewer_collections()  # a pass allocates dicts by the thousand, dead by the next (see gc_tuning)
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
            if step.attempts or step.duplicates or step.lost_claims or step.suppressed:
                continue
            if step.refused_claims:  # the Store refuses writes (its disk full): the next invocation tries again
                break
            nxt = step.next_due_at
            limit = linger_until if linger_until is not None else now
            if deadline is not None:
                limit = min(limit, deadline)
            if nxt is None or nxt > limit:
                break
            self.clock.sleep(max(0.0, min(nxt, limit) - now))
        total.next_due_at = self.claims.next_due(self.clock.now())
        return total

    @fewer_collections()
    def run_forever(self, stop: threading.Event, *, on_pass: Callable[[PassSummary], None] | None = None) -> None:
        """The ``notify worker`` loop: a pipelined pass whenever something is due, else sleep (<= ``poll_s``).

        Pipelined: while the senders work through one batch, this thread claims the next batch (and reads
        its profiles) and writes the derived rows of the sends finished so far; the next batch is queued
        behind the current one, so the senders never wait for a claim or a flush. At most two batches are
        handed out at a time (<= 2 x ``max_batch`` claimed ahead of their send). A claim is not a send, so
        a ``kill -9`` with a batch claimed ahead costs no duplicate: those items are re-claimed once the
        heartbeat stops, and each outcome is still committed on its sender's own path before the sender
        takes the next item (the duplicate window is unchanged).
        """
        self.claims.start_heartbeat()
        in_flight: _Batch | AsyncBatch | None = None  # the batch the senders are working on, collected next step
        failed = False
        refused = Backoff()
        try:
            while not stop.is_set():
                step, submitted = self._pipelined_step()
                if in_flight is not None:
                    in_flight.collect(step)
                in_flight = submitted
                step.in_flight = submitted.size if submitted is not None else 0
                step.next_due_at = self.claims.next_due(self.clock.now())
                self.totals.add(step)
                if on_pass is not None:
                    on_pass(step)
                if step.refused_claims and not (step.in_flight or step.attempts):
                    # The Store refused the claims (its disk full): a pause that doubles up to 5 s, where the
                    # loop went straight round again, a claim attempt and a log line ~60 times a second.
                    stop.wait(refused.next())
                    continue
                refused.reset()
                if step.in_flight or step.attempts or step.duplicates or step.lost_claims or step.suppressed:
                    continue
                now = self.clock.now()
                nxt = step.next_due_at if step.next_due_at is not None else now + self.options.poll_s
                delay = min(max(0.0, nxt - now), self.options.poll_s)
                if delay > 0:
                    self.claims.wake.wait(delay)
                    self.claims.wake.clear()
        except BaseException:
            failed = True
            raise
        finally:
            if in_flight is not None:  # stopping: finish what was handed out (SIGTERM ends the batch in hand)
                tail = PassSummary()
                in_flight.collect(tail)
                self.totals.add(tail)
                if on_pass is not None:
                    on_pass(tail)
            try:
                self.flush()
            except NotifyError as exc:
                if not failed:
                    raise
                # the loop's own error is the one to see; this one must not replace it
                log.warning("derived rows not written as the loop failed", extra={"error": str(exc)})

    def _pipelined_step(self) -> tuple[PassSummary, _Batch | AsyncBatch | None]:
        """Claim what is due now and hand it to the senders without waiting for it; then write the
        derived rows of the sends finished so far (both run while the previous batch is being sent)."""
        step = PassSummary()
        self._request_id = current_request_id()
        now = self.clock.now()
        self.claims.plan_scans(now, step)
        work = self.claims.take_due(now, self.options.max_batch)
        if len(work) < self.options.max_batch:
            work += self.claims.due_retries(now, self.options.max_batch - len(work))
        submitted: _Batch | AsyncBatch | None = None
        if work:
            claimed = self.claims.claim_batch(work, step)
            if claimed:
                self.health.ok()  # the Store took the claims' writes: let the senders try again
                senders = self._async_senders()
                if senders is not None:
                    submitted = senders.submit(claimed, self._profiles(claimed))
                else:
                    deliver = functools.partial(self._deliver, profiles=self._profiles(claimed))
                    submitted = _Batch(self._pool, deliver, claimed, senders=self.options.concurrency)
        try:
            self.flush()
        except NotifyError as exc:  # the loop goes on: the minute-close repair re-creates them (Outcomes.flush)
            log.warning("derived rows not written; the minute-close repair re-creates them", extra={"error": str(exc)})
        self.expiry.maybe_sweep(self.clock.now())
        return step, submitted

    def start_heartbeat(self) -> None:
        self.claims.start_heartbeat()

    def flush(self) -> None:
        """Write the batched derived rows of the outcomes recorded so far."""
        self.outcomes.flush()

    def close(self) -> None:
        self.claims.wait_scans()
        if self._async is not None:
            self._async.close()
            self._async = None  # a later run_forever starts a fresh event loop
        self.outcomes.flush()
        self._pool.shutdown(wait=True)
        self.claims.close()

    def _async_senders(self) -> AsyncSenders | None:
        """The event-loop senders, started on first use, where the channel and the options allow them."""
        if self._async is None and self.options.async_senders:
            new_sender = getattr(self.channel, "async_sender", None)
            if new_sender is None:
                return None
            channel_name = self.channel.name
            self._async = AsyncSenders(
                outcomes=self.outcomes, concurrency=self.options.concurrency, new_sender=new_sender,
                prepare=self._prepare, now=self.clock.now, request_id=lambda: self._request_id,
                on_send_time=SEND_SECONDS.labels(channel_name).observe, health=self.health)
        return self._async

    def _prepare(self, claim: _Claim, profiles: Mapping[str, Item]) -> Message | tuple[dict[str, Any], str]:
        """The message to send, or (the outcome fields, the reason) of a suppression (as :meth:`_send`)."""
        item = claim.item
        (campaign, campaign_fields), user = self._campaign(str(item["campaign_id"])), profiles.get(str(item["user_id"]))
        now = self.clock.now()
        reason = suppression_reason(user, campaign, day_token=claim.day_token, at=now)
        if reason is not None:
            return self.outcomes.suppress_fields(claim.attempt, reason, now, request_id=self._request_id), reason
        return render(item, campaign=campaign, user=user, links=self.links, attempt=claim.attempt,
                      campaign_fields=campaign_fields)

    def _deliver(self, claim: _Claim, *, profiles: Mapping[str, Item]) -> tuple[Result, float | None, bool]:
        if self.health.refusing:  # the Store refuses outcomes: do not send what cannot be recorded
            return "lost_claim", None, False
        try:
            delivered = self._send(claim, profiles=profiles)
            self.health.ok()
            return delivered
        except NotifyError as exc:
            # A Store failure mid-flight: the claim's lease expires and another pass re-claims it.
            self.health.failed(exc)
            log.warning("delivery step failed; the lease will expire and the item be retried",  # a trace: a bug
                        extra={"schedule_pk": claim.work.pk, "schedule_sk": claim.work.sk, "error": str(exc)},
                        exc_info=not isinstance(exc, BackendError))
            return "lost_claim", None, False

    def _send(self, claim: _Claim, *, profiles: Mapping[str, Item]) -> tuple[Result, float | None, bool]:
        item = claim.item
        (campaign, campaign_fields), user = self._campaign(str(item["campaign_id"])), profiles.get(str(item["user_id"]))
        # The profile is read once per pass, right after the claim (one batch read for the pass's users,
        # not one query per send): an opt-out since the plan was made stops this notification now.
        now = self.clock.now()
        reason = suppression_reason(user, campaign, day_token=claim.day_token, at=now)
        if reason is not None:
            return self.outcomes.suppress(item, claim.token, claim.attempt, reason, now,
                                          reclaimed=claim.work.kind == "reclaim", request_id=self._request_id)
        message = render(item, campaign=campaign, user=user, links=self.links, attempt=claim.attempt,
                         campaign_fields=campaign_fields)
        started = time.perf_counter()
        try:
            result = self.channel.send(message, idempotency_key=str(item["notification_id"]))
        except Exception as exc:  # a channel bug must not kill the worker: treat as retryable
            result = SendResult(Outcome.RETRYABLE, detail=f"{type(exc).__name__}: {exc}")
        SEND_SECONDS.labels(self.channel.name).observe(time.perf_counter() - started)
        done = self.clock.now()
        return self.outcomes.record(item, claim.token, claim.attempt, result, done,
                                    reclaimed=claim.work.kind == "reclaim", request_id=self._request_id)

    # -- context -------------------------------------------------------------------------------------
    def _campaign(self, campaign_id: str) -> tuple[Item | None, dict[str, Any]]:
        """The campaign item (cached 60 s) and its template fields (computed once per cached item)."""
        now = time.monotonic()
        cached = self._campaign_cache.get(campaign_id)
        if cached is not None and cached[0] > now:
            return cached[1], cached[2]
        item = self._campaigns.get(campaign_id, tables.CAMPAIGN_SK)
        fields = campaign_context(item)
        self._campaign_cache[campaign_id] = (now + 60.0, item, fields)
        return item, fields

    def _profiles(self, claimed: list[_Claim]) -> dict[str, Item]:
        """The current profiles of the claimed items' users, in one batched read (absent users: missing). A
        user whose erasure is under way gets a profile marked ``erasing`` instead: their profile may be gone
        already, and a missing profile is sent to (the planner decided)."""
        keys = list(dict.fromkeys((str(c.item["user_id"]), tables.PROFILE_SK) for c in claimed))
        profiles = {str(u["pk"]): u for u in self._users.batch_get(keys)} if keys else {}
        erasing = self._erasing.ids()
        for user_id in (u for u, _ in keys if u in erasing) if erasing else ():
            profiles[user_id] = {"pk": user_id, ERASING: True}
        return profiles


class _Batch:
    """One batch handed to the senders by the pipelined loop, collected into a summary.

    Its claims wait in one queue that one pool task per sender drains, not one task per claim: a Future
    and an executor work item per delivery cost ~8 us of CPU (measured here), for nothing a claim needs.
    Tasks of the next batch queue behind this batch's in the pool, so it is sent after this one, as before.
    A task that meets an exception goes on with the rest of the batch; :meth:`collect` raises it after
    counting what was delivered (a claim it left unrecorded is re-claimed when its lease runs out).
    """

    def __init__(self, pool: ThreadPoolExecutor, deliver: Callable[[_Claim], tuple[Result, float | None, bool]],
                 claims: list[_Claim], *, senders: int) -> None:
        self.size = len(claims)
        self._todo = deque(claims)
        self._results: list[tuple[Result, float | None, bool]] = []  # list.append is atomic under the GIL
        self._errors: list[BaseException] = []
        self._tasks = [pool.submit(self._drain, deliver) for _ in range(max(1, min(senders, self.size)))]

    def _drain(self, deliver: Callable[[_Claim], tuple[Result, float | None, bool]]) -> None:
        todo, results = self._todo, self._results
        while True:
            try:
                claim = todo.popleft()
            except IndexError:
                return
            try:
                results.append(deliver(claim))
            except Exception as exc:  # noqa: BLE001 - raised again by collect, after the rest of the batch
                self._errors.append(exc)

    def collect(self, summary: PassSummary) -> None:
        for task in self._tasks:
            task.result()
        for result in self._results:
            summary.count(*result)
        if self._errors:
            raise self._errors[0]


def worker_options(settings: NotifySettings, **changes: Any) -> WorkerOptions:
    """The loop's knobs the settings hold (one owner of that wiring: ``notify worker``, the Lambda and the
    Dagster pass), with ``changes`` on top."""
    return dataclasses.replace(WorkerOptions(
        concurrency=settings.delivery_concurrency, lease_s=settings.delivery_lease_s,
        async_senders=settings.delivery_async_senders, max_late_s=settings.delivery_max_late_s), **changes)


def build_worker(
    settings: NotifySettings, store: Store, *, clock: Clock, channel: Channel | None = None,
    options: WorkerOptions | None = None,
) -> DeliveryWorker:
    """A worker wired from settings: the settings' channel, concurrency, lease and public base URL."""
    from notify_core.delivery.channels import build_channel

    opts = options or worker_options(settings)
    from notify_core.security.vault import build_vault

    keys = build_vault(settings, store=store).live_ring(TRACKING_PURPOSE, clock=clock)
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

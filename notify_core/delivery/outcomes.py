"""Recording what happened to a claimed notification: its outcome on the schedule item, the retry index
entry, and the derived rows (deliveries, sends, the plan's status, dead letters, campaign counts).

Split from the claiming side (:mod:`notify_core.delivery.claims`) because the two have different
write disciplines: claims are batched before sending, outcomes are group-committed after it (see
:meth:`Outcomes.finish`) and derived rows are batched per pass and re-created at minute close.
"""

from __future__ import annotations

import contextlib
import heapq
import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, cast

from prometheus_client import Counter, Histogram

from notify_core.bounds import MAX_COOLDOWN_HOURS
from notify_core.clock import Clock
from notify_core.delivery.channels import Outcome, SendResult
from notify_core.delivery.summary import TOO_LATE, Result, WorkerOptions
from notify_core.errors import CountsNotAddedError, NotifyError
from notify_core.lifecycle import CLAIMED, DEAD_LETTERED, RETRY_SCHEDULED, SENT, SUPPRESSED, check_move
from notify_core.observability import LOG_RETENTION_DAYS, log_fields
from notify_core.scheduling.models import SENT_PLAN_TTL_DAYS
from notify_core.store import tables
from notify_core.store.port import Condition, Item, Store, Update

log = logging.getLogger("notify_core.delivery.worker")  # one logger name for the whole delivery loop

LOG_TTL_S = LOG_RETENTION_DAYS * 24 * 3600  # spec §8's log retention (observability.LOG_RETENTION_DAYS)
# A user's sends are what every cooldown is judged by (the recommender and the planner), so they are kept as
# long as the longest cooldown allowed, and a day more (the plan day's span).
SENDS_TTL_S = (MAX_COOLDOWN_HOURS + 24) * 3600
_PLAN_KEYS = ("notification_id", "user_id", "campaign_id", "plan_day", "slot", "send_at", "due_minute", "shard",
              "expected_value", "ttl")


class OutcomeHealth:
    """Whether the Store is refusing outcomes right now (its disk full, say): then the senders stop sending.

    A send whose outcome cannot be recorded is sent again once its claim's lease ends (same idempotency
    key): at-least-once holds, but a worker that kept sending through a full disk re-sent two thirds of a
    3,000 burst. After ``refusing_after`` Store errors in a row, the claimed items still waiting are left
    unsent (their leases end, a later pass re-claims them); one recorded outcome or one successful claim (a
    Store write too) resets it. Not on the first error: one throttled write must not hold a whole batch back
    by a lease. An error counts once however many senders it reaches: one failed group commit fails every
    outcome it carried with the same exception, and counted per outcome it tripped the gate by itself
    (seen as 58 of 60 items left claimed behind one failed commit of 8, when a claim came late)."""

    def __init__(self, *, refusing_after: int = 3) -> None:
        self.refusing_after = refusing_after
        self._failures = 0
        self._last: BaseException | None = None
        self._lock = threading.Lock()

    def failed(self, error: BaseException) -> None:
        """One more Store error, unless it is the one last counted (the same commit's, seen by another
        sender)."""
        with self._lock:
            if error is not self._last:
                self._last = error
                self._failures += 1

    def ok(self) -> None:
        self._failures = 0  # one int store: atomic under the GIL, and called for every outcome

    @property
    def refusing(self) -> bool:
        return self._failures >= self.refusing_after


# The campaign counters a worker adds besides ``sent`` (feedback.Counter names them all; mypy checks these
# are among them): ``budget_spent`` is keyed by plan day, the others by UTC day.
OtherCounter = Literal["failed", "suppressed", "budget_spent"]
OTHER_COUNTERS: tuple[OtherCounter, ...] = ("failed", "suppressed", "budget_spent")
_FLUSH_CHUNK = 100  # outcomes whose derived rows are written under one hold of the write lock (flush)

DELIVERIES = Counter("notify_deliveries_total", "Delivery attempts by outcome", ["outcome", "channel"])
MISSED = Counter("notify_delivery_missed_total", "Notifications not sent because a worker found them more than "
                 "max_late_s after their send time (an outage, a clock stepped forward)", ["channel"])
LATENESS = Histogram("notify_delivery_lateness_seconds", "Delivered time minus scheduled time",
                     buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0))


def iso(ts: float) -> str:
    """``%Y-%m-%dT%H:%M:%S.%fZ`` (isoformat is ~30 % cheaper than strftime; several per delivery)."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="microseconds")[:-6] + "Z"  # drop "+00:00"


def parse_ts(value: Any) -> float:
    """ISO (``Z`` or offset) -> epoch seconds (Python >= 3.11 reads the ``Z`` itself)."""
    return datetime.fromisoformat(str(value)).timestamp()


def minute_key(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M")


def _held_lock() -> threading.Lock:
    lock = threading.Lock()
    lock.acquire()
    return lock


@dataclass(eq=False)
class _Finish:
    """One sender's outcome waiting to be group-committed (see :meth:`Outcomes.finish`)."""

    update: Update
    # Held until the commit that carries this outcome has ended; the committer releases it, the sender
    # acquires it. A bare lock, not an Event (~0.3 against ~8 us a delivery: an Event is a Condition
    # and a lock built in Python).
    done: threading.Lock = field(default_factory=_held_lock)
    lost: bool = False
    error: NotifyError | None = None


@dataclass(slots=True)
class AttemptOutcome:
    """One attempt's outcome as :meth:`Outcomes.prepare` decided it, before its commit."""

    fields: dict[str, Any]
    outcome: Result
    retry_entry: Item | None
    lateness: float
    attempt: int
    now: float
    result: SendResult
    request_id: str | None


class Outcomes:
    """The recording side of one worker: outcomes, retries and derived rows (thread-safe)."""

    def __init__(
        self, store: Store, *, clock: Clock, options: WorkerOptions, channel_name: str, worker_id: str,
        write_lock: contextlib.AbstractContextManager[Any],
        on_campaign_counts: Callable[[Store, Mapping[tuple[str, str], int]], None] | None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.options = options
        self.channel_name = channel_name
        self.worker_id = worker_id
        self._write_lock = write_lock
        self._schedules = store.table(tables.SCHEDULES)
        self._retries = store.table(tables.RETRIES)
        self._deliveries = store.table(tables.DELIVERIES)
        self._lock = threading.Lock()
        self.retry_hints: list[float] = []  # due times of retries this worker scheduled (a heap)
        self._projections: list[list[tuple[str, Item]]] = []  # per outcome, its derived rows
        self._campaign_counts: dict[tuple[str, str], int] = {}
        # dead letters and suppressions per (campaign, UTC day), for the campaign statistics; deliveries per
        # (campaign, plan day), what a re-plan of a day that has begun reads as its budgets' use
        self._other_counts: dict[OtherCounter, dict[tuple[str, str], int]] = {k: {} for k in OTHER_COUNTERS}
        self._counted: dict[str, Any] = {}  # DELIVERIES' child an outcome on this channel (.labels() ~2 us a call)
        self._proj_lock = threading.Lock()
        self._finishes: list[_Finish] = []  # outcomes waiting for the next group commit
        self._finish_lock = threading.Lock()
        self._on_counts = on_campaign_counts

    def next_retry(self, now: float) -> float | None:
        """The earliest retry this worker scheduled that is still ahead of ``now``."""
        with self._lock:
            while self.retry_hints and self.retry_hints[0] <= now:  # due ones were taken by this pass
                heapq.heappop(self.retry_hints)
            return self.retry_hints[0] if self.retry_hints else None

    def record(
        self, item: Item, token: str, attempt: int, result: SendResult, now: float, *, reclaimed: bool,
        request_id: str | None,
    ) -> tuple[Result, float | None, bool]:
        """Write one attempt's outcome (sent, a retry, or a dead letter) and queue its derived rows."""
        attempt_outcome = self.prepare(item, attempt, result, now, request_id=request_id)
        if attempt_outcome.retry_entry is not None:
            self.write_retries([attempt_outcome.retry_entry])
        if not self.finish(item, token, attempt_outcome.fields):
            return "lost_claim", None, reclaimed
        return self.recorded(item, attempt_outcome, reclaimed=reclaimed)

    def prepare(self, item: Item, attempt: int, result: SendResult, now: float, *,
                request_id: str | None) -> AttemptOutcome:
        """What one attempt's outcome writes (no I/O): the schedule item's new fields, and for a retry its
        index entry, which must be written (:meth:`write_retries`) before the fields are committed."""
        send_at = _send_ts(item)
        lateness = now - send_at
        at = iso(now)  # once: the outcome's times are one instant (three formats were ~3 % of a send's loop)
        common = {"attempt": attempt, "outcome_at": at, "channel": self.channel_name,
                  "status_code": result.status, "detail": result.detail}
        if request_id:  # the delivery log row says which invocation made the attempt
            common["request_id"] = request_id
        outcome: Result
        entry: Item | None = None
        if result.ok:
            fields = {**common, "status": SENT, "delivered_at": at, "delivered_ts": now,
                      "latency_s": round(lateness, 4)}
            outcome = "delivered"
        elif result.outcome is Outcome.RETRYABLE and (tries := attempts_since_redrive(item, attempt)) < \
                self.options.max_attempts:
            # no sooner than the receiver's Retry-After (capped by the channel): retrying inside the window a
            # rate-limited receiver asked for spends the attempts on refusals and dead-letters the message
            due = now + max(self.options.retry_delays_s[tries - 1], result.retry_after_s or 0.0)
            entry = retry_entry(item, failed=attempt, due=due)
            fields = {**common, "status": RETRY_SCHEDULED, "next_attempt_at": due, "last_error": result.detail}
            outcome = "retried"
        else:
            fields = {**common, "status": DEAD_LETTERED, "last_error": result.detail, "dead_lettered_at": at}
            outcome = "dead_lettered"
        return AttemptOutcome(fields, outcome, entry, lateness, attempt, now, result, request_id)

    def write_retries(self, entries: list[Item]) -> None:
        """The retry index entries of outcomes about to be committed (the index first: a crash after it
        leaves a harmless stale entry, never a stranded retry)."""
        with self._write_lock:
            self._retries.batch_put(entries)
        with self._lock:
            for entry in entries:
                heapq.heappush(self.retry_hints, float(entry["due_at"]))

    def recorded(self, item: Item, attempt_outcome: AttemptOutcome, *, reclaimed: bool
                 ) -> tuple[Result, float | None, bool]:
        """After the outcome's commit: queue its derived rows, count it, log it."""
        fields, outcome, lateness = attempt_outcome.fields, attempt_outcome.outcome, attempt_outcome.lateness
        attempt, result, request_id = attempt_outcome.attempt, attempt_outcome.result, attempt_outcome.request_id
        if outcome == "delivered":
            LATENESS.observe(max(0.0, lateness))
        self.project({**item, **fields}, outcome)
        self.count(outcome)
        if log.isEnabledFor(logging.INFO):
            extra = _log_fields(item, attempt, outcome)
            extra.update(delivered_at=fields["outcome_at"], lateness_s=round(lateness, 4), status_code=result.status,
                         detail=result.detail, channel=self.channel_name, worker=self.worker_id)
            if request_id:
                extra["request_id"] = request_id
            log_fields(log, logging.INFO, "delivery attempt", extra)
        return outcome, (lateness if result.ok else None), reclaimed

    def count(self, outcome: str) -> None:
        """One delivery of ``outcome`` on this channel in ``notify_deliveries_total``."""
        child = self._counted.get(outcome)
        if child is None:  # bounded: the outcomes
            child = self._counted.setdefault(outcome, DELIVERIES.labels(outcome, self.channel_name))
        child.inc()

    def suppress(
        self, item: Item, token: str, attempt: int, reason: str, now: float, *, reclaimed: bool,
        request_id: str | None,
    ) -> tuple[Result, float | None, bool]:
        """Finish a claimed notification unsent because the user's preferences say no (see
        :func:`notify_core.preferences.suppression_reason`) or its day's cap is reached
        (:mod:`notify_core.delivery.day_cap`); it keeps a deliveries row saying why."""
        fields = self.suppress_fields(attempt, reason, now, request_id=request_id)
        if not self.finish(item, token, fields):
            return "lost_claim", None, reclaimed
        return self.suppressed(item, fields, attempt, reason, reclaimed=reclaimed)

    def suppress_fields(self, attempt: int, reason: str, now: float, *, request_id: str | None) -> dict[str, Any]:
        fields: dict[str, Any] = {"attempt": attempt, "outcome_at": iso(now), "channel": self.channel_name,
                                  "status": SUPPRESSED, "suppressed_reason": reason, "detail": reason}
        if request_id:
            fields["request_id"] = request_id
        return fields

    def suppressed(self, item: Item, fields: dict[str, Any], attempt: int, reason: str, *, reclaimed: bool
                   ) -> tuple[Result, float | None, bool]:
        """After a suppression's commit: its derived rows, count and log line."""
        self.project({**item, **fields}, "suppressed")
        self.count("suppressed")
        if reason == TOO_LATE:
            MISSED.labels(self.channel_name).inc()
        log_fields(log, logging.INFO, "delivery suppressed",
                   {**_log_fields(item, attempt, "suppressed"), "reason": reason, "worker": self.worker_id})
        return "suppressed", None, reclaimed

    def finish(self, item: Item, token: str, fields: Mapping[str, Any]) -> bool:
        """Record an outcome under the claim token, group-committed with the other senders' outcomes; False
        when the claim was lost meanwhile (see :meth:`committed`).

        Between a send and this write, a ``kill -9`` means a resend after the lease (a duplicate at the
        channel, which dedupes on the Idempotency-Key). Committing each outcome alone made 16 senders
        queue for one single-row transaction each, and the queue is that window: whoever gets the
        write lock commits every outcome waiting, in one transaction, and the others just wait for it.
        """
        entry = self.pending(item, token, fields)
        with self._finish_lock:
            self._finishes.append(entry)
        with self._write_lock:
            with self._finish_lock:
                batch, self._finishes = self._finishes, []
            if batch:
                self._commit_finishes(batch)
        entry.done.acquire()  # released by whichever sender committed this outcome (maybe this one)
        return self.committed(item, entry)

    def pending(self, item: Item, token: str, fields: Mapping[str, Any]) -> _Finish:
        """An outcome under the claim token, to be committed (by :meth:`finish` or :meth:`commit`)."""
        if "status" in fields:
            check_move(CLAIMED, fields["status"])  # every outcome ends a claim
        return _Finish(Update(item["pk"], item["sk"], dict(fields), Condition.matches(claim_token=token)))

    def commit(self, batch: list[_Finish]) -> None:
        """Commit a group of outcomes in one write (the async senders' committer thread calls this; each
        entry's ``lost``/``error`` says how it went, and :meth:`committed` raises or logs it)."""
        with self._write_lock:
            self._commit_finishes(batch)

    def committed(self, item: Item, entry: _Finish) -> bool:
        """Whether the outcome stands (raises the commit's Store error). False: our lease expired and another
        worker re-claimed the item; its outcome stands, so this one writes no derived rows and counts
        nothing (a late 4xx here once dead-lettered, and counted as failed, a notification the other worker
        had delivered)."""
        if entry.error is not None:
            raise entry.error
        if entry.lost:
            log.warning("lease lost before the outcome was recorded",
                        extra={"notification_id": item.get("notification_id"), "worker": self.worker_id})
            return False
        return True

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
                finish.done.release()

    # -- derived rows ------------------------------------------------------------------------------
    def project(self, final: Item, outcome: str) -> None:
        rows = projections(final, outcome, now=self.clock.now())
        with self._proj_lock:
            self._projections.append(list(rows))
            if outcome == "delivered":
                key = (str(final["campaign_id"]), str(final.get("delivered_at", ""))[:10])
                self._campaign_counts[key] = self._campaign_counts.get(key, 0) + 1
                if final.get("plan_day"):
                    spent = self._other_counts["budget_spent"]
                    key = (str(final["campaign_id"]), str(final["plan_day"]))
                    spent[key] = spent.get(key, 0) + 1
            elif outcome in ("dead_lettered", "suppressed"):
                other = self._other_counts["failed" if outcome == "dead_lettered" else "suppressed"]
                key = (str(final["campaign_id"]), str(final.get("outcome_at", ""))[:10])
                other[key] = other.get(key, 0) + 1

    def flush(self) -> None:
        """Write the batched derived rows: per chunk of outcomes one batch per table, deliveries last.

        A write the Store refuses (its disk full) raises, and derived rows not written are not kept: the
        outcomes themselves are committed, and the minute-close repair re-creates the derived rows of every
        finished item without a deliveries row (:meth:`repair`), counters included, before the minute may
        close. The counters come after the deliveries rows, so the repair cannot see them missing: counts
        not added are kept (merged into the next flush's), never dropped and never re-added whole."""
        with self._proj_lock:
            rows, self._projections = self._projections, []
            counts, self._campaign_counts = self._campaign_counts, {}
            others, self._other_counts = self._other_counts, {k: {} for k in OTHER_COUNTERS}
        for start in range(0, len(rows), _FLUSH_CHUNK):
            by_table: dict[str, list[Item]] = {}
            for outcome_rows in rows[start : start + _FLUSH_CHUNK]:
                for table, row in outcome_rows:
                    by_table.setdefault(table, []).append(row)
            # The deliveries rows last: an outcome's deliveries row is what the minute-close repair looks
            # for, so it must never exist without the outcome's other rows (sends, plans, dead letters);
            # a kill between these writes leaves the deliveries row missing and the repair re-creates all.
            # The write lock per chunk of outcomes: the senders' outcome commits get in between (the
            # pipelined loop flushes while they send, and 1,000 outcomes' rows held them all).
            with self._write_lock:
                for table in sorted(by_table, key=lambda t: t == tables.DELIVERIES):
                    self.store.table(table).batch_put(by_table[table])
        if self._on_counts is None:
            return
        from notify_core.delivery.feedback import add_campaign_counts

        on_counts = self._on_counts
        def other(field: OtherCounter) -> Callable[[Mapping[tuple[str, str], int]], None]:
            return lambda c: add_campaign_counts(self.store, c, field=field)

        writes: list[tuple[str, dict[tuple[str, str], int], Callable[[Mapping[tuple[str, str], int]], None]]] = [
            ("sent", counts, lambda c: on_counts(self.store, c)),
            *((field, others[field], other(field)) for field in OTHER_COUNTERS)]
        for i, (kind, pending, write) in enumerate(writes):
            if not pending:
                continue
            try:
                with self._write_lock:
                    write(pending)
            except NotifyError as exc:  # keep what was not added (and the later kinds) for the next flush
                unadded = exc.remaining if isinstance(exc, CountsNotAddedError) else pending
                with self._proj_lock:
                    for later, kept in [(kind, unadded), *((k, c) for k, c, _ in writes[i + 1 :])]:
                        into = self._campaign_counts if later == "sent" else self._other_counts[
                            cast(OtherCounter, later)]
                        for key, n in kept.items():
                            into[key] = into.get(key, 0) + n
                raise

    def repair(self, finished: list[Item], *, now: float, grace_s: float,
               dead: Callable[[set[str]], set[str]]) -> tuple[int, float | None]:
        """Re-create derived rows a crash lost (the schedule item says sent/dead-lettered/suppressed, no
        deliveries row); returns how many, and when to look again at those left to their own worker.

        An outcome committed less than ``grace_s`` ago whose worker is not known dead (``dead``: the workers
        among those given whose heartbeat ran out) is left alone: its rows may only be queued for that
        worker's next flush, and re-projecting them here counted its campaign counters twice (11-15 % over
        in a catch-up run). Its worker flushes within a pass; past the grace it counts as lost."""
        keys = [(str(i["notification_id"]), tables.attempt_sk(int(i.get("attempt") or 1))) for i in finished]
        have = {(r["pk"], r["sk"]) for r in self._deliveries.batch_get(keys, consistent=True)}
        missing = [i for i, k in zip(finished, keys, strict=True) if k not in have]
        settles = {id(i): _outcome_ts(i) + grace_s for i in missing}
        young = [i for i in missing if settles[id(i)] > now]
        gone = dead({str(i.get("worker")) for i in young}) if young else set()
        waiting = [i for i in young if str(i.get("worker")) not in gone]
        if waiting:
            left = {id(i) for i in waiting}
            missing = [i for i in missing if id(i) not in left]
        for item in missing:
            outcomes: dict[str, str] = {SENT: "delivered", SUPPRESSED: "suppressed"}
            self.project(item, outcomes.get(str(item.get("status")), "dead_lettered"))
        if missing:
            self.flush()
        return len(missing), min((settles[id(i)] for i in waiting), default=None)


def _outcome_ts(item: Mapping[str, Any]) -> float:
    """When a finished item's outcome was committed (0 for an item that does not say)."""
    value = item.get("outcome_at")
    return parse_ts(value) if value else 0.0


REDRIVEN_FROM = "redriven_from_attempt"
"""The schedule item's attempt that was dead-lettered when an operator last redrove it
(:mod:`~notify_core.delivery.redrive`); absent before any redrive."""


def attempts_since_redrive(item: Mapping[str, Any], attempt: int) -> int:
    """Which try of its retry ladder ``attempt`` is: the attempt itself, or counted from the last redrive.

    Why: a redrive gives each dead letter the spec's retries again (1 s, 5 s, 20 s), as SQS's redrive
    resets a message's receive count. Counted from the first attempt, a notification redriven after its
    last one got a single try: a receiver still flapping when the operator redrove dead-lettered it again
    at once, for a second redrive to catch."""
    return attempt - int(item.get(REDRIVEN_FROM) or 0)


def retry_entry(item: Mapping[str, Any], *, failed: int, due: float) -> Item:
    """The retries index entry that has a worker claim ``item`` again at ``due`` as attempt ``failed + 1``
    (written before the item's ``retry_scheduled`` status: a crash between leaves a stale entry, never a
    stranded retry). The worker's retries and a redrive of dead letters (:mod:`notify_core.delivery.redrive`)."""
    shard = int(item.get("shard") or 0)
    return {"pk": tables.schedule_pk(minute_key(due), shard),
            "sk": tables.retry_sk(int(due * 1000), str(item["notification_id"])),
            "schedule_pk": item["pk"], "schedule_sk": item["sk"], "attempt": failed, "due_at": due,
            "ttl": int(due + 7 * 86400)}


def in_time(item: Mapping[str, Any], *, now: float, max_late_s: float) -> bool:
    """Whether ``item`` may still be sent at ``now``: no more than ``max_late_s`` after its send time (the one
    rule: the worker's claims finish the others as ``too_late``, a redrive of dead letters leaves them)."""
    return now - _send_ts(item) <= max_late_s


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
                             "ts": str(final["delivered_at"]), "notification_id": nid,
                             "ttl": int(now + SENDS_TTL_S)}
        if final.get("plan_day"):
            plan = {k: final[k] for k in _PLAN_KEYS if k in final}
            # the planner's history: kept as long as fatigue and cooldowns look back, not the schedule item's ttl
            kept = int(when.timestamp()) + SENT_PLAN_TTL_DAYS * 86400
            plan["ttl"] = max(int(plan.get("ttl") or 0), kept)
            yield tables.PLANS, {**plan, "pk": uid, "sk": tables.plan_sk(str(final["plan_day"]), nid), "status": SENT,
                                 "sent_at": str(final["delivered_at"])}
    elif outcome == "dead_lettered":
        day = outcome_at[:10] or "unknown"
        yield tables.DEAD_LETTERS, {"pk": day, "sk": f"{outcome_at}#{nid}", "notification_id": nid, "user_id": uid,
                                    "campaign_id": cid, "attempts": attempt, "last_error": final.get("last_error"),
                                    "schedule_pk": final.get("pk"), "schedule_sk": final.get("sk"), "ttl": ttl}

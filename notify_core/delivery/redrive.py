"""Dead letters sent again once their cause is fixed: a receiver that was down, a credential put right.

The spec's retry policy (1 s, 5 s, 20 s, then a dead letter: requirement 4.1) gives a receiver 26 seconds, so
a webhook endpoint down for ten minutes dead-letters every notification due in those ten minutes, and nothing
sent them again: the ``dead_letters`` rows said which, for an operator with no way to act on them.

:func:`redrive` moves the dead-lettered schedule items of a window (by when they were dead-lettered, as the
``dead_letters`` table is laid out) back to ``retry_scheduled``, due now, with a retries index entry written
first (:func:`~notify_core.delivery.outcomes.retry_entry`, as the worker's own retries are), so the next
worker pass claims each as its next attempt: attempt ``n + 1`` with its own deliveries row, the same
``Idempotency-Key``, through the dedupe record it owns. Each gets the spec's retries again (1 s, 5 s,
20 s after a retryable failure: the ladder counts from the redrive,
:data:`~notify_core.delivery.outcomes.REDRIVEN_FROM`), as SQS's redrive resets a message's receive count:
one redriven while its receiver still flaps is not dead-lettered again by its first failure. The move is
the lifecycle's one operator move (:data:`notify_core.lifecycle.REDRIVE`), conditional on the item still
being dead-lettered at its attempt: a second redrive, or one run again after a ``kill -9``,
moves only what is still dead-lettered (a stale index entry from a killed run claims nothing).

:func:`dead_letters` lists a window's dead letters, each with its last error and its status now: what an
operator reads before a redrive (which failed and how) and after it (which were sent).

What is more than ``max_late_s`` past its send time is left as it is and counted: a worker would finish it
as suppressed ``too_late`` (:mod:`notify_core.delivery.claims`, Catching up), the window the plan chose
having passed.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta

from notify_core.clock import Clock, utcnow
from notify_core.delivery.outcomes import REDRIVEN_FROM, in_time, iso, retry_entry
from notify_core.errors import ValidationError
from notify_core.lifecycle import DEAD_LETTERED, REDRIVE
from notify_core.store import tables
from notify_core.store.port import Condition, Item, KeyRange, Store, Update

MAX_WINDOW = timedelta(days=7)  # the dead_letters rows' and the retries index's own horizon


@dataclass(frozen=True, slots=True)
class RedriveReport:
    dead_letters: int  # rows of the window (and campaign) read
    redriven: int  # moved back to retry_scheduled, due now
    too_late: int  # left: more than max_late_s past their send time
    not_dead: int  # no longer dead-lettered (redriven already, or the row outlived its item)

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def _rows(store: Store, since: datetime, until: datetime) -> Iterator[Item]:
    """The ``dead_letters`` rows dead-lettered in ``[since, until]``: one bounded query per UTC day."""
    table = store.table(tables.DEAD_LETTERS)
    day = since.date()
    while day <= until.date():
        yield from table.query(day.isoformat(), key_range=KeyRange(start=iso(since.timestamp()),
                                                                    end=iso(until.timestamp()) + "~"))
        day += timedelta(days=1)


def _window_rows(store: Store, *, since: datetime, until: datetime | None, campaign_id: str | None,
                 clock: Clock) -> Iterator[Item]:
    """The ``dead_letters`` rows of ``[since, until]`` (``until``: now), of ``campaign_id`` only if given; the
    window checked first: zoned, forwards, at most :data:`MAX_WINDOW`."""
    until = until or utcnow(clock)
    if since.tzinfo is None or until.tzinfo is None:
        raise ValidationError("since and until need a time zone (e.g. 2026-12-05T10:00Z)")
    if until < since or until - since > MAX_WINDOW:
        raise ValidationError(f"the window must run forwards and span at most {MAX_WINDOW.days} days")
    rows = _rows(store, since.astimezone(UTC), until.astimezone(UTC))
    return rows if campaign_id is None else (r for r in rows if r.get("campaign_id") == campaign_id)


def _schedule_key(row: Item) -> tuple[str, str] | None:
    pk, sk = row.get("schedule_pk"), row.get("schedule_sk")
    return (str(pk), str(sk)) if pk and sk else None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One ``dead_letters`` row, and what became of its notification since."""

    dead_lettered_at: str
    notification_id: str
    user_id: str
    campaign_id: str
    attempts: int  # the attempt that was dead-lettered
    last_error: str | None  # the channel's detail of that attempt (e.g. "HTTP 503")
    status: str | None  # the notification's status now: dead_lettered, or where a redrive took it; None: expired

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


LIST_CHUNK = 1000  # rows whose notifications' statuses are read in one batch


def dead_letters(store: Store, *, since: datetime, until: datetime | None = None, campaign_id: str | None = None,
                 clock: Clock) -> Iterator[DeadLetter]:
    """The notifications dead-lettered in ``[since, until]`` (of ``campaign_id`` only if given), oldest first,
    each with its status now: what an operator reads before a redrive (which failed, how, and whether a
    redrive already sent it). Read a chunk at a time, so a large outage's dead letters are never all in
    memory."""
    rows = _window_rows(store, since=since, until=until, campaign_id=campaign_id, clock=clock)
    schedules = store.table(tables.SCHEDULES)
    while chunk := list(itertools.islice(rows, LIST_CHUNK)):
        keyed = [(row, _schedule_key(row)) for row in chunk]
        keys = [key for _row, key in keyed if key is not None]
        status = {(str(i["pk"]), str(i["sk"])): i.get("status") for i in schedules.batch_get(keys, consistent=True)}
        for row, key in keyed:
            found = status.get(key) if key is not None else None
            yield DeadLetter(
                dead_lettered_at=str(row["sk"]).split("#", 1)[0], notification_id=str(row["notification_id"]),
                user_id=str(row.get("user_id") or ""), campaign_id=str(row.get("campaign_id") or ""),
                attempts=int(row.get("attempts") or 1),
                last_error=None if row.get("last_error") is None else str(row["last_error"]),
                status=None if found is None else str(found))


def redrive(store: Store, *, since: datetime, until: datetime | None = None, campaign_id: str | None = None,
            max_late_s: float, clock: Clock, dry_run: bool = False) -> RedriveReport:
    """Send again the notifications dead-lettered in ``[since, until]`` (``until``: now), of ``campaign_id``
    only if given; ``dry_run`` counts without moving anything."""
    now = clock.now()
    rows = list(_window_rows(store, since=since, until=until, campaign_id=campaign_id, clock=clock))
    keys = list(dict.fromkeys(key for key in map(_schedule_key, rows) if key is not None))
    schedules = store.table(tables.SCHEDULES)
    items = schedules.batch_get(keys, consistent=True)
    dead = [i for i in items if i.get("status") == DEAD_LETTERED]
    due = [i for i in dead if in_time(i, now=now, max_late_s=max_late_s)]
    moved = len(due)
    if due and not dry_run:
        (target,) = REDRIVE[DEAD_LETTERED]  # the lifecycle's one operator move
        store.table(tables.RETRIES).batch_put([retry_entry(i, failed=int(i.get("attempt") or 1), due=now)
                                               for i in due])  # the index first: never a stranded retry
        done = schedules.update_many([Update(
            i["pk"], i["sk"], set={"status": target, "next_attempt_at": now, "redriven_at": iso(now),
                                   REDRIVEN_FROM: int(i.get("attempt") or 1)},
            condition=Condition.matches(status=DEAD_LETTERED, attempt=i.get("attempt"))) for i in due])
        moved = sum(1 for d in done if d is not None)  # the others were moved meanwhile (another redrive)
    return RedriveReport(dead_letters=len(rows), redriven=moved, too_late=len(dead) - len(due),
                         not_dead=len(keys) - len(dead) + len(due) - moved)

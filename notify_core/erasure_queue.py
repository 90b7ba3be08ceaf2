"""The erasure queue: erasures begun and not yet finished, for the sweep to finish.

An erasure walks the tables not keyed by user, every file and every stored object version: seconds on one
box, far past an HTTP request's budget at the spec's 10M users. :func:`notify_core.erasure.erase_user` puts
the user here right after the register (Store table ``erasure_queue``), works under its deadline, and
takes the entry out only when it finished; a deadline run out, a kill -9 or a full disk leave it queued.
:func:`notify_core.erasure.sweep_erasures` then finishes every queued erasure in one pass over each table
and file, however many there are.

Unlike the register, an entry holds the user id in clear: the sweep must find the id in logs and JSON
lines, which a one-way pseudonym cannot do. It is held only while the user's data still is, and deleted
last. A module of its own, so that the code that only asks whether work is waiting (the Dagster sensor)
reaches this one table.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from datetime import datetime

from notify_core.erasure_register import ErasureRegister, erased_before, pseudonym
from notify_core.errors import ConditionFailedError
from notify_core.store import tables
from notify_core.store.port import Condition, Store


def queue_erasure(store: Store, user_id: str, *, erased_at: datetime) -> None:
    """Record that ``user_id``'s erasure (registered at ``erased_at``) is under way. A later erasure of the
    same user replaces the entry, so the sweep that took the earlier one out leaves it (:func:`dequeue`)."""
    store.table(tables.ERASURE_QUEUE).put({"pk": pseudonym(user_id), "sk": tables.ERASURE_QUEUE_SK,
                                           "user_id": user_id, "erased_at": erased_at.isoformat()})


def requeue_erased_since(store: Store, register: ErasureRegister, user_ids: Iterable[str]) -> list[str]:
    """Queue again, for the sweep, those of ``user_ids`` erased since ``register`` was read; returns them.

    For a run that read the register (and its inputs) first and then wrote rows of ``user_ids`` (batch
    ingestion, a plan run): an erasure that finished in between had nothing of those rows to delete, and
    the run wrote them back. An erasure records the register before it touches anything, so this read,
    after the run's last write, sees every erasure the run can have undone, on any backend and without a
    lock; the sweep (``erasure_sweep``, ``notify users sweep-erasures``) then erases those users again."""
    late = erased_before(store).newer_than(register)
    if not late:
        return []
    queued: list[str] = []
    for user in dict.fromkeys(user_ids):
        erased_at = late.erased_at(user)
        if erased_at is not None:
            queue_erasure(store, user, erased_at=erased_at)
            queued.append(user)
    return queued


def queued_erasures(store: Store) -> dict[str, str]:
    """Every queued erasure: user id -> ``erased_at`` as recorded (ISO, UTC)."""
    return {str(item["user_id"]): str(item["erased_at"]) for item in store.table(tables.ERASURE_QUEUE).scan()}


def has_queued_erasures(store: Store) -> bool:
    """Whether any erasure waits for the sweep (reads at most one item)."""
    return next(iter(store.table(tables.ERASURE_QUEUE).scan(segment_size=1)), None) is not None


def dequeue(store: Store, queued: Mapping[str, str]) -> int:
    """Take finished erasures (user id -> the ``erased_at`` they were queued with) out of the queue; returns
    how many went. An entry whose ``erased_at`` moved meanwhile (the user was erased again, maybe after new
    data came in) stays for the next sweep."""
    table = store.table(tables.ERASURE_QUEUE)
    removed = 0
    for user_id, erased_at in queued.items():
        try:
            table.delete(pseudonym(user_id), tables.ERASURE_QUEUE_SK, condition=Condition.matches(erased_at=erased_at))
        except ConditionFailedError:
            continue
        removed += 1
    return removed


class ErasingUsers:
    """The users whose erasure is under way, as a sender sees them: the queue re-read at most every
    ``interval`` s (one scan of a table that is almost always empty). The delivery worker stops their
    notifications at once, not when the sweep reaches their schedule items, which at the spec's scale can
    be an hour after the DELETE answered."""

    def __init__(self, store: Store, *, interval: float = 1.0) -> None:
        self._store, self.interval = store, interval
        self._ids: frozenset[str] = frozenset()
        self._read_at = float("-inf")

    def ids(self) -> frozenset[str]:
        now = time.monotonic()
        if now - self._read_at >= self.interval:
            self._ids = frozenset(queued_erasures(self._store))
            self._read_at = now
        return self._ids

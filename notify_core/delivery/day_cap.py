"""The send-time daily cap: at most ``MAX_PER_DAY`` notifications of one user's plan day are sent, whoever
planned them.

The planner keeps each plan under the cap, but two planners of the same user and day at once (``POST
/v1/schedules`` while the daily plan runs, or one invocation retried while the first still writes) each read
the day before the other wrote, so their plans added up: up to 10 schedule items, all sent. The delivery
worker is the one place every notification passes, so the cap is held there. A claimed notification takes
one of its day's ``MAX_PER_DAY`` numbered tokens: ``dedupe`` items pk ``cap#<user>#<plan day>``
(:func:`notify_core.store.tables.day_cap_pk`), sk ``"0"``..``"4"``, written with ``Condition.absent()`` and
naming the notification. A notification that finds every token held by others is not sent: the worker
finishes it ``suppressed``, reason ``daily_cap``. A re-claim after a crash and a retry find their own token.

A token is taken at the claim, so a notification that then fails for good still counts: the cap bounds
attempts, not successes. The tokens are numbered, so the user's own lower ``daily_cap`` holds at send time
too: once the profile is read, a notification holding token ``n >= daily_cap`` is suppressed
(:func:`notify_core.preferences.suppression_reason`), whoever planned it and whenever the user lowered the
cap. Cost per pass: one query per (user, day) (SQLite answers them
in one statement, DynamoDB several in flight) and one conditional write per claim.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

from notify_core.scheduling.models import MAX_PER_DAY
from notify_core.store import tables
from notify_core.store.port import Condition, Item, Table, Update

DAILY_CAP = "daily_cap"  # the suppression reason of a notification over the cap
UNCAPPED = -1  # the token of an item outside any day (no user or plan day): nothing to count it against
TOKEN_TTL_S = 2 * 86400  # outlives the plan day (a local day ends at most ~38 h after the UTC day starts)


class DayCap:
    """Takes the day's send tokens for claimed notifications (thread-safe under ``write_lock``)."""

    def __init__(self, table: Table, *, write_lock: contextlib.AbstractContextManager[Any],
                 limit: int = MAX_PER_DAY) -> None:
        self._table = table
        self._write_lock = write_lock
        self.limit = limit

    def take(self, items: Sequence[Item], *, now: float) -> list[int | None]:
        """Per claimed item: the number of the day's token it holds (taken now or before), or None when
        every token is held by other notifications. An item without a user or a plan day is not capped
        (:data:`UNCAPPED`)."""
        allowed: list[int | None] = [UNCAPPED] * len(items)
        pending: dict[str, list[int]] = {}
        for i, item in enumerate(items):
            user, day = item.get("user_id"), item.get("plan_day")
            if user and day:
                pending.setdefault(tables.day_cap_pk(str(user), str(day)), []).append(i)
        if not pending:
            return allowed
        held = self._table.query_many(list(pending), consistent=True)
        # Each round either settles every item or finds a token another worker took meanwhile; there are
        # only ``limit`` tokens to lose, so ``limit + 1`` rounds settle everything.
        for _ in range(self.limit + 1):
            updates: list[Update] = []
            asked: list[tuple[str, int]] = []
            for pk, indexes in pending.items():
                tokens = {str(t["sk"]): str(t.get("notification_id")) for t in held.get(pk, [])}
                owners = {nid: int(sk) for sk, nid in tokens.items()}
                free = [str(k) for k in range(self.limit) if str(k) not in tokens]
                for i in indexes:
                    item = items[i]
                    nid = str(item["notification_id"])
                    if nid in owners:
                        allowed[i] = owners[nid]
                        continue
                    if not free:
                        allowed[i] = None
                        continue
                    allowed[i] = int(free[0])
                    updates.append(Update(pk, free.pop(0), {
                        "notification_id": nid, "user_id": item["user_id"], "plan_day": item["plan_day"],
                        "campaign_id": item.get("campaign_id"), "taken_at": now, "ttl": int(now + TOKEN_TTL_S)},
                        Condition.absent()))
                    asked.append((pk, i))
            if not updates:
                break
            with self._write_lock:
                results = self._table.update_many(updates)
            lost: dict[str, list[int]] = {}
            for (pk, i), result in zip(asked, results, strict=True):
                if result is None:  # another worker took that token first: look again
                    lost.setdefault(pk, []).append(i)
            if not lost:
                break
            held.update(self._table.query_many(list(lost), consistent=True))
            pending = lost
        else:  # not reached (see above); if it were, an item without a token must not be sent
            for indexes in pending.values():
                for i in indexes:
                    allowed[i] = None
        return allowed

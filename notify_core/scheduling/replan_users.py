"""The users one user-vector update changed, kept in the Store for the re-plan that follows it.

An automated re-plan of a day already planned looks only at the users whose vectors changed since
(``notify_assets.scheduling.affected_users``). Their ids used to travel in the ``user_embeddings``
materialisation's Dagster metadata. Dagster's run storage (SQLite files, or PostgreSQL on Kubernetes)
cannot delete one user from an event log, so an erased user's id stayed there for as long as the run
history is kept. The ids are now items of the ``replan_users`` table, under a random set id, and the
metadata carries only that id and the count. The erasure removes a user's items like any other item that
names its ``user_id``; a set whose users were all erased, or that expired, reads as unknown, and the
re-plan then covers every user (the safe side).

The set id is random on purpose: a digest of the ids would be a pseudonym of a one-user set, and a
customer number is guessed from its digest in a moment.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection
from datetime import datetime, timedelta

from notify_core.store import tables
from notify_core.store.port import TTL_ATTRIBUTE, Store

# Far longer than a re-plan looks back (the user-vector updates since the day's last plan, today's and
# tomorrow's), so no set expires, even in part, while it can still be asked for.
SET_TTL = timedelta(days=7)


def record_changed_users(store: Store, user_ids: Collection[str], *, now: datetime) -> str:
    """Write ``user_ids`` as a new set and return its id (also for an empty set: "nobody changed")."""
    set_id = uuid.uuid4().hex
    expires = int((now + SET_TTL).timestamp())
    store.table(tables.REPLAN_USERS).batch_put(
        {"pk": set_id, "sk": user_id, "user_id": user_id, TTL_ATTRIBUTE: expires} for user_id in user_ids)
    return set_id


def changed_users(store: Store, set_id: str, *, count: int) -> list[str] | None:
    """The users of set ``set_id`` that ``count`` said it holds, or None when it cannot be read whole: the
    set is gone (expired, or every user in it erased; an erased user needs no plan, the others still do)."""
    users = [str(item["user_id"]) for item in store.table(tables.REPLAN_USERS).query(set_id, consistent=True)]
    return users if users or count == 0 else None

"""The notification lifecycle: every status a planned notification can be in, and who may move it where.

The planner (``scheduling.store.write_plans``) and the delivery worker (``delivery.worker``) both write
the status of the same schedule and plan items, from different processes; their conditional writes are
what keeps a notification from being sent twice or cancelled after it went out. This module is the one
place those statuses and moves are written down, so the two sides cannot drift apart.

::

    pending --claim--> claimed --sent--> sent
       |                  |  \\--retry--> retry_scheduled --claim--> claimed
       |                  |  \\--gave up--> dead_lettered
       |                  |  \\--already sent (idempotency key)--> duplicate
       |                  |  \\--the user opted out since it was planned--> suppressed
       |                  \\--lease expired, another worker claims--> claimed
       \\--re-plan drops it--> cancelled --re-plan brings it back--> pending

    dead_lettered --an operator's redrive, once the cause is fixed--> retry_scheduled

The planner owns ``pending`` and ``cancelled`` items (it may rewrite, move, cancel or revive them);
from the moment a worker claims one, the item is the worker's and a re-plan leaves it alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum

from notify_core.errors import NotifyError


class Status(StrEnum):
    PENDING = "pending"
    CLAIMED = "claimed"
    SENT = "sent"
    RETRY_SCHEDULED = "retry_scheduled"
    DEAD_LETTERED = "dead_lettered"
    DUPLICATE = "duplicate"
    CANCELLED = "cancelled"
    SUPPRESSED = "suppressed"  # claimed, then not sent: the user's preferences say no (notify_core.preferences)


PENDING, CLAIMED, SENT = Status.PENDING, Status.CLAIMED, Status.SENT
RETRY_SCHEDULED, DEAD_LETTERED = Status.RETRY_SCHEDULED, Status.DEAD_LETTERED
DUPLICATE, CANCELLED = Status.DUPLICATE, Status.CANCELLED
SUPPRESSED = Status.SUPPRESSED

TRANSITIONS: Mapping[Status, frozenset[Status]] = {
    PENDING: frozenset({CLAIMED, CANCELLED}),
    CANCELLED: frozenset({PENDING}),
    CLAIMED: frozenset({CLAIMED, SENT, RETRY_SCHEDULED, DEAD_LETTERED, DUPLICATE, SUPPRESSED}),
    RETRY_SCHEDULED: frozenset({CLAIMED}),
    SENT: frozenset(),
    DEAD_LETTERED: frozenset(),
    DUPLICATE: frozenset(),
    SUPPRESSED: frozenset(),
}
TERMINAL = frozenset(s for s, nexts in TRANSITIONS.items() if not nexts) | {CANCELLED}
# The one move no worker or planner makes: an operator sends dead letters again once their cause is fixed
# (notify_core.delivery.redrive). Apart from TRANSITIONS, so a dead letter stays final for everything else.
REDRIVE: Mapping[Status, frozenset[Status]] = {DEAD_LETTERED: frozenset({RETRY_SCHEDULED})}
PLANNER_OWNED = frozenset({PENDING, CANCELLED})
# What the planner counts as "went out" for fatigue and leaves untouched on a re-plan: a claimed item may
# already be on the wire, a sent one is. (retry_scheduled items are left alone too: the planner's
# conditional writes only ever match pending or cancelled ones.)
DELIVERED_STATES = frozenset({CLAIMED, SENT})


class InvalidTransition(NotifyError):
    """A status change the lifecycle does not allow (a bug, never a data error)."""


def can_move(old: str, new: str) -> bool:
    try:
        return Status(new) in TRANSITIONS[Status(old)]
    except ValueError:
        return False


def check_move(old: str, new: str) -> Status:
    """``new`` as a Status if ``old -> new`` is allowed, else :class:`InvalidTransition`."""
    if not can_move(old, new):
        raise InvalidTransition(f"a notification cannot go from {old!r} to {new!r}")
    return Status(new)

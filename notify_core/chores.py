"""Housekeeping a long-running process does on the side, a slice at a time, on its injected clock.

The delivery worker removes the embedded Store's expired rows (:mod:`notify_core.store.expiry`) and the
consuming member trims the embedded stream log (:class:`notify_core.stream.local_log.LocalLogConsumer`): both
are the same schedule, kept here once. A chore is first due ``first_after_s`` after the process starts (a
restart loop does not redo it at every start), then does at most ``per_call`` units of work a call; while a
call does a full slice it is due again at once (a backlog is worked off over the next passes), otherwise
``every_s`` later. A call the backend refuses (a full disk, a stuck writer) is logged and tried again
``every_s`` later: housekeeping never fails the work the process is there for.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from notify_core.clock import since
from notify_core.errors import NotifyError

log = logging.getLogger(__name__)


class SlicedChore:
    """``work(limit) -> units done`` on the schedule above. Not thread-safe: one caller."""

    def __init__(self, work: Callable[[int], int] | None, *, what: str, now: float, every_s: float,
                 first_after_s: float, per_call: int) -> None:
        self._work = work
        self._what = what
        self._every_s = every_s
        self._per_call = per_call
        self._since, self._wait = now, first_after_s  # due once ``_wait`` has passed since ``_since``
        self.removed = 0  # units done by this chore's calls so far

    def maybe_run(self, now: float) -> int:
        """One slice of the work if it is due at ``now``; returns the units done (0 when not due). A clock
        stepped back behind the last call makes it due (:func:`notify_core.clock.since`), not the step's
        length later."""
        if self._work is None or since(now, self._since) < self._wait:
            return 0
        try:
            done = int(self._work(self._per_call))
        except NotifyError as exc:
            log.warning(f"{self._what}: not done; tried again later", extra={"error": str(exc)})
            self._since, self._wait = now, self._every_s
            return 0
        self.removed += done
        self._since, self._wait = now, (0.0 if done >= self._per_call else self._every_s)
        if done:
            log.info(f"{self._what}: done", extra={"rows": done})
        return done

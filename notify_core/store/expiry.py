"""Expired items physically removed, regularly, by a process that runs anyway.

An item whose ``ttl`` has passed is absent for every read and condition (the Store port), whether or not the
backend has removed it. DynamoDB removes it on its own (its TTL sweeper, within ~48 h). The SQLite Store
does not: without a sweep, every TTL'd row (schedule items, plans, dedupe records and the day's send tokens,
deliveries, sends, retries, dead letters, the delivery cursor's minutes and heartbeats, re-plan sets) stays in
the file for good, and the file, its backups and every scan of those tables grow with each day of operation.

:class:`ExpirySweep` is that sweep's schedule: the delivery worker (the embedded default's long-running
process that writes most TTL'd rows) asks it on each pass; when one is due, it removes at most
``rows_per_call`` expired rows, comes back at once while a slice was full, then waits ``every_s``. A Store
without ``sweep_expired`` (DynamoDB) makes it a no-op. The clock is the Store's injected one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from notify_core.errors import NotifyError

log = logging.getLogger(__name__)

SWEEP_EVERY_S = 3600.0
"""How often a worker sweeps expired rows once the previous sweep is through (the shortest TTL is 24 h)."""

FIRST_SWEEP_AFTER_S = 300.0
"""A starting worker's first sweep waits this long: a restart loop does not sweep at every start."""

ROWS_PER_CALL = 20_000
"""Expired rows removed by one call at most (~0.1-0.2 s); a backlog is worked off over the next passes."""


class ExpirySweep:
    """When to call the Store's ``sweep_expired`` (see the module docstring). Not thread-safe: one caller."""

    def __init__(self, store: object, *, now: float, every_s: float = SWEEP_EVERY_S,
                 first_after_s: float = FIRST_SWEEP_AFTER_S, rows_per_call: int = ROWS_PER_CALL) -> None:
        sweep = getattr(store, "sweep_expired", None)
        self._sweep: Callable[..., int] | None = sweep if callable(sweep) else None
        self._every_s = every_s
        self._rows = rows_per_call
        self._next_at = now + first_after_s
        self.removed = 0  # rows removed by this sweep's calls so far

    def maybe_sweep(self, now: float) -> int:
        """Remove one slice of expired rows if a sweep is due at ``now``; returns the rows removed. A Store
        that refuses (a full disk, a stuck writer) is logged and tried again after ``every_s``."""
        if self._sweep is None or now < self._next_at:
            return 0
        try:
            removed = int(self._sweep(limit=self._rows))
        except NotifyError as exc:
            log.warning("expired rows not swept; tried again later", extra={"error": str(exc)})
            self._next_at = now + self._every_s
            return 0
        self.removed += removed
        self._next_at = now if removed >= self._rows else now + self._every_s
        if removed:
            log.info("expired rows swept", extra={"rows": removed})
        return removed

"""Expired items physically removed, regularly, by a process that runs anyway.

An item whose ``ttl`` has passed is absent for every read and condition (the Store port), whether or not the
backend has removed it. DynamoDB removes it on its own (its TTL sweeper, within ~48 h). The SQLite Store
does not: without a sweep, every TTL'd row (schedule items, plans, dedupe records and the day's send tokens,
deliveries, sends, retries, dead letters, the delivery cursor's minutes and heartbeats, re-plan sets) stays in
the file for good, and the file, its backups and every scan of those tables grow with each day of operation.

:class:`ExpirySweep` is that sweep on the schedule of :class:`notify_core.chores.SlicedChore`: the delivery
worker (the embedded default's long-running process that writes most TTL'd rows) asks it on each pass; when
one is due, it removes at most ``rows_per_call`` expired rows, comes back at once while a slice was full,
then waits ``every_s``. A Store without ``sweep_expired`` (DynamoDB) makes it a no-op.
"""

from __future__ import annotations

from notify_core.chores import SlicedChore

SWEEP_EVERY_S = 3600.0
"""How often a worker sweeps expired rows once the previous sweep is through (the shortest TTL is 24 h)."""

FIRST_SWEEP_AFTER_S = 300.0
"""A starting worker's first sweep waits this long: a restart loop does not sweep at every start."""

ROWS_PER_CALL = 20_000
"""Expired rows removed by one call at most (~0.1-0.2 s); a backlog is worked off over the next passes."""


class ExpirySweep(SlicedChore):
    """When to call the Store's ``sweep_expired`` (see the module docstring). Not thread-safe: one caller."""

    def __init__(self, store: object, *, now: float, every_s: float = SWEEP_EVERY_S,
                 first_after_s: float = FIRST_SWEEP_AFTER_S, rows_per_call: int = ROWS_PER_CALL) -> None:
        sweep = getattr(store, "sweep_expired", None)
        super().__init__((lambda limit: int(sweep(limit=limit))) if callable(sweep) else None,
                         what="expired rows sweep", now=now, every_s=every_s, first_after_s=first_after_s,
                         per_call=rows_per_call)

    def maybe_sweep(self, now: float) -> int:
        """Remove one slice of expired rows if a sweep is due at ``now``; returns the rows removed."""
        return self.maybe_run(now)

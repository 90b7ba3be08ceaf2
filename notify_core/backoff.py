"""The pause between retries of a failing backend call (a full disk, the Store or a broker away).

One owner for the schedule the long-running loops share (the consumer's batch and commit, its start, the
worker's claims): 0.1 s doubling to 5 s. Short enough that a brief outage costs little, long enough that an
outage of hours is one attempt and one log line every 5 s, not a spin. The loops wait on their stop event
for the pause, so a SIGTERM still ends them at once.
"""

from __future__ import annotations

FIRST_S = 0.1
CEILING_S = 5.0


class Backoff:
    """Successive pauses: ``next()`` returns the pause to wait now; ``reset()`` after a success."""

    def __init__(self, *, first_s: float = FIRST_S, ceiling_s: float = CEILING_S) -> None:
        self._first = first_s
        self._ceiling = ceiling_s
        self._next = first_s

    def next(self) -> float:
        pause, self._next = self._next, min(self._next * 2, self._ceiling)
        return pause

    def reset(self) -> None:
        self._next = self._first

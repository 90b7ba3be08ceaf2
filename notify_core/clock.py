"""Time as a dependency: the one place in notify_core that reads the wall clock.

Every domain function that needs "now" takes a :class:`Clock` (keyword ``clock=``) or an explicit
``now``; entry points (CLI, handlers, assets, sensors, the worker) pass :data:`SYSTEM_CLOCK`. Tests pick
their own "now" with :class:`ManualClock`, so no test depends on today's date, and the demo's
fast-forward is an :class:`OffsetClock`. Durations use ``time.monotonic``/``perf_counter`` directly:
they measure intervals, not dates.
"""

from __future__ import annotations

import math
import threading
import time
from datetime import UTC, date, datetime
from typing import Protocol, runtime_checkable


@runtime_checkable
class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the epoch (UTC)."""
        ...

    def sleep(self, seconds: float) -> None: ...


def utcnow(clock: Clock) -> datetime:
    """The clock's time as an aware UTC datetime."""
    return datetime.fromtimestamp(clock.now(), UTC)


def today(clock: Clock) -> date:
    """The clock's UTC calendar day."""
    return utcnow(clock).date()


class SystemClock:
    """The wall clock. Only entry points construct it (or use :data:`SYSTEM_CLOCK`)."""

    def now(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)


SYSTEM_CLOCK: Clock = SystemClock()


def since(now: float, then: float) -> float:
    """Seconds from ``then`` to ``now`` on the clock, for a periodic step (a cache's age, a bucket's refill, the
    next re-read): a clock stepped back behind ``then`` (an NTP step, a VM restored from a snapshot) counts as
    ``inf``, a period already over. Plain ``now - then`` is negative there, and what waited on it waited for
    the step's whole length: every API key answered 429 for an hour after a step back of an hour, a revoked key
    stayed in the check's cache, a rotated key ring was not read again."""
    return now - then if now >= then else math.inf


class ManualClock:
    """A clock that moves only when told (``advance``/``sleep``): retry delays become exact numbers.

    ``start`` may be epoch seconds or an aware datetime; without it the clock starts at the wall clock's
    time (for tests that only need time to stand still, not a particular date)."""

    def __init__(self, start: float | datetime | None = None) -> None:
        if isinstance(start, datetime):
            start = start.timestamp()
        self._now = time.time() if start is None else float(start)
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            return self._now

    def sleep(self, seconds: float) -> None:
        self.advance(max(0.0, seconds))

    def advance(self, seconds: float) -> float:
        with self._lock:
            self._now += seconds
            return self._now

    def set(self, when: float | datetime) -> None:
        with self._lock:
            self._now = when.timestamp() if isinstance(when, datetime) else float(when)


_ANCHORS: dict[float, float] = {}
_ANCHORS_LOCK = threading.Lock()


def starting_at(when: datetime | None, *, frozen: bool = False) -> Clock:
    """The system clock, or (``when`` given) a clock that reads ``when`` the first time this process asks
    for it and then moves with real time: what ``NOTIFY_CLOCK_START`` gives tests, replays and demos.

    The offset is fixed once per process and instant, so every stage of one run (the Store's TTL checks,
    the planner, the worker) agrees on the time, and sleeps, leases and retries behave as in production.
    ``frozen`` (``NOTIFY_CLOCK_FROZEN``): a new :class:`ManualClock` standing at ``when`` for each caller,
    so what a run decides (which plan minutes a delivery pass reaches) cannot depend on how long its
    earlier steps took: two replays of the same data on different backends write the same rows."""
    if when is None:
        return SYSTEM_CLOCK
    key = (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()
    if frozen:
        return ManualClock(key)
    with _ANCHORS_LOCK:
        offset = _ANCHORS.setdefault(key, key - time.time())
    return OffsetClock(offset)


class OffsetClock:
    """Another clock shifted by ``offset_s``: the demo's fast-forward (deliver what is due in the next N
    minutes now) and the benchmark's "the minute starts in 5 s" without waiting for a real boundary."""

    def __init__(self, offset_s: float, *, base: Clock | None = None) -> None:
        self.offset_s = float(offset_s)
        self._base = base or SYSTEM_CLOCK

    def now(self) -> float:
        return self._base.now() + self.offset_s

    def sleep(self, seconds: float) -> None:
        self._base.sleep(seconds)

"""Time as a dependency: the worker asks a Clock, so tests can step through retry delays exactly."""

from __future__ import annotations

import threading
import time
from typing import Protocol, runtime_checkable


@runtime_checkable
class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the epoch (UTC)."""
        ...

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def now(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)


class ManualClock:
    """A clock that moves only when told (``advance``/``sleep``): retry delays become exact numbers."""

    def __init__(self, start: float | None = None) -> None:
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

    def set(self, when: float) -> None:
        with self._lock:
            self._now = float(when)


class OffsetClock:
    """System time shifted by ``offset_s``: the demo's fast-forward (deliver what is due in the next N
    minutes now) and the benchmark's "the minute starts in 5 s" without waiting for a real boundary."""

    def __init__(self, offset_s: float) -> None:
        self.offset_s = float(offset_s)

    def now(self) -> float:
        return time.time() + self.offset_s

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)

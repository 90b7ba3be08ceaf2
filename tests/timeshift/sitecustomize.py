"""Loaded (through PYTHONPATH) only by ``make test-timeshift``, in every Python process of the run.

libfaketime 0.9.10 with ``FAKETIME_DONT_FAKE_MONOTONIC=1`` (needed: with a faked monotonic clock every
timed wait - ``Event.wait``, ``Queue.get`` - waits for years) answers
``clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME)``, which ``time.sleep`` uses, with EINVAL. ``select``
with a timeout is not intercepted and sleeps correctly, so ``time.sleep`` sleeps through it here. The
code under test is unchanged: only how the interpreter waits out a sleep.
"""

from __future__ import annotations

import select
import time

_monotonic = time.monotonic


def _sleep(seconds: float) -> None:
    if seconds < 0:
        raise ValueError("sleep length must be non-negative")
    deadline = _monotonic() + seconds
    while (left := deadline - _monotonic()) > 0:
        select.select([], [], [], left)


try:
    time.sleep(0)
    time.sleep(0.001)
except OSError:  # the libfaketime bug above: replace the sleep; a healthy interpreter keeps its own
    time.sleep = _sleep

"""Loaded (through PYTHONPATH) only by ``make test-timeshift``, in every Python process of the run.

libfaketime 0.9.10 with ``FAKETIME_DONT_FAKE_MONOTONIC=1`` (needed: with a faked monotonic clock every
timed wait - ``Event.wait``, ``Queue.get`` - waits for years) answers
``clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME)``, which ``time.sleep`` uses, with EINVAL. ``select``
with a timeout is not intercepted and sleeps correctly, so ``time.sleep`` sleeps through it here. The
code under test is unchanged: only how the interpreter waits out a sleep.

Under libfaketime the environment is written through :mod:`faketime_environ` too: libfaketime reads it from
every thread that waits for the GIL, and glibc's ``setenv`` could free the array under that read.
"""

from __future__ import annotations

import os
import select
import time

import faketime_environ

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

if "faketime" in os.environ.get("LD_PRELOAD", ""):
    faketime_environ.install()

"""A child process that must not outlive the process that started it.

Three children of Notify write beside state their parent owns: Litestream (replicating a database that
may be restored next), the stream's decoding process (its results are only ever read by the consumer)
and the plan writer process (writing a chunk the re-run will write again). A ``kill -9`` of the parent
skips every cleanup, so each child guards itself, with one of two mechanisms kept here, once:

* :func:`set_parent_death_signal`: the kernel sends the child a signal when its parent dies (Linux
  ``PR_SET_PDEATHSIG``). It survives ``exec``, so it also guards a binary started with ``preexec_fn``.
* :func:`exit_when_orphaned`: a daemon thread that polls the parent pid, for Python children, where
  ``prctl`` is missing and as a second guard beside it.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import threading
import time

ORPHAN_CHECK_S = 0.5  # how often exit_when_orphaned looks: the longest an orphan outlives its parent
_PR_SET_PDEATHSIG = 1


def set_parent_death_signal(signum: signal.Signals) -> None:
    """Have the kernel send ``signum`` to this process when its parent dies (Linux only; elsewhere a no-op,
    so callers that need the guard everywhere also call :func:`exit_when_orphaned`)."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signum, 0, 0, 0)


def exit_when_orphaned(parent_pid: int, *, code: int) -> None:
    """Exit with ``code`` (no cleanup: ``os._exit``) once the parent is gone, checked now and every
    :data:`ORPHAN_CHECK_S` from a daemon thread."""
    if os.getppid() != parent_pid:  # the parent died before the guard was set
        os._exit(code)

    def watch() -> None:
        while True:
            time.sleep(ORPHAN_CHECK_S)
            if os.getppid() != parent_pid:
                os._exit(code)

    threading.Thread(target=watch, daemon=True, name="notify-orphan-watch").start()

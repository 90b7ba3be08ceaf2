"""The `notify` command-line interface."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TypeVar

import typer

from notify_core.backoff import Backoff
from notify_core.errors import BackendError, DatabaseReplacedError, NotifyError

T = TypeVar("T")
log = logging.getLogger("notify_cli")

REFUSED = 2
"""Exit code of a command that refused (a bad setting or argument, a condition not met: `notify backup` over a
wiped data directory, `notify restore` while the Store is open): running it again as it is fails again, so a
supervisor does not restart it (the systemd units' ``RestartPreventExitStatus``)."""

STOPPED_UNFINISHED = 75
"""Exit code (sysexits' EX_TEMPFAIL) of a command that could not finish because a backend refused or was away
(the Store's disk full, DynamoDB or a broker unreachable), and of a long-running one stopped (SIGTERM) while
that lasted: `notify consume` gave its failing batch up uncommitted, `notify worker` left writes unmade.
Nothing acknowledged is lost (the batch is read again, the sends re-sent under the same idempotency key once
their lease ends); the same command succeeds once the backend is back, and a supervisor restarts it."""


def exit_code(exc: NotifyError) -> int:
    """The one mapping from the error hierarchy to exit codes: a backend away is temporary, the rest refusals."""
    return STOPPED_UNFINISHED if isinstance(exc, BackendError) else REFUSED


def fail(exc: NotifyError) -> typer.Exit:
    """``error: <reason>`` on stderr, and the exit to raise: one line, never a traceback."""
    typer.echo(f"error: {exc}", err=True)
    return typer.Exit(exit_code(exc))


def until_started(make: Callable[[], T], *, stop: threading.Event, what: str) -> T | None:
    """``make()`` until it succeeds, or None once ``stop`` is set meanwhile.

    A long-running command that cannot open its backend at start (the Store's or the log's disk full, DynamoDB
    or a broker unreachable: ``BackendError``) tries again after a :class:`~notify_core.backoff.Backoff` pause,
    one warning line each. Before, it ended with exit 1 or 75 and its supervisor started it again every 5 s: a
    crash loop of Python starts for as long as the disk stayed full. A file replaced under the process
    (``DatabaseReplacedError``) and any other error are raised: no retry changes them."""
    pauses = Backoff()
    while True:
        try:
            return make()
        except DatabaseReplacedError:
            raise
        except BackendError as exc:
            pause = pauses.next()
            log.warning(f"{what} could not start, retrying", extra={"error": str(exc), "retry_in_s": pause})
            if stop.wait(pause):
                return None

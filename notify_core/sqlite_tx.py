"""One way to run a SQLite write transaction, shared by the SQLite Store and the embedded log."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

from notify_core.errors import BackendError


@contextmanager
def write_transaction(conn: sqlite3.Connection, *, what: str, immediate: bool = True) -> Iterator[None]:
    """BEGIN (IMMEDIATE: take the write lock now, so a read-check-write inside is atomic across threads
    and processes) ... COMMIT; ROLLBACK on any exception. SQLite errors become ``BackendError`` naming
    ``what``; other exceptions (a failed condition, say) pass through unchanged after the rollback."""
    try:
        conn.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
        try:
            yield
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    except sqlite3.Error as exc:
        raise BackendError(f"{what} failed: {exc}") from exc

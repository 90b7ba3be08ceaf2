"""The `notify` command-line interface."""

STOPPED_UNFINISHED = 75
"""Exit code (sysexits' EX_TEMPFAIL) of a long-running command stopped (SIGTERM) while the Store refused its
writes, a full disk say: `notify consume` gave its failing batch up uncommitted, `notify worker` left writes
unmade. Nothing acknowledged is lost (the batch is read again, the sends re-sent under the same idempotency
key once their lease ends); a supervisor restarts it once the Store takes writes again."""

"""Whether each database's replica keeps up with it: what says a backup is failing while Litestream runs.

Litestream retries a replica it cannot write (the target's disk full, S3 credentials revoked, the bucket
gone) for ever, saying so only in its own log; its metrics count the local syncs, which go on succeeding.
``notify backup`` restarted Litestream when it exited and otherwise took it as working: with the target's
disk full, the Store's replica stayed empty for as long as it ran, and nothing but Litestream's log said so
(the failure that shows on the day of the restore).

Litestream names every LTX file it writes by the transaction ids it holds (``<min>-<max>.ltx``, the ids in
hex), in its folder beside the database (``.<name>-litestream/ltx/<level>/``) as it stages them and on the
replica as it uploads them (``<name>/ltx/<level>/`` in a folder, ``<name>/<level as 4 hex digits>/`` on S3).
The database's newest transaction is the highest id among the local files, the replica's the highest among
the target's: while the first is ahead, the replica is behind. A replica behind for longer than
:data:`BEHIND_ALERT_S` is logged as an error once (with Litestream's last error line), and once more when it
has caught up; ``notify_backup_replica_behind_seconds{database}`` says for how long, for the
``NotifyBackupReplicaBehind`` alert.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from prometheus_client import Gauge

from notify_core.backup.target import BlobStore
from notify_core.clock import Clock
from notify_core.errors import NotifyError

log = logging.getLogger(__name__)

BEHIND_ALERT_S = 60.0
"""How long a replica may trail its database before it is an error: Litestream uploads every 200 ms here, so
a minute is a failure, not a slow upload (a first snapshot of a large Store included: 1M users' 1.2 GB took
16 s to restore, about as long as to upload on the same disk)."""

REPLICA_BEHIND = Gauge("notify_backup_replica_behind_seconds",
                       "How long the database's replica has been behind it (0: caught up)", ["database"])
FILES_BEHIND = Gauge("notify_backup_files_behind_seconds",
                     "How long the file snapshots (lake, landing, artefacts) have been failing (0: the last worked)")

_LTX = re.compile(r"(?:^|/)([0-9a-f]{16})-([0-9a-f]{16})\.ltx$")
_ERROR_LINE = re.compile(r"level=ERROR .*")


def newest_txid(names: Iterable[str]) -> int:
    """The highest transaction id the LTX files ``names`` hold (0: none)."""
    newest = 0
    for name in names:
        match = _LTX.search(name)
        if match is not None:
            newest = max(newest, int(match.group(2), 16))
    return newest


def local_ltx_files(database: Path) -> Iterator[str]:
    """The LTX files Litestream staged for ``database`` (its ``.<name>-litestream/ltx`` folder)."""
    root = database.with_name(f".{database.name}-litestream") / "ltx"
    for folder, _dirs, files in os.walk(root):
        for name in files:
            yield f"{folder}/{name}"


def last_error(log_path: Path, *, tail_bytes: int = 65536) -> str | None:
    """Litestream's last ``level=ERROR`` line in its log (the end of the file only), for the operator."""
    try:
        with log_path.open("rb") as fh:
            fh.seek(max(fh.seek(0, os.SEEK_END) - tail_bytes, 0))
            tail = fh.read().decode(errors="replace")
    except OSError:
        return None
    found = _ERROR_LINE.findall(tail)
    return found[-1][:500] if found else None


class ReplicaLag:
    """Per database, since when (the clock's time) its replica has been behind it; see the module doc."""

    def __init__(self, *, databases: Mapping[str, Path], blobs: BlobStore, clock: Clock, litestream_log: Path,
                 alert_after_s: float = BEHIND_ALERT_S) -> None:
        self._databases = dict(databases)
        self._blobs = blobs
        self._clock = clock
        self._log = litestream_log
        self._alert_after = alert_after_s
        self._behind_since: dict[str, float] = {}
        self._alerted: set[str] = set()
        for name in self._databases:
            REPLICA_BEHIND.labels(name).set(0)

    def check(self) -> dict[str, float]:
        """Look at each replica once: the seconds it has been behind its database (0: caught up)."""
        now = self._clock.now()
        behind: dict[str, float] = {}
        for name, database in self._databases.items():
            try:
                replica = newest_txid(self._blobs.list(f"{name}/"))  # ltx/<level>/ in a folder, <level:04x>/ on S3
            except NotifyError as exc:  # the target unreachable: as good as behind (it is not receiving)
                log.warning("backup replica unreadable", extra={"database": name, "error": str(exc)})
                replica = -1
            local = newest_txid(local_ltx_files(database))
            if replica >= local:
                behind[name] = 0.0
                self._behind_since.pop(name, None)
                if name in self._alerted:
                    self._alerted.discard(name)
                    log.warning("backup replica caught up", extra={"database": name, "txid": replica})
            else:
                # a clock stepped back behind the spell's start restarts it (the gauge never goes negative)
                since = self._behind_since[name] = min(self._behind_since.get(name, now), now)
                behind[name] = now - since
                if behind[name] >= self._alert_after and name not in self._alerted:
                    self._alerted.add(name)
                    log.error("backup replica behind its database: its changes are not reaching the target",
                              extra={"database": name, "seconds": round(behind[name], 1), "txid": local,
                                     "replica_txid": max(replica, 0), "litestream_error": last_error(self._log),
                                     "litestream_log": str(self._log)})
            REPLICA_BEHIND.labels(name).set(behind[name])
        return behind

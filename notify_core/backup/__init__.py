"""Backups and disaster recovery for the embedded default (``notify backup`` / ``notify restore``).

:mod:`.service` decides what is backed up and how it comes back; :mod:`.litestream` drives Litestream
for the SQLite files; :mod:`.files` snapshots the lake, landing and artefact folders by content;
:mod:`.target` parses the target URL (a folder or an S3-compatible bucket).
"""

from notify_core.backup.files import BackupIntegrityError
from notify_core.backup.service import (
    BackupPlan,
    BackupService,
    ReplicaExistsError,
    RestoreReport,
    StreamLogBehindError,
    plan_backup,
)
from notify_core.backup.target import BackupTarget

__all__ = [
    "BackupIntegrityError",
    "BackupPlan",
    "BackupService",
    "BackupTarget",
    "ReplicaExistsError",
    "RestoreReport",
    "StreamLogBehindError",
    "plan_backup",
]

"""Right to erasure: remove one user from every place Notify keeps data about them.

``notify users delete ID`` calls :func:`erase_user`, which removes the user from

* **every Store table that holds users' items** (:data:`notify_core.store.tables.USER_ITEMS`, each with its
  key rule; every table is in it or in ``NO_USER_ITEMS``, so a table added later is not forgotten): an item
  goes if its ``user_id`` attribute is the user (event ledger, dedupe, deliveries, retries, dead letters,
  re-plan sets) or, by its table's rule, its partition key is the user id (profile, purchases, features,
  matrix, user events, sends, plans, fatigue) or ``user#<id>`` (the user's vector), or its sort key is
  ``<id>#<notification id>`` (schedule items); tracking markers of the user's notifications go with their
  deliveries. Products, campaigns and the other tables are never matched by key: a product whose id equals
  the user's went with the user before. On SQLite, expired items are swept first, deletes are
  ``secure_delete`` (freed pages zeroed) and the WAL is checkpointed, so no copy stays in the file;
* **every Parquet file** under the lake (users, purchases, features, matrix, ``embeddings_user`` and the
  other vector tables: rows whose ``user_id``, or for user vectors ``id``, is the user), rewritten
  atomically;
* **landing and quarantine files** (CSV and Parquet), so a re-ingest cannot bring the user back;
* **JSON-lines files** (the outbox, logs): lines naming the user;
* in aws, the same **objects under the S3 prefix** (lake, landing, quarantine), in every stored version:
  the bucket is versioned, so a rewrite alone would leave the old copy as a noncurrent version; and their
  copies in the **replica bucket** (S3 replication never replicates a version delete);
* the **embedded stream log**: messages keyed by the user.

Kafka topics cannot delete single records: they age out with the topic's retention (documented, not
done here). The caller passes ``audit``: the audit log's ``record`` once it exists (see the call site).
Which paths the user's data can be written to is :func:`erasure_paths`' list (the CLI and the Lambda use it).

**The erasure register** (:mod:`notify_core.erasure_register`). The erasure first records the user's
pseudonym and the time, so that the source export, a landing drop, a Kafka topic or an old backup cannot
bring them back; :func:`reapply_register` makes a restored Store (a local backup, a DynamoDB point-in-time
restore) honour it again. The erasure also deletes
the sync-ledger entries (``notify_core.convergence``) of the tables it changed, so the next run compares
them again.
"""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Protocol

import polars as pl

from notify_core.clock import SYSTEM_CLOCK, Clock, ManualClock, utcnow
from notify_core.erasure_register import ErasureRegister, pseudonym, register_erasure, restore_register
from notify_core.errors import ValidationError
from notify_core.security.files import FILE_MODE
from notify_core.store import tables
from notify_core.store.port import Item, Store, Table

if TYPE_CHECKING:
    from notify_core.s3_objects import ObjectVersion
    from notify_core.settings import NotifySettings

log = logging.getLogger(__name__)

AuditHook = Callable[[str, Mapping[str, Any]], None]
_ID_COLUMNS = ("user_id",)
_VECTOR_TABLE = "embeddings_user"  # rows keyed by ``id`` = the user id


@dataclass
class ErasureReport:
    user_id: str
    pseudonym: str = ""  # the erasure register's key for the user: what the audit entry and the log name
    store_rows: dict[str, int] = field(default_factory=dict)
    file_rows: dict[str, int] = field(default_factory=dict)
    stream_messages: int = 0
    erased_at: str = ""  # ISO UTC, as recorded in the erasure register
    ledger_entries_cleared: int = 0  # sync-ledger partitions to compare again (not user rows: not in total)
    object_versions_deleted: int = 0  # stored versions that held the user, deleted for good (S3)
    replica_versions_deleted: int = 0  # the same in the replica bucket (S3 replication does not replicate them)

    def as_dict(self) -> dict[str, Any]:
        return {"user_id": self.user_id, "store_rows": self.store_rows, "file_rows": self.file_rows,
                "stream_messages": self.stream_messages, "total": self.total, "erased_at": self.erased_at,
                "ledger_entries_cleared": self.ledger_entries_cleared,
                "object_versions_deleted": self.object_versions_deleted,
                "replica_versions_deleted": self.replica_versions_deleted}

    @property
    def total(self) -> int:
        return sum(self.store_rows.values()) + sum(self.file_rows.values()) + self.stream_messages


def reapply_register(store: Store, register: ErasureRegister, *, file_roots: Iterable[Path] = (),
                     object_areas: Iterable[ObjectArea] = (), replica_areas: Iterable[ObjectArea] = (),
                     stream_log: Any = None) -> list[str]:
    """Make a Store restored from before some erasures honour them again: write ``register`` back
    (:func:`restore_register`), then erase every registered user the restored data still holds, keeping each
    entry's own ``erased_at`` (a restore is not a new erasure: what the user did after it stays theirs).

    The register holds pseudonyms only, so the restored users are found by hashing the ids in the tables that
    name every user (profiles, purchases, user events) and in the Parquet files under ``file_roots`` (a file
    snapshot can be older than the Store's replica). Each is erased from ``object_areas`` and
    ``replica_areas`` too (a DynamoDB point-in-time restore leaves the bucket as it is, so that finds nothing
    unless a writer raced the erasure). Returns the ids of the users erased again (for the restore's report:
    the caller must not log them)."""
    restore_register(store, register)
    if not register.entries:
        return []
    roots, objects, replicas = tuple(file_roots), tuple(object_areas), tuple(replica_areas)
    ids: set[str] = set()
    for name in (tables.USERS, tables.PURCHASES, tables.USER_EVENTS):
        ids.update(str(item["pk"]) for item in store.table(name).scan())
    for root in roots:
        for path in sorted(root.rglob("*.parquet")) if root.is_dir() else ():
            if not path.is_symlink() and "user_id" in pl.read_parquet_schema(path):
                ids.update(str(u) for u in pl.read_parquet(path, columns=["user_id"])["user_id"].unique()
                           if u is not None)
    erased = sorted(u for u in ids if register.erased_at(u) is not None)
    for user_id in erased:
        when = register.erased_at(user_id)
        assert when is not None  # the filter above
        erase_user(user_id, store=store, file_roots=roots, object_areas=objects, replica_areas=replicas,
                   stream_log=stream_log, actor="restore", clock=ManualClock(when))
    return erased


def erasure_paths(settings: NotifySettings) -> tuple[Path, ...]:
    """Every configured local path a user's data can be written to: the one list the erasure walks (the CLI,
    the Lambda). Folders are walked; a file named here (the outbox) is rewritten whatever its suffix. A path
    inside another one on the list is not repeated. The embedded stream log is erased through its own API."""
    candidates = [settings.data_dir, settings.landing, settings.outbox]
    paths: list[Path] = []
    for path in candidates:
        resolved = path.resolve()
        if any(resolved == p.resolve() or p.resolve() in resolved.parents for p in paths):
            continue
        paths.append(path)
    return tuple(paths)


def belongs_to(item: Mapping[str, Any], user_id: str, *, rule: tables.UserKey) -> bool:
    """Whether an item of a table with key ``rule`` (:data:`notify_core.store.tables.USER_ITEMS`) is about
    ``user_id``. The key rules are the table's own: a product or a campaign whose id equals a user id is
    not that user's (``NOTIFICATION`` is decided by the caller, from the user's notifications)."""
    if item.get("user_id") == user_id:
        return True
    if rule is tables.UserKey.PK:
        return item.get("pk") == user_id
    if rule is tables.UserKey.VECTOR_PK:
        return item.get("pk") == f"user#{user_id}"
    if rule is tables.UserKey.SK:  # the whole key, not a prefix: "a#" is also how user "a#b"'s keys start
        return item.get("sk") == tables.schedule_sk(user_id, str(item.get("notification_id", "")))
    return False


def _candidates(table: Table, user_id: str, *, rule: tables.UserKey) -> Iterable[Item]:
    """The items that can be the user's: their own partition where the table is keyed by user (a query:
    purchases and the matrix are ~90 % of a store's rows, and scanning them made one erasure cost 6.4 s on
    the demo's 745k rows, hours at the spec's 10M users), otherwise the whole table."""
    if rule is tables.UserKey.PK:
        return table.query(user_id)
    if rule is tables.UserKey.VECTOR_PK:
        return table.query(f"user#{user_id}")
    return table.scan()


def _table_names(store: Store) -> list[str]:
    """The tables of :data:`~notify_core.store.tables.USER_ITEMS`, in its order. On SQLite only those the
    file holds (a missing one holds nobody; opening it would create it). DynamoDB is not asked: listing
    tables takes ``dynamodb:ListTables`` on every table of the account, which no role here has, and the
    templates create every table."""
    lister = getattr(store, "table_names", None)
    present = set(lister()) if lister is not None else None
    return [name for name in tables.USER_ITEMS if present is None or name in present]


def clear_stale_ledger(store: Store, changed_tables: Iterable[str]) -> int:
    """Delete the sync-ledger entries (``notify_core.convergence``) of every table the erasure removed rows
    from, so the next run compares those tables row by row (once: reads, and writes only what differs)
    instead of trusting digests of rows that are gone; returns how many entries were deleted.

    Whole tables, not just the partitions the user was in: the partition names are the lake's to define,
    and a module that reached the lake here would give the erasure Lambda S3 access it does not need."""
    ledger = store.table(tables.SYNC_LEDGER)
    cleared = 0
    for table in sorted(set(changed_tables)):
        for entry in list(ledger.query(table)):
            ledger.delete(str(entry["pk"]), str(entry["sk"]))
            cleared += 1
    return cleared


def erase_from_store(store: Store, user_id: str, *, compact: bool = True) -> dict[str, int]:
    """Delete every item about the user from every table that holds users' items; returns rows deleted per
    table. The sync-ledger entries of the tables it changed go too (:func:`clear_stale_ledger`). ``compact``
    (SQLite) also rebuilds the file afterwards, so not even a B-tree divider key is left."""
    return _erase_store(store, user_id, compact=compact)[0]


def _erase_store(store: Store, user_id: str, *, compact: bool) -> tuple[dict[str, int], int]:
    """:func:`erase_from_store`, and how many sync-ledger entries it cleared."""
    for hook in ("sweep_expired", "secure_delete"):
        fn = getattr(store, hook, None)
        if fn is not None:
            fn()
    deleted: dict[str, int] = {}
    notifications: set[str] = set()
    for name in _table_names(store):
        rule = tables.USER_ITEMS[name]
        table = store.table(name)
        if rule is tables.UserKey.NOTIFICATION:  # markers carry no user id, only the notification
            doomed = [(str(i["pk"]), str(i["sk"]), i) for i in table.scan() if str(i["pk"]) in notifications]
        else:
            doomed = [(str(i["pk"]), str(i["sk"]), i) for i in _candidates(table, user_id, rule=rule)
                      if belongs_to(i, user_id, rule=rule)]
        for pk, sk, item in doomed:
            table.delete(pk, sk)
            if item.get("notification_id"):
                notifications.add(str(item["notification_id"]))
        if doomed:
            deleted[name] = len(doomed)
    cleared = clear_stale_ledger(store, deleted)
    finish = getattr(store, "vacuum" if compact else "checkpoint", None)
    if finish is not None:
        finish()
    return deleted, cleared


def _rewrite_private(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.erase.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _erase_frame(frame: pl.DataFrame, user_id: str, *, vector_table: bool) -> pl.DataFrame:
    columns = [c for c in _ID_COLUMNS if c in frame.columns]
    if vector_table and "id" in frame.columns:
        columns.append("id")
    if not columns:
        return frame
    hit = pl.any_horizontal([pl.col(c).cast(pl.String) == user_id for c in columns]).fill_null(False)
    return frame.filter(~hit)


def _kind(name: str, *, named: bool = False) -> str | None:
    """How a file or object is read: ``parquet``, ``csv``, ``jsonl`` (JSON lines, logs, and a file the
    settings name, such as the outbox, whatever its suffix), or None (not data: left alone)."""
    suffix = PurePosixPath(name).suffix.lower()
    if suffix in (".parquet", ".csv"):
        return suffix[1:]
    return "jsonl" if suffix in (".jsonl", ".json", ".log") or named else None


def _without_user(data: bytes, *, kind: str, user_id: str, vector_table: bool) -> tuple[bytes, int]:
    """``data`` without the user's rows, and how many were removed (0: ``data`` itself, nothing to write).

    The one eraser of a file's bytes, for local files and for objects alike."""
    if kind == "jsonl":
        needle = json.dumps(user_id).encode()  # the id as a JSON string, quotes included: no partial matches
        lines = data.splitlines(keepends=True)
        kept = [line for line in lines if needle not in line]
        removed = len(lines) - len(kept)
        return (b"".join(kept) if removed else data), removed
    frame = pl.read_parquet(io.BytesIO(data)) if kind == "parquet" else pl.read_csv(io.BytesIO(data),
                                                                                      infer_schema=False)
    kept_frame = _erase_frame(frame, user_id, vector_table=vector_table)
    removed = frame.height - kept_frame.height
    if not removed:
        return data, 0
    if kind == "csv":
        return kept_frame.write_csv().encode(), removed
    buffer = io.BytesIO()
    kept_frame.write_parquet(buffer)
    return buffer.getvalue(), removed


def erase_from_files(roots: Iterable[Path], user_id: str) -> dict[str, int]:
    """Remove the user's rows from every Parquet, CSV and JSON-lines file under ``roots``, each rewritten
    atomically with private permissions.

    A root that is a file (the outbox, see :func:`erasure_paths`) is rewritten whatever its suffix: Parquet
    and CSV by their suffix, anything else as JSON lines."""
    removed: dict[str, int] = {}
    for root in roots:
        if not root.exists():
            continue
        named = root.is_file() and not root.is_symlink()
        paths = [root] if named else sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink())
        for path in paths:
            kind = _kind(path.name, named=named)
            if kind is None:
                continue
            data, n = _without_user(path.read_bytes(), kind=kind, user_id=user_id,
                                    vector_table=_VECTOR_TABLE in path.parts)
            if n:
                _rewrite_private(path, data)
                removed[str(path)] = n
    return removed


class ObjectArea(Protocol):
    """Objects under one prefix (:class:`notify_core.s3_objects.S3Bucket` in aws): the lake, landing,
    quarantine and artefacts there."""

    def versions(self, prefix: str) -> Iterable[ObjectVersion]: ...
    def get_bytes(self, name: str, *, version_id: str | None = None) -> bytes | None: ...
    def put_bytes(self, name: str, data: bytes) -> str: ...
    def delete_version(self, name: str, version_id: str) -> None: ...
    def url(self, name: str = "") -> str: ...


def erasure_objects(settings: NotifySettings) -> tuple[ObjectArea, ...]:
    """The object prefixes a user's data can be written to: in aws the whole Notify prefix of the bucket
    (lake, landing, quarantine, artefacts); none locally (:func:`erasure_paths` has the files)."""
    if settings.env != "aws" or not settings.s3_bucket:
        return ()
    from notify_core.s3_objects import S3Bucket, s3_client

    return (S3Bucket(bucket=settings.s3_bucket, prefix=settings.s3_prefix.rstrip("/") + "/",
                     client=s3_client(region=settings.aws_region, endpoint_url=settings.s3_endpoint_url)),)


def erasure_replicas(settings: NotifySettings) -> tuple[ObjectArea, ...]:
    """The same prefix in the replica bucket (``NOTIFY_S3_REPLICA_BUCKET``, the template's
    ``ReplicaBucketArn``): S3 replication copies every new version there but never a version delete, so
    without this walk an erased user's old copies would stay in the other region until its lifecycle rule
    expired them. None outside aws or without a replica."""
    if settings.env != "aws" or not settings.s3_replica_bucket:
        return ()
    from notify_core.s3_objects import S3Bucket, s3_client

    region = settings.s3_replica_region or settings.aws_region
    return (S3Bucket(bucket=settings.s3_replica_bucket, prefix=settings.s3_prefix.rstrip("/") + "/",
                     client=s3_client(region=region, endpoint_url=settings.s3_endpoint_url)),)


def _versions_holding(area: ObjectArea, user_id: str) -> Iterator[tuple[ObjectVersion, bytes, int]]:
    """Each stored version of a data object under ``area`` that holds the user: the version, its bytes
    without the user's rows, and how many rows went (listed first: the caller rewrites and deletes)."""
    for version in list(area.versions("")):
        kind = _kind(version.name)
        data = None if kind is None else area.get_bytes(version.name, version_id=version.version_id)
        if kind is None or data is None:  # not a data object, or deleted since the listing
            continue
        kept, n = _without_user(data, kind=kind, user_id=user_id,
                                vector_table=_VECTOR_TABLE in PurePosixPath(version.name).parts)
        if n:
            yield version, kept, n


def erase_from_replicas(areas: Iterable[ObjectArea], user_id: str) -> int:
    """Delete every stored version under ``areas`` that holds the user, the latest included, and write
    nothing: a replica is written by S3 replication only, which brings the primary's rewritten copy (the
    erasure rewrote it first) as a new version; until it lands, a deleted latest leaves the object's previous
    version (or none) current there. Content is read, not matched by version id, so a version replicated
    under any id is found. Returns the versions deleted; idempotent, so a re-run finishes a killed one."""
    deleted = 0
    for area in areas:
        for version, _, _ in _versions_holding(area, user_id):
            area.delete_version(version.name, version.version_id)
            deleted += 1
    return deleted


def erase_from_objects(areas: Iterable[ObjectArea], user_id: str) -> tuple[dict[str, int], int]:
    """Remove the user's rows from every Parquet, CSV and JSON-lines object under ``areas``, in every stored
    version: the latest is replaced by a rewritten copy, then each version that held the user is deleted for
    good (a versioned bucket would otherwise keep the old copy as a noncurrent version, readable by anyone who
    may read versions). Returns the rows removed from the latest versions by object URL, and how many
    versions were deleted.

    Idempotent and safe to re-run after a crash: a run stopped between the rewrite and the delete leaves a
    noncurrent version that holds the user, which the next run finds and deletes. A bucket whose versioning
    was turned on after objects were written keeps those as ``null`` versions: deleted like any other."""
    removed: dict[str, int] = {}
    deleted_versions = 0
    for area in areas:
        for version, kept, n in _versions_holding(area, user_id):
            replaced_in_place = False
            if version.latest:
                # without versioning (never on, or suspended) the put replaces the null version in place
                replaced_in_place = area.put_bytes(version.name, kept) == version.version_id
                removed[area.url(version.name)] = n
            if not replaced_in_place:
                area.delete_version(version.name, version.version_id)
                deleted_versions += 1
    return removed, deleted_versions


def erase_user(
    user_id: str, *, store: Store, file_roots: Iterable[Path] = (), object_areas: Iterable[ObjectArea] = (),
    replica_areas: Iterable[ObjectArea] = (), stream_log: Any = None, audit: AuditHook | None = None,
    actor: str = "cli", compact: bool = True, clock: Clock = SYSTEM_CLOCK,
) -> ErasureReport:
    """Remove ``user_id`` from the Store, the files under ``file_roots`` (lake, landing, quarantine, outbox,
    logs: :func:`erasure_paths`), the objects under ``object_areas`` (every version: :func:`erasure_objects`),
    their copies under ``replica_areas`` (:func:`erasure_replicas`) and the embedded stream log, after
    recording the erasure in the register at ``clock``'s time; see the module docstring. Idempotent: a
    second run removes 0."""
    if not user_id or len(user_id) > 256 or not user_id.isprintable():
        raise ValidationError("invalid user id")
    report = ErasureReport(user_id=user_id, pseudonym=pseudonym(user_id))
    # The register first: an erasure interrupted after this line still keeps the next run from re-importing.
    report.erased_at = register_erasure(store, user_id, erased_at=utcnow(clock)).isoformat()
    # Then the files and objects, the Store last: the next run converges the Store to the lake, so an erasure
    # that died after clearing the Store (the order before) left the lake holding the user, and that run
    # copied the user's rows back (309 purchase rows of 5 users on the demo). Dying now leaves the Store as it
    # was or part-erased, never refilled; the erasure run again completes.
    report.file_rows = erase_from_files(file_roots, user_id)
    object_rows, report.object_versions_deleted = erase_from_objects(object_areas, user_id)
    report.replica_versions_deleted = erase_from_replicas(replica_areas, user_id)  # after the rewrites: they replicate
    report.file_rows.update(object_rows)
    eraser = getattr(stream_log, "erase_key", None)
    if eraser is not None:
        report.stream_messages = int(eraser(user_id.encode()))
    report.store_rows, report.ledger_entries_cleared = _erase_store(store, user_id, compact=compact)
    # The audit entry and the log line name the user by the register's pseudonym, never the id: the audit
    # trail is kept for good and logs leave the data directory, and a plain list of erased ids would be the
    # one place an erased user is still named (an auditor holding an id hashes it to find its erasure).
    if audit is not None:
        audit("user.delete", {"actor": actor, "target": report.pseudonym, "rows_removed": report.total})
    log.warning("user erased", extra={"user": report.pseudonym, "rows_removed": report.total, "actor": actor})
    return report

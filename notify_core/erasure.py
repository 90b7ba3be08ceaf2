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

**Bounded in time, batched** (:mod:`notify_core.erasure_queue`). The walks of the tables not keyed by user,
the files and the object versions cost the same for one user or many, and at the spec's 10M users one walk
is minutes. :func:`erase_user` queues the user right after the register and stops at its ``deadline`` (the
HTTP route's budget), leaving the user queued; :func:`sweep_erasures` finishes every queued erasure with
one walk of each for all of them (100 queued erasures: 0.063 s a user against 7.85 s each run alone on
100k users, ``bench/bench_erasure.py``).

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
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Protocol

import polars as pl

from notify_core.clock import SYSTEM_CLOCK, Clock, utcnow
from notify_core.erasure_queue import dequeue, queue_erasure, queued_erasures
from notify_core.erasure_register import ErasureRegister, pseudonym, register_erasure, restore_register
from notify_core.errors import ValidationError
from notify_core.line_file import rewriting, rotated_files
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


@dataclass(kw_only=True)
class ErasureCounts:
    """What an erasure or a sweep removed (counts and file names only: never a user id)."""

    store_rows: dict[str, int] = field(default_factory=dict)
    file_rows: dict[str, int] = field(default_factory=dict)  # by file path or object URL
    stream_messages: int = 0
    ledger_entries_cleared: int = 0  # sync-ledger partitions to compare again (not user rows: not in total)
    object_versions_deleted: int = 0  # stored versions that held the user, deleted for good (S3)
    replica_versions_deleted: int = 0  # the same in the replica bucket (S3 replication does not replicate them)

    @property
    def total(self) -> int:
        return sum(self.store_rows.values()) + sum(self.file_rows.values()) + self.stream_messages

    def counts(self) -> dict[str, Any]:
        return {"store_rows": self.store_rows, "file_rows": self.file_rows, "stream_messages": self.stream_messages,
                "total": self.total, "ledger_entries_cleared": self.ledger_entries_cleared,
                "object_versions_deleted": self.object_versions_deleted,
                "replica_versions_deleted": self.replica_versions_deleted}


@dataclass(kw_only=True)
class ErasureReport(ErasureCounts):
    user_id: str
    pseudonym: str = ""  # the erasure register's key for the user: what the audit entry and the log name
    erased_at: str = ""  # ISO UTC, as recorded in the erasure register
    pending: bool = False  # the deadline came first: the sweep finishes it (counts: the steps it finished)

    def as_dict(self) -> dict[str, Any]:
        return {"user_id": self.user_id, **self.counts(), "erased_at": self.erased_at, "pending": self.pending}


@dataclass(kw_only=True)
class SweepReport(ErasureCounts):
    users_queued: int = 0  # erasures in the queue when the sweep began
    users_finished: int = 0  # taken out of it (a user erased again meanwhile stays for the next sweep)

    def as_dict(self) -> dict[str, Any]:
        return {"users_queued": self.users_queued, "users_finished": self.users_finished, **self.counts()}


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
    for user_id in erased:  # queued, then one sweep: a restore may bring back thousands (one walk each, before)
        when = register.erased_at(user_id)
        assert when is not None  # the filter above
        queue_erasure(store, user_id, erased_at=when)
    if erased:
        sweep_erasures(store, file_roots=roots, object_areas=objects, replica_areas=replicas, stream_log=stream_log,
                       actor="restore")
    return erased


def erasure_paths(settings: NotifySettings) -> tuple[Path, ...]:
    """Every configured local path a user's data can be written to: the one list the erasure walks (the CLI,
    the Lambda). Folders are walked; a file named here (the outbox and its earlier days) is rewritten whatever
    its suffix. A path inside another one on the list is not repeated. The embedded stream log is erased
    through its own API."""
    # the outbox's days moved aside (OutboxChannel's rotation) are named too: outside the data directory
    # (a configured outbox path) no folder walk would find them
    candidates = [settings.data_dir, settings.landing, settings.outbox, *rotated_files(settings.outbox)]
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
    return _belongs(item, frozenset((user_id,)), rule=rule)


def _belongs(item: Mapping[str, Any], ids: frozenset[str], *, rule: tables.UserKey) -> bool:
    """:func:`belongs_to` for any of ``ids`` (the sweep matches every queued user in one pass)."""
    owner = item.get("user_id")
    if isinstance(owner, str) and owner in ids:
        return True
    pk, sk = item.get("pk"), item.get("sk")
    if rule is tables.UserKey.PK:
        return isinstance(pk, str) and pk in ids
    if rule is tables.UserKey.VECTOR_PK:
        return isinstance(pk, str) and pk.startswith("user#") and pk[5:] in ids
    if rule is tables.UserKey.SK:  # the whole key, not a prefix: "a#" is also how user "a#b"'s keys start
        tail = "#" + str(item.get("notification_id", ""))
        return isinstance(sk, str) and sk.endswith(tail) and sk[:-len(tail)] in ids
    return False


def _candidates(table: Table, ids: frozenset[str], *, rule: tables.UserKey) -> Iterable[Item]:
    """The items that can be the users': their own partitions where the table is keyed by user (queries:
    purchases and the matrix are ~90 % of a store's rows, and scanning them made one erasure cost 6.4 s on
    the demo's 745k rows, hours at the spec's 10M users), otherwise the whole table, once for all ``ids``."""
    if rule is tables.UserKey.PK:
        return (item for user_id in sorted(ids) for item in table.query(user_id))
    if rule is tables.UserKey.VECTOR_PK:
        return (item for user_id in sorted(ids) for item in table.query(f"user#{user_id}"))
    return table.scan()


class _OutOfTime(Exception):
    """The erasure's deadline passed: the rest is the sweep's (the user stays in the erasure queue)."""


_CHECK_EVERY = 256  # Store items between two looks at the deadline (files and objects: each one)


def _within(items: Iterable[Any], deadline: float | None, *, every: int = _CHECK_EVERY) -> Iterator[Any]:
    """``items``, raising :class:`_OutOfTime` once ``deadline`` (a ``time.monotonic()`` instant) has passed
    (looked at before the first item and every ``every`` after); no deadline: ``items`` as they are."""
    if deadline is None:
        yield from items
        return
    for n, item in enumerate(items):
        if n % every == 0 and time.monotonic() >= deadline:
            raise _OutOfTime
        yield item


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
    deleted: dict[str, int] = {}
    _erase_store(store, frozenset((user_id,)), deleted=deleted, compact=compact)
    return deleted


def _erase_store(store: Store, ids: frozenset[str], *, deleted: dict[str, int], compact: bool,
                 deadline: float | None = None, finished: Callable[[], None] | None = None) -> int:
    """:func:`erase_from_store` for every user of ``ids`` at once (each table walked once), counting into
    ``deleted`` as it goes (a run stopped by ``deadline`` has counted what it did); returns how many
    sync-ledger entries it cleared. A table's entries are cleared before its first delete, so a run killed
    between the two leaves the table to be compared, never a digest of rows that are gone. ``finished`` runs
    after the last delete, before the checkpoint or rebuild that removes every copy (a run that fails or is
    killed does neither: its deletes stand, and the queue keeps the user for the next run)."""
    for hook in ("sweep_expired", "secure_delete"):
        fn = getattr(store, hook, None)
        if fn is not None:
            fn()
    notifications: set[str] = set()
    cleared = 0
    checkpoint = getattr(store, "checkpoint", None)
    try:
        for name in _table_names(store):
            rule = tables.USER_ITEMS[name]
            table = store.table(name)
            if rule is tables.UserKey.NOTIFICATION:  # markers carry no user id, only the notification
                doomed = [i for i in _within(table.scan(), deadline) if str(i["pk"]) in notifications]
            else:
                doomed = [i for i in _within(_candidates(table, ids, rule=rule), deadline)
                          if _belongs(i, ids, rule=rule)]
            if doomed:
                cleared += clear_stale_ledger(store, [name])
            for item in doomed:
                table.delete(str(item["pk"]), str(item["sk"]))
                deleted[name] = deleted.get(name, 0) + 1
                if item.get("notification_id"):
                    notifications.add(str(item["notification_id"]))
    except _OutOfTime:
        if checkpoint is not None:  # what it deleted leaves the WAL now, not at some later checkpoint
            checkpoint()
        raise
    if finished is not None:
        finished()
    finish = getattr(store, "vacuum", None) if compact else checkpoint
    if finish is not None:
        finish()
    return cleared


def _rewrite_private(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.erase.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _erase_frame(frame: pl.DataFrame, ids: frozenset[str], *, vector_table: bool) -> pl.DataFrame:
    columns = [c for c in _ID_COLUMNS if c in frame.columns]
    if vector_table and "id" in frame.columns:
        columns.append("id")
    if not columns:
        return frame
    hit = pl.any_horizontal([pl.col(c).cast(pl.String).is_in(sorted(ids)) for c in columns]).fill_null(False)
    return frame.filter(~hit)


def _kind(name: str, *, named: bool = False) -> str | None:
    """How a file or object is read: ``parquet``, ``csv``, ``jsonl`` (JSON lines, logs, and a file the
    settings name, such as the outbox, whatever its suffix), or None (not data: left alone)."""
    suffix = PurePosixPath(name).suffix.lower()
    if suffix in (".parquet", ".csv"):
        return suffix[1:]
    return "jsonl" if suffix in (".jsonl", ".json", ".log") or named else None


def _names_a_user(ids: frozenset[str]) -> Callable[[bytes], bool]:
    """Whether a JSON line names any of ``ids``: each id as a JSON string, quotes included (no partial
    matches); one compiled alternation for many ids, a plain search for one."""
    needles = [json.dumps(user_id).encode() for user_id in sorted(ids)]
    if len(needles) == 1:
        needle = needles[0]
        return lambda line: needle in line
    search = re.compile(b"|".join(re.escape(n) for n in needles)).search
    return lambda line: search(line) is not None


def _without_users(data: bytes, *, kind: str, ids: frozenset[str], vector_table: bool) -> tuple[bytes, int]:
    """``data`` without the rows of ``ids``, and how many were removed (0: ``data`` itself, nothing to write).

    The one eraser of a file's bytes, for local files and for objects alike."""
    if kind == "jsonl":
        names = _names_a_user(ids)
        lines = data.splitlines(keepends=True)
        kept = [line for line in lines if not names(line)]
        removed = len(lines) - len(kept)
        return (b"".join(kept) if removed else data), removed
    frame = pl.read_parquet(io.BytesIO(data)) if kind == "parquet" else pl.read_csv(io.BytesIO(data),
                                                                                      infer_schema=False)
    kept_frame = _erase_frame(frame, ids, vector_table=vector_table)
    removed = frame.height - kept_frame.height
    if not removed:
        return data, 0
    if kind == "csv":
        return kept_frame.write_csv().encode(), removed
    buffer = io.BytesIO()
    kept_frame.write_parquet(buffer)
    return buffer.getvalue(), removed


def erase_from_files(roots: Iterable[Path], ids: frozenset[str], *, deadline: float | None = None) -> dict[str, int]:
    """Remove the rows of ``ids`` from every Parquet, CSV and JSON-lines file under ``roots``, each rewritten
    atomically with private permissions (a run stopped by ``deadline`` between two files leaves each whole).

    A root that is a file (the outbox, see :func:`erasure_paths`) is rewritten whatever its suffix: Parquet
    and CSV by their suffix, anything else as JSON lines."""
    removed: dict[str, int] = {}
    for root in roots:
        if not root.exists():
            continue
        named = root.is_file() and not root.is_symlink()
        paths = [root] if named else sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink())
        for path in _within(paths, deadline, every=1):
            kind = _kind(path.name, named=named)
            if kind is None:
                continue
            # An appender (the outbox's worker, a log handler) waits, then appends to the new file. Nothing in
            # this block may log: the file locked can be this process's own log file.
            with rewriting(path):
                data, n = _without_users(path.read_bytes(), kind=kind, ids=ids,
                                         vector_table=_VECTOR_TABLE in path.parts)
                if n:
                    _rewrite_private(path, data)
            if n:
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


def _versions_holding(area: ObjectArea, ids: frozenset[str], *,
                      deadline: float | None) -> Iterator[tuple[ObjectVersion, bytes, int]]:
    """Each stored version of a data object under ``area`` that holds any of ``ids``: the version, its bytes
    without their rows, and how many rows went (listed first: the caller rewrites and deletes)."""
    for version in _within(list(area.versions("")), deadline, every=1):
        kind = _kind(version.name)
        data = None if kind is None else area.get_bytes(version.name, version_id=version.version_id)
        if kind is None or data is None:  # not a data object, or deleted since the listing
            continue
        kept, n = _without_users(data, kind=kind, ids=ids,
                                 vector_table=_VECTOR_TABLE in PurePosixPath(version.name).parts)
        if n:
            yield version, kept, n


def erase_from_replicas(areas: Iterable[ObjectArea], ids: frozenset[str], *, deadline: float | None = None) -> int:
    """Delete every stored version under ``areas`` that holds any of ``ids``, the latest included, and write
    nothing: a replica is written by S3 replication only, which brings the primary's rewritten copy (the
    erasure rewrote it first) as a new version; until it lands, a deleted latest leaves the object's previous
    version (or none) current there. Content is read, not matched by version id, so a version replicated
    under any id is found. Returns the versions deleted; idempotent, so a re-run finishes a killed one."""
    deleted = 0
    for area in areas:
        for version, _, _ in _versions_holding(area, ids, deadline=deadline):
            area.delete_version(version.name, version.version_id)
            deleted += 1
    return deleted


def erase_from_objects(areas: Iterable[ObjectArea], ids: frozenset[str], *,
                       deadline: float | None = None) -> tuple[dict[str, int], int]:
    """Remove the rows of ``ids`` from every Parquet, CSV and JSON-lines object under ``areas``, in every
    stored version: the latest is replaced by a rewritten copy, then each version that held them is deleted
    for good (a versioned bucket would otherwise keep the old copy as a noncurrent version, readable by anyone
    who may read versions). Returns the rows removed from the latest versions by object URL, and how many
    versions were deleted.

    Idempotent and safe to re-run after a crash: a run stopped between the rewrite and the delete leaves a
    noncurrent version that holds the user, which the next run finds and deletes. A bucket whose versioning
    was turned on after objects were written keeps those as ``null`` versions: deleted like any other."""
    removed: dict[str, int] = {}
    deleted_versions = 0
    for area in areas:
        for version, kept, n in _versions_holding(area, ids, deadline=deadline):
            replaced_in_place = False
            if version.latest:
                # without versioning (never on, or suspended) the put replaces the null version in place
                replaced_in_place = area.put_bytes(version.name, kept) == version.version_id
                removed[area.url(version.name)] = n
            if not replaced_in_place:
                area.delete_version(version.name, version.version_id)
                deleted_versions += 1
    return removed, deleted_versions


def _erase_everywhere(ids: frozenset[str], *, store: Store, file_roots: Iterable[Path],
                      object_areas: Iterable[ObjectArea], replica_areas: Iterable[ObjectArea], stream_log: Any,
                      compact: bool, deadline: float | None, counts: ErasureCounts,
                      finished: Callable[[], None]) -> None:
    """Remove ``ids`` from the files, objects, replicas, stream log and Store, in that order, counting into
    ``counts``; ``finished`` runs once all of it is done, before the Store's last checkpoint (it takes the
    users out of the erasure queue, so even that entry leaves no copy). Raises :class:`_OutOfTime` when
    ``deadline`` passes first (``counts`` then holds the steps it finished, and the Store rows it deleted).

    The files first, the Store last: the next run converges the Store to the lake, so an erasure that died
    after clearing the Store (the order before) left the lake holding the user, and that run copied the
    user's rows back (309 purchase rows of 5 users on the demo). Dying now leaves the Store as it was or
    part-erased, never refilled; the erasure run again (or the sweep) completes."""
    counts.file_rows.update(erase_from_files(file_roots, ids, deadline=deadline))
    object_rows, versions = erase_from_objects(object_areas, ids, deadline=deadline)
    counts.file_rows.update(object_rows)
    counts.object_versions_deleted += versions
    counts.replica_versions_deleted += erase_from_replicas(replica_areas, ids, deadline=deadline)  # they replicate
    eraser = getattr(stream_log, "erase_key", None)
    if eraser is not None:
        for user_id in _within(sorted(ids), deadline, every=1):
            counts.stream_messages += int(eraser(user_id.encode()))
    counts.ledger_entries_cleared += _erase_store(store, ids, deleted=counts.store_rows, compact=compact,
                                                  deadline=deadline, finished=finished)


def erase_user(
    user_id: str, *, store: Store, file_roots: Iterable[Path] = (), object_areas: Iterable[ObjectArea] = (),
    replica_areas: Iterable[ObjectArea] = (), stream_log: Any = None, audit: AuditHook | None = None,
    actor: str = "cli", compact: bool = True, clock: Clock = SYSTEM_CLOCK, deadline: float | None = None,
) -> ErasureReport:
    """Remove ``user_id`` from the Store, the files under ``file_roots`` (lake, landing, quarantine, outbox,
    logs: :func:`erasure_paths`), the objects under ``object_areas`` (every version: :func:`erasure_objects`),
    their copies under ``replica_areas`` (:func:`erasure_replicas`) and the embedded stream log, after
    recording the erasure in the register at ``clock``'s time; see the module docstring. Idempotent: a
    second run removes 0.

    ``deadline`` (a ``time.monotonic()`` instant; the HTTP route's budget) bounds the work: what does not
    fit is left to :func:`sweep_erasures` and the report says ``pending``. The user is in the erasure queue
    from the register's write until everything is done, so a deadline, a kill -9 or a full disk leave the
    sweep the same work to finish."""
    if not user_id or len(user_id) > 256 or not user_id.isprintable():
        raise ValidationError("invalid user id")
    report = ErasureReport(user_id=user_id, pseudonym=pseudonym(user_id))
    # The register first: an erasure interrupted after this line still keeps the next run from re-importing.
    erased_at = register_erasure(store, user_id, erased_at=utcnow(clock))
    report.erased_at = erased_at.isoformat()
    queue_erasure(store, user_id, erased_at=erased_at)
    try:
        _erase_everywhere(frozenset((user_id,)), store=store, file_roots=file_roots, object_areas=object_areas,
                          replica_areas=replica_areas, stream_log=stream_log, compact=compact, deadline=deadline,
                          counts=report, finished=lambda: _dequeue_one(store, user_id, report.erased_at))
    except _OutOfTime:
        report.pending = True
    # The audit entry and the log line name the user by the register's pseudonym, never the id: the audit
    # trail is kept for good and logs leave the data directory, and a plain list of erased ids would be the
    # one place an erased user is still named (an auditor holding an id hashes it to find its erasure).
    if audit is not None:
        audit("user.delete", {"actor": actor, "target": report.pseudonym, "rows_removed": report.total,
                               "pending": report.pending})
    log.warning("user erased" if not report.pending else "user erasure begun; the sweep finishes it",
                extra={"user": report.pseudonym, "rows_removed": report.total, "actor": actor,
                       "pending": report.pending})
    return report


def _dequeue_one(store: Store, user_id: str, erased_at: str) -> None:
    dequeue(store, {user_id: erased_at})


def sweep_erasures(
    store: Store, *, file_roots: Iterable[Path] = (), object_areas: Iterable[ObjectArea] = (),
    replica_areas: Iterable[ObjectArea] = (), stream_log: Any = None, audit: AuditHook | None = None,
    actor: str = "sweep", compact: bool = True,
) -> SweepReport:
    """Finish every erasure in the erasure queue (:mod:`notify_core.erasure_queue`): one walk of each table
    not keyed by user, of the files and of every object version for all of them together, so N erasures cost
    one pass, not N. Each user is then taken out of the queue, unless erased again meanwhile. Run by the
    ``erasure_sweep`` job (its sensor starts it when the queue is not empty) and ``notify users
    sweep-erasures``; idempotent, so a sweep killed half-way is finished by the next. Reports and audits
    counts only, never an id."""
    queued = queued_erasures(store)
    report = SweepReport(users_queued=len(queued))
    if not queued:
        return report

    def finished() -> None:
        report.users_finished = dequeue(store, queued)

    _erase_everywhere(frozenset(queued), store=store, file_roots=file_roots, object_areas=object_areas,
                      replica_areas=replica_areas, stream_log=stream_log, compact=compact, deadline=None,
                      counts=report, finished=finished)
    if audit is not None:
        audit("user.erasure_sweep", {"actor": actor, "target": f"{report.users_finished} users",
                                     "rows_removed": report.total})
    log.warning("erasures swept", extra={"users": report.users_finished, "rows_removed": report.total,
                                          "actor": actor})
    return report

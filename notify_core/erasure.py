"""Right to erasure: remove one user from every place Notify keeps data about them.

``notify users delete ID`` calls :func:`erase_user`, which removes the user from

* **every Store table** (the adapter lists them, so a table added later is not forgotten): an item goes if
  its partition key is the user id (profile, purchases, features, matrix, events, plans, fatigue...) or
  ``user#<id>`` (the user's vector), its sort key starts with ``<id>#`` (schedule items), or its
  ``user_id`` attribute is the user (event ledger, dedupe, deliveries, retries, dead letters);
  tracking markers of the user's notifications go with their deliveries. On SQLite, expired items are
  swept first, deletes are ``secure_delete`` (freed pages zeroed) and the WAL is checkpointed, so no copy
  stays in the file;
* **every Parquet file** under the lake (users, purchases, features, matrix, ``embeddings_user`` and the
  other vector tables: rows whose ``user_id``, or for user vectors ``id``, is the user), rewritten
  atomically;
* **landing and quarantine files** (CSV and Parquet), so a re-ingest cannot bring the user back;
* **JSON-lines files** (the outbox, logs): lines naming the user;
* the **embedded stream log**: messages keyed by the user.

Kafka topics cannot delete single records: they age out with the topic's retention (documented, not
done here). The caller passes ``audit``: the audit log's ``record`` once it exists (see the call site).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from notify_core.errors import ValidationError
from notify_core.security.files import FILE_MODE
from notify_core.store.port import Store

log = logging.getLogger(__name__)

AuditHook = Callable[[str, Mapping[str, Any]], None]
_ID_COLUMNS = ("user_id",)
_VECTOR_TABLE = "embeddings_user"  # rows keyed by ``id`` = the user id
# Never touched by an erasure: the audit chain is append-only (a user id "log" would otherwise match its
# partition key and wipe it; its entries hold ids, never personal fields) and API keys are not user data.
_KEPT_TABLES = frozenset({"audit_log", "api_keys"})


@dataclass
class ErasureReport:
    user_id: str
    store_rows: dict[str, int] = field(default_factory=dict)
    file_rows: dict[str, int] = field(default_factory=dict)
    stream_messages: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"user_id": self.user_id, "store_rows": self.store_rows, "file_rows": self.file_rows,
                "stream_messages": self.stream_messages, "total": self.total}

    @property
    def total(self) -> int:
        return sum(self.store_rows.values()) + sum(self.file_rows.values()) + self.stream_messages


def belongs_to(item: Mapping[str, Any], user_id: str) -> bool:
    """Whether a Store item is about ``user_id`` (the key shapes in ``notify_core.store.tables``)."""
    pk = str(item.get("pk", ""))
    sk = str(item.get("sk", ""))
    return (pk == user_id or pk == f"user#{user_id}" or sk.startswith(f"{user_id}#")
            or item.get("user_id") == user_id)


def _table_names(store: Store) -> list[str]:
    lister = getattr(store, "table_names", None)
    if lister is None:
        from notify_core.store import tables

        return sorted({v for k, v in vars(tables).items()
                       if k.isupper() and isinstance(v, str) and not k.endswith("_SK")})
    names: list[str] = lister()
    return names


def erase_from_store(store: Store, user_id: str, *, compact: bool = True) -> dict[str, int]:
    """Delete every item about the user from every table; returns rows deleted per table.

    ``compact`` (SQLite) also rebuilds the file afterwards, so not even a B-tree divider key is left."""
    for hook in ("sweep_expired", "secure_delete"):
        fn = getattr(store, hook, None)
        if fn is not None:
            fn()
    deleted: dict[str, int] = {}
    notifications: set[str] = set()
    names = [name for name in _table_names(store) if name not in _KEPT_TABLES]
    for name in names:
        table = store.table(name)
        doomed = [(str(i["pk"]), str(i["sk"]), i) for i in table.scan() if belongs_to(i, user_id)]
        for pk, sk, item in doomed:
            table.delete(pk, sk)
            if item.get("notification_id"):
                notifications.add(str(item["notification_id"]))
        if doomed:
            deleted[name] = len(doomed)
    if notifications and "notification_interactions" in names:  # markers carry no user id, only the notification
        table = store.table("notification_interactions")
        markers = [(str(i["pk"]), str(i["sk"])) for i in table.scan() if str(i["pk"]) in notifications]
        for pk, sk in markers:
            table.delete(pk, sk)
        if markers:
            deleted["notification_interactions"] = deleted.get("notification_interactions", 0) + len(markers)
    finish = getattr(store, "vacuum" if compact else "checkpoint", None)
    if finish is not None:
        finish()
    return deleted


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


def _erase_parquet(path: Path, user_id: str) -> int:
    frame = pl.read_parquet(path)
    kept = _erase_frame(frame, user_id, vector_table=_VECTOR_TABLE in path.parts)
    removed = frame.height - kept.height
    if removed:
        tmp = path.with_name(f".{path.name}.erase.tmp")
        kept.write_parquet(tmp)
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    return removed


def _erase_csv(path: Path, user_id: str) -> int:
    frame = pl.read_csv(path, infer_schema=False)
    kept = _erase_frame(frame, user_id, vector_table=False)
    removed = frame.height - kept.height
    if removed:
        _rewrite_private(path, kept.write_csv().encode())
    return removed


def _erase_jsonl(path: Path, user_id: str) -> int:
    needle = json.dumps(user_id).encode()  # the id as a JSON string, quotes included: no partial matches
    kept: list[bytes] = []
    removed = 0
    with path.open("rb") as handle:
        for line in handle:
            if needle in line:
                removed += 1
            else:
                kept.append(line)
    if removed:
        _rewrite_private(path, b"".join(kept))
    return removed


def erase_from_files(roots: Iterable[Path], user_id: str) -> dict[str, int]:
    """Remove the user's rows from every Parquet, CSV and JSON-lines file under ``roots``."""
    removed: dict[str, int] = {}
    for root in roots:
        if not root.exists():
            continue
        for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink()):
            suffix = path.suffix.lower()
            if suffix == ".parquet":
                n = _erase_parquet(path, user_id)
            elif suffix == ".csv":
                n = _erase_csv(path, user_id)
            elif suffix in (".jsonl", ".json", ".log"):
                n = _erase_jsonl(path, user_id)
            else:
                continue
            if n:
                removed[str(path)] = n
    return removed


def erase_user(
    user_id: str, *, store: Store, file_roots: Iterable[Path] = (), stream_log: Any = None,
    audit: AuditHook | None = None, actor: str = "cli", compact: bool = True,
) -> ErasureReport:
    """Remove ``user_id`` from the Store, the files under ``file_roots`` (lake, landing, quarantine, outbox,
    logs) and the embedded stream log; see the module docstring. Idempotent: a second run removes 0."""
    if not user_id or len(user_id) > 256 or not user_id.isprintable():
        raise ValidationError("invalid user id")
    report = ErasureReport(user_id=user_id)
    report.store_rows = erase_from_store(store, user_id, compact=compact)
    report.file_rows = erase_from_files(file_roots, user_id)
    eraser = getattr(stream_log, "erase_key", None)
    if eraser is not None:
        report.stream_messages = int(eraser(user_id.encode()))
    # AUDIT HOOK (issue 14, audit log): the audit module's ``audit.record(...)`` plugs in here; until then
    # the CLI passes a hook that writes the structured log line below. Never log personal fields here.
    if audit is not None:
        audit("user.delete", {"actor": actor, "user_id": user_id, "rows_removed": report.total})
    log.warning("user erased", extra={"user_id": user_id, "rows_removed": report.total, "actor": actor})
    return report

"""The erasure register: who was erased and when, so that erased data stays erased.

Deleting is not enough: the source export, a landing drop, a Kafka topic or an old backup still hold the
user, and the next pipeline run would bring them back. :func:`notify_core.erasure.erase_user` first records
``(pseudonym(user id), erased_at)`` in the Store table ``erasures`` (no TTL; the key is a one-way digest,
never the id). Readers ask :func:`erased_before` for an :class:`ErasureRegister`: batch ingestion and the
demo source drop rows (:meth:`ErasureRegister.drop_erased`), the stream consumer leaves records out, a
restore re-applies it. A row dated after the erasure is new data (the user came back) and is kept.

A module of its own, apart from the erasure itself: what imports it (the stream consumer) reaches only the
``erasures`` table, so the IAM roles derived from the code (``notify_cli.deploy_access``) stay narrow.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import polars as pl

from notify_core.store import tables
from notify_core.store.port import Store

_PSEUDONYM_DOMAIN = b"notify-erasure-v1\x00"
_UTC_US = pl.Datetime("us", "UTC")
EVENT_TIME: Mapping[str, str] = {"users": "signup_date", "purchases": "ts"}
"""The column dating a row of each batch dataset that names a user: a registered user's row is erased data when
this time is at or before their ``erased_at`` (a date counts as its first instant, UTC; no time: erased)."""


def pseudonym(user_id: str | bytes) -> str:
    """The register's key for a user id (or its UTF-8 bytes: a stream record's key): SHA-256 under a fixed
    domain prefix (one-way, but an id from a small space can be found by trying them all: it is a pseudonym,
    kept only to honour the erasure)."""
    raw = user_id if isinstance(user_id, bytes) else user_id.encode("utf-8", "surrogatepass")
    return hashlib.sha256(_PSEUDONYM_DOMAIN + raw).hexdigest()


def _as_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@dataclass(frozen=True, slots=True)
class ErasureRegister:
    """Who was erased and when (pseudonym -> ``erased_at``, aware UTC), as :func:`erased_before` read it."""

    entries: Mapping[str, datetime] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.entries)

    def union(self, other: ErasureRegister) -> ErasureRegister:
        """Both registers' entries; a user in both keeps the later erasure."""
        entries = dict(self.entries)
        for key, when in other.entries.items():
            entries[key] = max(when, entries.get(key, when))
        return ErasureRegister(entries)

    def newer_than(self, earlier: ErasureRegister) -> ErasureRegister:
        """The erasures recorded since ``earlier`` was read: users not in it, or erased again after it."""
        return ErasureRegister({key: when for key, when in self.entries.items()
                                if key not in earlier.entries or when > earlier.entries[key]})

    def erased_at(self, user_id: str | bytes) -> datetime | None:
        """When ``user_id`` (or its UTF-8 bytes) was last erased; None: never."""
        return self.entries.get(pseudonym(user_id)) if self.entries else None

    def suppresses(self, user_id: str | None, at: datetime | None) -> bool:
        """Whether a record of ``user_id`` dated ``at`` is erased data (for per-record callers: the stream
        consumer, a restore): the user is registered and ``at`` is at or before the erasure, or unknown."""
        erased = self.erased_at(user_id) if user_id is not None else None
        return erased is not None and (at is None or _as_utc(at) <= erased)

    def drop_erased(self, frame: pl.DataFrame, *, time_column: str | None,
                    user_column: str = "user_id") -> tuple[pl.DataFrame, int]:
        """``frame`` without the rows :meth:`suppresses` would refuse, and how many there were.

        Columnar: the ids are hashed once per distinct id (only when the register is not empty), the rows
        are filtered by one polars expression. Rows without a user id are kept."""
        if not self.entries or frame.is_empty() or user_column not in frame.columns:
            return frame, 0
        ids = frame.get_column(user_column).cast(pl.String).drop_nulls().unique().to_list()
        hits = {u: at for u in ids if (at := self.entries.get(pseudonym(u))) is not None}
        if not hits:
            return frame, 0
        erased_at = pl.col(user_column).cast(pl.String).replace_strict(
            list(hits), list(hits.values()), default=None, return_dtype=_UTC_US)
        doomed = erased_at.is_not_null()
        if time_column is not None and time_column in frame.columns:
            dated = _time_expr(time_column, frame.schema[time_column])
            if dated is not None:
                doomed = doomed & (dated.is_null() | (dated <= erased_at))
        kept = frame.filter(~doomed)
        return kept, frame.height - kept.height


def _time_expr(column: str, dtype: pl.DataType) -> pl.Expr | None:
    """``column`` as an aware UTC microsecond datetime (dates at midnight); None: not a time column."""
    col = pl.col(column)
    if dtype == pl.Date:
        return col.cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
    if isinstance(dtype, pl.Datetime):
        aware = col.dt.replace_time_zone("UTC") if dtype.time_zone is None else col.dt.convert_time_zone("UTC")
        return aware.dt.cast_time_unit("us")
    return None


def erased_before(store: Store) -> ErasureRegister:
    """The erasure register as it stands: every erased user (by pseudonym) and the time of their erasure.

    Read it once per batch (a scan of one small table). Batch ingestion and the demo source call it; the
    stream consumer and a restore should too (see docs/security.md)."""
    return register_of(store.table(tables.ERASURES).scan())


def register_of(items: Iterable[Mapping[str, Any]]) -> ErasureRegister:
    """The register that ``erasures`` items hold: per pseudonym, the latest ``erased_at`` (also for readers of
    a Store file that must not write to it: a restore)."""
    entries: dict[str, datetime] = {}
    for item in items:
        when = _as_utc(datetime.fromisoformat(str(item["erased_at"])))
        key = str(item["pk"])
        entries[key] = max(when, entries.get(key, when))
    return ErasureRegister(entries)


def register_erasure(store: Store, user_id: str, *, erased_at: datetime) -> datetime:
    """Record that ``user_id`` was erased at ``erased_at`` (an earlier record moves forward, never back);
    returns the time recorded. No TTL: the record lasts as long as the data it suppresses can come back."""
    table = store.table(tables.ERASURES)
    key = pseudonym(user_id)
    when = _as_utc(erased_at)
    old = table.get(key, tables.ERASURE_SK, consistent=True)
    if old is not None:
        when = max(when, _as_utc(datetime.fromisoformat(str(old["erased_at"]))))
    table.put({"pk": key, "sk": tables.ERASURE_SK, "erased_at": when.isoformat()})
    return when


def restore_register(store: Store, register: ErasureRegister) -> int:
    """Write ``register`` (read with :func:`erased_before` before a restore) into ``store`` again, keeping each
    entry's time (a later one already there wins); returns the entries written. A Store restored from
    before an erasure holds a register as old as its data: this puts the newer entries back."""
    current = erased_before(store).entries
    newer = [{"pk": key, "sk": tables.ERASURE_SK, "erased_at": when.isoformat()}
             for key, when in register.entries.items() if key not in current or current[key] < when]
    if newer:
        store.table(tables.ERASURES).batch_put(newer)
    return len(newer)

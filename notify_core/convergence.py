"""Convergence: every batch stage makes the Store hold what its source of truth says, whatever happened.

Trusting "what changed since last time" loses rows for good when a run dies between writing the lake
and writing the Store (kill -9, a full disk): the next run sees nothing changed. Instead each stage
keeps, in the Store itself (table ``sync_ledger``), one digest per source partition of the rows the
Store is known to hold, written only after all of them are. Each run digests its source partitions
(cheap: a hash per row, no Store reads) and repairs only those whose digest differs from the ledger:
compare-before-write of the partition's rows, then the ledger entry. A wiped or restored Store loses
or rolls back its ledger with its data, so it is repaired the same way. Stages also write the Store
before recording rows as landed in the lake, so a delta seen once is seen again until it is stored.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import polars as pl

from notify_core.repositories import WriteCounts, delete_keys, save_frame
from notify_core.store import tables
from notify_core.store.port import Key, Store

EMPTY_DIGEST = "empty"


def frame_digest(frame: pl.DataFrame) -> str:
    """A digest of a frame's rows, independent of row order (sorted row hashes, then SHA-256)."""
    if frame.is_empty():
        return EMPTY_DIGEST
    ordered = frame.select(sorted(frame.columns))
    # two independently seeded 64-bit row hashes, sorted by the pair so row order does not matter
    pairs = pl.DataFrame({"a": ordered.hash_rows(seed=13), "b": ordered.hash_rows(seed=29)}).sort("a", "b")
    digest = hashlib.sha256(pairs["a"].to_numpy().tobytes() + pairs["b"].to_numpy().tobytes())
    return f"{digest.hexdigest()[:32]}:{frame.height}"


@dataclass(frozen=True, slots=True)
class Ledger:
    """The digests of what the Store holds for one source (a dataset or a derived table), per partition."""

    store: Store
    source: str

    def recorded(self) -> dict[str, str]:
        items = self.store.table(tables.SYNC_LEDGER).query(self.source)
        return {str(i["sk"]): str(i["digest"]) for i in items}

    def record(self, partition: str, digest: str, *, rows: int) -> None:
        self.store.table(tables.SYNC_LEDGER).batch_put(
            [{"pk": self.source, "sk": partition, "digest": digest, "rows": rows}])


@dataclass(frozen=True, slots=True)
class PartitionSource:
    """One source partition: its rows now, and optionally the rows that changed since ``base`` was stored."""

    name: str
    rows: pl.DataFrame
    delta: pl.DataFrame | None = None  # rows changed since base (written alone when the Store holds base)
    base_digest: str | None = None  # digest of the partition before this run's changes


Writer = Callable[[Store, str, pl.DataFrame], WriteCounts]


def converge(
    store: Store,
    table_name: str,
    partitions: Sequence[PartitionSource],
    *,
    stale: Sequence[Key] = (),
    source: str | None = None,
    force: bool = False,
    write: Writer | None = None,
) -> WriteCounts:
    """Make the Store's ``table_name`` hold every partition's rows; returns what was written.

    Per partition: ledger digest equal to the rows' digest -> nothing to do; equal to ``base_digest``
    (the Store holds the partition as it was) -> write only ``delta``; otherwise (missing ledger entry,
    an interrupted earlier run, a wiped or restored Store, ``force``) -> compare every row and write
    the differences. ``stale`` keys (rows whose Store key moved) are deleted before any ledger entry is
    recorded, so an interruption anywhere leaves a ledger that still asks for the repair.
    """
    ledger = Ledger(store, source or table_name)
    recorded = ledger.recorded()
    counts = WriteCounts()
    done: list[tuple[str, str, int]] = []
    for part in partitions:
        digest = frame_digest(part.rows)
        have = recorded.get(part.name)
        if have == digest and not force:
            counts = counts + WriteCounts(unchanged=part.rows.height)
            continue
        cheap = not force and have is not None and part.delta is not None and have == part.base_digest
        rows = part.delta if cheap and part.delta is not None else part.rows
        counts = counts + (write or save_frame)(store, table_name, rows)
        done.append((part.name, digest, part.rows.height))
    if stale:
        counts = counts + WriteCounts(deleted=delete_keys(store, table_name, stale))
    for name, digest, height in done:
        ledger.record(name, digest, rows=height)
    return counts


def table_digest(store: Store, table_name: str) -> tuple[int, str]:
    """(item count, order-independent digest) of a whole Store table: "is this Store equal to a clean run's?"

    Backend-neutral (DynamoDB hands 8.0 back as 8, so integral floats are digested as integers). For
    checks and tests (it scans the table); the batch stages never call it.
    """
    import json

    rows = sorted(json.dumps(_neutral(item), sort_keys=True,
                             default=lambda v: v.hex() if isinstance(v, bytes | bytearray) else str(v))
                  for item in store.table(table_name).scan())
    return len(rows), hashlib.sha256("\n".join(rows).encode()).hexdigest()[:32]


def _neutral(value: object) -> object:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _neutral(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_neutral(v) for v in value]
    return value

"""Domain rows <-> Store items, and the idempotent write every batch uses.

Rows are polars frames in the dataset schemas; items are flat dicts with ``pk``/``sk`` (see
:mod:`notify_core.store.tables`). Dates and datetimes become ISO strings so both backends store and
compare them the same way.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import polars as pl

from notify_core.store import tables
from notify_core.store.port import Item, Key, Store, Table

_BATCH = 2_000


@dataclass(frozen=True, slots=True)
class WriteCounts:
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0

    @property
    def written(self) -> int:
        return self.inserted + self.updated

    def __add__(self, other: WriteCounts) -> WriteCounts:
        return WriteCounts(self.inserted + other.inserted, self.updated + other.updated,
                           self.unchanged + other.unchanged, self.deleted + other.deleted)


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):  # NaN/inf have no JSON/DynamoDB form
        return None
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def upsert_changed(table: Table, items: Iterable[Item]) -> WriteCounts:
    """Write only the items that are new or differ from what the Store holds.

    This is what makes every batch idempotent on both backends: a second run of the same input
    reads, compares and writes nothing, and says so in its counts.
    """
    counts = WriteCounts()
    batch: list[Item] = []

    def flush() -> None:
        nonlocal counts
        if not batch:
            return
        existing = {(i["pk"], i["sk"]): i for i in table.batch_get([(i["pk"], i["sk"]) for i in batch])}
        changed = [i for i in batch if existing.get((i["pk"], i["sk"])) != i]
        inserted = sum(1 for i in changed if (i["pk"], i["sk"]) not in existing)
        if changed:
            table.batch_put(changed)
        counts = counts + WriteCounts(inserted, len(changed) - inserted, len(batch) - len(changed))
        batch.clear()

    for item in items:
        batch.append({k: _plain(v) for k, v in item.items()})
        if len(batch) >= _BATCH:
            flush()
    flush()
    return counts


KeyFn = Callable[[dict[str, Any]], Key]

# How each dataset/table's rows are keyed in the Store.
ITEM_KEYS: dict[str, KeyFn] = {
    tables.USERS: lambda r: (r["user_id"], tables.PROFILE_SK),
    tables.PRODUCTS: lambda r: (r["product_id"], tables.PRODUCT_SK),
    tables.CAMPAIGNS: lambda r: (r["campaign_id"], tables.CAMPAIGN_SK),
    tables.PURCHASES: lambda r: (r["user_id"], tables.purchase_sk(r["ts"], r["order_id"], r["product_id"])),
    tables.USER_FEATURES: lambda r: (r["user_id"], tables.FEATURES_SK),
    tables.PRODUCT_FEATURES: lambda r: (r["product_id"], tables.FEATURES_SK),
    tables.USER_PRODUCT: lambda r: (r["user_id"], r["product_id"]),
}


def to_items(table_name: str, frame: pl.DataFrame) -> Iterable[Item]:
    """Rows of a frame as Store items of ``table_name`` (rows without a partition key are skipped)."""
    key = ITEM_KEYS[table_name]
    for row in frame.iter_rows(named=True):
        pk, sk = key(row)
        if pk is None:
            continue
        yield {"pk": pk, "sk": sk, **row}


def save_frame(store: Store, table_name: str, frame: pl.DataFrame) -> WriteCounts:
    return upsert_changed(store.table(table_name), to_items(table_name, frame))


def delete_keys(store: Store, table_name: str, keys: Sequence[Key]) -> int:
    table = store.table(table_name)
    for pk, sk in keys:
        table.delete(pk, sk)
    return len(keys)


def get_entity(store: Store, table_name: str, entity_id: str, *, consistent: bool = False) -> Item | None:
    """One user / product / campaign / feature row by id."""
    sk = {tables.USERS: tables.PROFILE_SK, tables.PRODUCTS: tables.PRODUCT_SK, tables.CAMPAIGNS: tables.CAMPAIGN_SK,
          tables.USER_FEATURES: tables.FEATURES_SK, tables.PRODUCT_FEATURES: tables.FEATURES_SK}[table_name]
    return store.table(table_name).get(entity_id, sk, consistent=consistent)


def purchases_of(store: Store, user_id: str, *, since: datetime | None = None, limit: int | None = None) -> list[Item]:
    """A user's purchase lines, newest first (one partition query, no scan)."""
    from notify_core.store.port import KeyRange

    key_range = KeyRange(start=tables.time_sk(since)) if since is not None else None
    return store.table(tables.PURCHASES).query(user_id, key_range=key_range, limit=limit, descending=True)

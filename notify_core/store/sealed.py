"""A Store wrapper that seals personal fields on the way in and opens them on the way out.

Tables listed in :data:`notify_core.security.crypto.PERSONAL_FIELDS` (``users``) get a
:class:`SealedTable`; every other table is the adapter's own object, untouched, so the hot paths
(events, purchases, schedules) pay nothing. Works over either adapter: the ciphertext is a string like
any other attribute, so SQLite and DynamoDB hold only ``enc:v1:...`` for an email or a name.

A condition on a personal field cannot match (each seal uses a fresh nonce): no code conditions on one.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from notify_core.security.crypto import PERSONAL_FIELDS, FieldSealer
from notify_core.store.port import (
    Columns,
    Condition,
    Item,
    Key,
    KeyRange,
    Store,
    Table,
    Update,
    check_attributes,
    check_frame,
    columns_of,
    last_of_each_key,
)

if TYPE_CHECKING:
    import polars as pl


class SealedTable:
    """One table whose personal fields are sealed at rest (see the module docstring)."""

    def __init__(self, inner: Table, sealer: FieldSealer, purpose: str) -> None:
        self.inner = inner
        self.name = inner.name
        self._sealer = sealer
        self._purpose = purpose

    def _in(self, item: Item) -> Item:
        return self._sealer.seal_row(self._purpose, item)

    def _out(self, item: Item) -> Item:
        return self._sealer.open_row(self._purpose, item)

    def get(self, pk: str, sk: str, *, consistent: bool = False) -> Item | None:
        item = self.inner.get(pk, sk, consistent=consistent)
        return None if item is None else self._out(item)

    def batch_get(self, keys: Sequence[Key], *, consistent: bool = False) -> list[Item]:
        return [self._out(i) for i in self.inner.batch_get(keys, consistent=consistent)]

    def query(self, pk: str, *, key_range: KeyRange | None = None, limit: int | None = None,
              descending: bool = False, consistent: bool = False) -> list[Item]:
        return [self._out(i) for i in self.inner.query(pk, key_range=key_range, limit=limit, descending=descending,
                                                       consistent=consistent)]

    def query_columns(self, pk: str, attributes: Sequence[str], *, key_range: KeyRange | None = None,
                      limit: int | None = None, descending: bool = False, consistent: bool = False) -> Columns:
        """The inner table's projection when no personal field is named (nothing to open); else the items
        opened, then projected."""
        check_attributes(attributes)
        options: dict[str, Any] = {"key_range": key_range, "limit": limit, "descending": descending,
                                   "consistent": consistent}
        if set(attributes).isdisjoint(PERSONAL_FIELDS[self._purpose]):
            return self.inner.query_columns(pk, attributes, **options)
        return columns_of(self.query(pk, **options), attributes)

    def batch_put(self, items: Iterable[Item]) -> int:
        return self.inner.batch_put(self._in(i) for i in items)

    def batch_put_frame(self, frame: pl.DataFrame) -> int:
        """Sealing works on items, so the rows become items first (the sealed tables are small)."""
        return self.inner.batch_put(self._in(i) for i in last_of_each_key(check_frame(frame)).iter_rows(named=True))

    def query_many(self, pks: Sequence[str], *, key_range: KeyRange | None = None,
                   consistent: bool = False) -> dict[str, list[Item]]:
        found = self.inner.query_many(pks, key_range=key_range, consistent=consistent)
        return {pk: [self._out(i) for i in items] for pk, items in found.items()}

    def query_columns_many(self, pks: Sequence[str], attributes: Sequence[str], *,
                           key_range: KeyRange | None = None, consistent: bool = False) -> dict[str, Columns]:
        """As :meth:`query_columns`: the inner projection when no personal field is named."""
        check_attributes(attributes)
        if set(attributes).isdisjoint(PERSONAL_FIELDS[self._purpose]):
            return self.inner.query_columns_many(pks, attributes, key_range=key_range, consistent=consistent)
        found = self.query_many(pks, key_range=key_range, consistent=consistent)
        return {pk: columns_of(items, attributes) for pk, items in found.items()}

    def put(self, item: Item, *, condition: Condition | None = None) -> None:
        self.inner.put(self._in(item), condition=condition)

    def update(self, pk: str, sk: str, *, set: Any, condition: Condition | None = None) -> Item:
        return self._out(self.inner.update(pk, sk, set=self._in(dict(set)), condition=condition))

    def update_many(self, updates: Sequence[Update]) -> list[Item | None]:
        sealed = [Update(u.pk, u.sk, self._in(dict(u.set)), u.condition) for u in updates]
        return [None if i is None else self._out(i) for i in self.inner.update_many(sealed)]

    def delete(self, pk: str, sk: str, *, condition: Condition | None = None) -> None:
        self.inner.delete(pk, sk, condition=condition)

    def scan(self, *, segment_size: int = 1000) -> Iterator[Item]:
        for item in self.inner.scan(segment_size=segment_size):
            yield self._out(item)


class SealedStore:
    """``inner`` with :class:`SealedTable` for the tables that hold personal fields."""

    def __init__(self, inner: Store, sealer: FieldSealer) -> None:
        self.inner = inner
        self.sealer = sealer
        self.single_writer = inner.single_writer
        self._tables: dict[str, Table] = {}

    def table(self, name: str) -> Table:
        table = self._tables.get(name)
        if table is None:
            raw = self.inner.table(name)
            table = SealedTable(raw, self.sealer, name) if name in PERSONAL_FIELDS else raw
            self._tables[name] = table
        return table

    def tune_for_bulk_writes(self) -> None:
        self.inner.tune_for_bulk_writes()

    def close(self) -> None:
        self.inner.close()

    def __getattr__(self, name: str) -> Any:  # adapter extras (path, table_names...) stay reachable
        return getattr(self.inner, name)

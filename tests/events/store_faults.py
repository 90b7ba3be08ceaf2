"""A Store with one table replaced by a faulty stand-in: the consumer tests' way to make the Store refuse a
row (a data error) or fail (down, throttled) for chosen items, with every other table the real adapter's."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from notify_core.store.port import Store, Table


class TableStandIn:
    """Forwards everything to ``table``; a subclass overrides the writes it makes fail."""

    def __init__(self, table: Table) -> None:
        self.table = table

    def __getattr__(self, attr: str) -> Any:
        return getattr(self.table, attr)


class FaultyStore:
    """``inner`` with its table ``name`` wrapped by ``stand_in`` (each time the consumer asks for it)."""

    def __init__(self, inner: Store, *, name: str, stand_in: Callable[[Table], TableStandIn]) -> None:
        self.inner, self.single_writer = inner, inner.single_writer
        self._name, self._stand_in = name, stand_in

    def tune_for_bulk_writes(self) -> None:
        self.inner.tune_for_bulk_writes()

    def table(self, name: str) -> Any:
        table = self.inner.table(name)
        return self._stand_in(table) if name == self._name else table

    def close(self) -> None:
        self.inner.close()

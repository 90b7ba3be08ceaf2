"""The Store port: a small key-value table API shaped like DynamoDB.

Every table has a string partition key ``pk`` and a string sort key ``sk``; items are flat dicts of
JSON-like values (str, int, float, bool, None, list, dict) plus ``bytes`` for vectors. The access patterns
are the ones DynamoDB serves well, so both adapters stay thin and nothing depends on SQL joins:

* ``get`` / ``batch_get`` by full key,
* ``query`` one partition by sort-key prefix or range, in order, with a limit (``query_columns``: the same
  items as columns of a few named attributes),
* ``batch_put`` (idempotent overwrite), ``put`` and ``update`` with a condition, ``delete``,
* TTL: an item whose numeric ``ttl`` attribute (epoch seconds) is in the past is treated as absent
  by every read and by ``not_exists`` conditions, whether or not the backend has swept it yet
  (DynamoDB deletes expired items lazily, up to days later).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from notify_core.errors import ValidationError

if TYPE_CHECKING:
    import polars as pl

Item = dict[str, Any]
Key = tuple[str, str]
Columns = dict[str, list[Any]]  # attribute -> its value in each item, in the items' order (None where absent)

TTL_ATTRIBUTE = "ttl"
KEY_ATTRIBUTES = ("pk", "sk")


@dataclass(frozen=True, slots=True)
class Condition:
    """A write condition both backends can evaluate atomically.

    ``not_exists``: no live item has this key (an expired item counts as absent).
    ``equals``: the live item exists and each named attribute equals the given value.
    """

    not_exists: bool = False
    equals: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.not_exists and self.equals:
            raise ValueError("a Condition is either not_exists or equals, not both")

    @classmethod
    def absent(cls) -> Condition:
        return cls(not_exists=True)

    @classmethod
    def matches(cls, **attributes: Any) -> Condition:
        return cls(equals=dict(attributes))

    def holds_for(self, current: Item | None) -> bool:
        """Reference semantics (used by the SQLite adapter and documented for DynamoDB's)."""
        if self.not_exists:
            return current is None
        if current is None:
            return False
        return all(current.get(name) == value for name, value in self.equals.items())


@dataclass(frozen=True, slots=True)
class KeyRange:
    """Sort-key selection for :meth:`Table.query`: a prefix, or an inclusive ``[start, end]`` range."""

    prefix: str | None = None
    start: str | None = None
    end: str | None = None

    def __post_init__(self) -> None:
        if self.prefix is not None and (self.start is not None or self.end is not None):
            raise ValueError("KeyRange takes a prefix or a start/end range, not both")


@dataclass(frozen=True, slots=True)
class Update:
    """One conditional update of a batch (see :meth:`Table.update_many`)."""

    pk: str
    sk: str
    set: Mapping[str, Any]
    condition: Condition | None = None


def check_key(pk: Any, sk: Any) -> None:
    """Reject keys no backend accepts, with the port's error and before any I/O (both adapters call this)."""
    if not isinstance(pk, str) or not isinstance(sk, str) or not pk or not sk:
        raise ValidationError(f"Store keys must be non-empty strings, got pk={pk!r} sk={sk!r}")


def check_frame(frame: pl.DataFrame) -> pl.DataFrame:
    """The rows of a :meth:`Table.batch_put_frame`, checked as :func:`check_key` and the codec check items
    (:func:`last_of_each_key` then keeps the last row of a repeated key, as :meth:`Table.batch_put` does)."""
    import polars as pl

    for key in ("pk", "sk"):
        if key not in frame.columns or frame.schema[key] != pl.String:
            raise ValidationError(f"a frame of items needs a string column {key!r}")
    bad = frame.filter(pl.col("pk").is_null() | pl.col("sk").is_null() | (pl.col("pk") == "") | (pl.col("sk") == ""))
    if bad.height:
        row = bad.row(0, named=True)
        raise ValidationError(f"Store keys must be non-empty strings, got pk={row['pk']!r} sk={row['sk']!r}")
    floats = [name for name, dtype in frame.schema.items() if dtype.is_float()]
    if floats and frame.select(pl.any_horizontal(~pl.col(*floats).is_finite()).any()).item():
        raise ValidationError("Out of range float values are not JSON compliant")
    allowed = (pl.String, pl.Boolean, pl.Null)
    for name, dtype in frame.schema.items():
        if not (dtype in allowed or dtype.is_integer() or dtype.is_float()):
            raise ValidationError(f"a Store item cannot hold {dtype} (column {name!r})")
    return frame


def last_of_each_key(frame: pl.DataFrame) -> pl.DataFrame:
    """The rows of a checked frame in key order, the last row of a repeated key kept (last wins):
    a sort and a look at the next row, cheaper than a hash ``unique`` on millions of keys.

    The sort is first an unstable one: it costs about half the CPU of a stable sort on string keys
    (a plan's 300k schedules rows: 0.17 against 0.30 CPU-s), and it can only reorder rows whose keys are
    equal. When no two neighbours share a key after it, the keys were unique and its order is the stable
    order; only a frame with a repeated key (rare: the plan writer dedupes first) is sorted again,
    stably, so that the last row of each key wins as in :meth:`Table.batch_put`."""
    import polars as pl

    ordered = frame.sort("pk", "sk")
    repeated = (pl.col("pk") == pl.col("pk").shift(-1)) & (pl.col("sk") == pl.col("sk").shift(-1))
    if not ordered.select(repeated.fill_null(False).any()).item():
        return ordered
    frame = frame.sort("pk", "sk", maintain_order=True)
    last = (pl.col("pk") != pl.col("pk").shift(-1)) | (pl.col("sk") != pl.col("sk").shift(-1))
    return frame.filter(last.fill_null(True))


def check_pk(pk: Any) -> None:
    if not isinstance(pk, str) or not pk:
        raise ValidationError(f"Store partition keys must be non-empty strings, got pk={pk!r}")


def columns_of(items: Iterable[Item], attributes: Sequence[str]) -> Columns:
    """The named attributes of ``items`` as columns (None where an item lacks one): what
    :meth:`Table.query_columns` returns, made from whole items by an adapter that has them anyway."""
    rows = list(items)
    return {name: [item.get(name) for item in rows] for name in dict.fromkeys(attributes)}


def check_attributes(attributes: Sequence[str]) -> None:
    """A projection's attribute names, checked the same way by every adapter before any I/O."""
    if isinstance(attributes, str) or not attributes or not all(isinstance(a, str) and a for a in attributes):
        raise ValidationError(f"attributes must be a non-empty sequence of non-empty names, got {attributes!r}")


def check_query(pk: Any, limit: int | None) -> None:
    """A query's partition key and limit, checked the same way by every adapter before any I/O."""
    check_pk(pk)
    if limit is not None and limit < 0:
        raise ValidationError(f"query limit must be >= 0, got {limit}")


def is_expired(item: Mapping[str, Any], *, now: float) -> bool:
    """``now`` is the adapter's clock (epoch seconds): TTL expiry is judged where the Store is, not here."""
    ttl = item.get(TTL_ATTRIBUTE)
    if ttl is None:
        return False
    return float(ttl) <= now


@runtime_checkable
class Table(Protocol):
    """One table of the Store. Implementations must be safe to share between threads."""

    name: str

    def get(self, pk: str, sk: str, *, consistent: bool = False) -> Item | None: ...

    def batch_get(self, keys: Sequence[Key], *, consistent: bool = False) -> list[Item]:
        """Live items for the keys that exist, in no particular order."""
        ...

    def query(
        self,
        pk: str,
        *,
        key_range: KeyRange | None = None,
        limit: int | None = None,
        descending: bool = False,
        consistent: bool = False,
    ) -> list[Item]: ...

    def query_columns(
        self,
        pk: str,
        attributes: Sequence[str],
        *,
        key_range: KeyRange | None = None,
        limit: int | None = None,
        descending: bool = False,
        consistent: bool = False,
    ) -> Columns:
        """:meth:`query`'s items, in the same order, as one column per named attribute (None where an item
        lacks it; a repeated name is one column): the values equal those of the items :meth:`query` returns.

        Why: a hot read that needs a few attributes of many items (the recommender reads three of each of a
        user's ~60 product rows, per request and per planned user) paid for a dict of every attribute of
        every item, ~a fifth of ranking a user. SQLite decodes only the named attributes of each stored
        document; DynamoDB asks for them alone (``ProjectionExpression``, less on the wire)."""
        ...

    def batch_put(self, items: Iterable[Item]) -> int:
        """Overwrite items (unconditionally, idempotently); returns the number written."""
        ...

    def batch_put_frame(self, frame: pl.DataFrame) -> int:
        """:meth:`batch_put` for many flat items at once: one row per item, columns ``pk``, ``sk`` and the
        attributes (str, int, float, bool; a null is an attribute holding None, as in an item dict).

        Why a frame: a plan of millions of notifications is built column by column, and turning it into one
        dict per item first costs more than the write. An adapter that can encode rows without those dicts
        (SQLite: polars writes the JSON) does; others convert. Same contract as :meth:`batch_put`
        (last wins for a repeated key, non-finite floats and empty keys rejected before any write).
        """
        ...

    def query_many(self, pks: Sequence[str], *, key_range: KeyRange | None = None,
                   consistent: bool = False) -> dict[str, list[Item]]:
        """:meth:`query` for many partitions: every pk of ``pks`` maps to its items in sk order (an empty
        list when it has none). SQLite answers thousands of partitions per statement; DynamoDB one query each.
        """
        ...

    def query_columns_many(self, pks: Sequence[str], attributes: Sequence[str], *,
                           key_range: KeyRange | None = None, consistent: bool = False) -> dict[str, Columns]:
        """:meth:`query_columns` for many partitions: every pk of ``pks`` maps to what it answers (empty
        columns when it has no item).

        Why: ranking a block of users read each one's product rows with a query per user. On DynamoDB that
        was a round trip a user, one after the other, which at a region's few milliseconds dwarfs the
        ranking: DynamoDB keeps several queries in flight. SQLite runs one indexed statement per partition
        (measured faster there than one statement for them all)."""
        ...

    def put(self, item: Item, *, condition: Condition | None = None) -> None:
        """Write one item; raises ``ConditionFailedError`` if ``condition`` does not hold."""
        ...

    def update(
        self, pk: str, sk: str, *, set: Mapping[str, Any], condition: Condition | None = None
    ) -> Item:
        """Set attributes of an item (creating it if absent and no condition forbids); returns the new item."""
        ...

    def update_many(self, updates: Sequence[Update]) -> list[Item | None]:
        """Apply each update whose condition holds; the new item per update, or None where it did not.

        Each update is atomic on its own, like :meth:`update`; the batch is not a transaction (a failed
        condition does not undo the others). It exists for throughput: SQLite applies the whole batch in
        one write transaction (one commit instead of one per item), DynamoDB item by item.
        """
        ...

    def delete(self, pk: str, sk: str, *, condition: Condition | None = None) -> None: ...

    def scan(self, *, segment_size: int = 1000) -> Iterator[Item]:
        """Every live item. For maintenance and tests only: analytics read the lake, not the Store."""
        ...


@runtime_checkable
class Store(Protocol):
    """A set of tables on one backend."""

    # True where the backend admits one writer at a time (SQLite, whose adapter queues them on its write
    # gate): a caller may then group many threads' writes behind one lock of its own at no loss of
    # parallelism (the delivery worker's outcome group commit).
    single_writer: bool

    def table(self, name: str) -> Table:
        """The named table, created on first use if the backend allows it."""
        ...

    def tune_for_bulk_writes(self) -> None:
        """A hint from a thread about to write many rows (the stream consumer's writer, ingestion): an
        adapter that can trade memory for write speed on this thread's connection does; others do nothing."""
        ...

    def close(self) -> None: ...

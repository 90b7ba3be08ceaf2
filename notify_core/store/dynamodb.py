"""DynamoDB adapter of the Store port: the cloud backend, kept as thin as the SQLite one.

Each Notify table is one DynamoDB table named ``<table_prefix><name>`` with ``pk`` (HASH, S) and ``sk``
(RANGE, S), on-demand billing and native TTL on the ``ttl`` attribute. The port's contract is written in
terms of *live* items, but DynamoDB sweeps expired items lazily (up to days later), so this adapter hides
expired items itself on every read and writes every condition so that an expired item counts as absent,
exactly as the SQLite adapter does. The low-level client is used (not the resource API) because it is
thread-safe and lets us own the number/bytes mapping:

* ``float`` <-> ``N`` via ``Decimal(str(x))`` (the shortest repr, so 0.1 stays 0.1); ``N`` comes back as
  ``int`` when integral, else ``float`` (so a stored ``1.0`` reads back as ``1``, which compares equal);
  a float or ``Decimal`` outside ``N``'s range (nonzero magnitudes 1E-130 to 9.99...E+125) is refused
  here with a :class:`ValidationError` that names the range, before the request is sent,
* ``bytes`` <-> ``B``, lists/tuples <-> ``L``, dicts <-> ``M``, ``None`` <-> ``NULL``.
"""

from __future__ import annotations

import math
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from notify_core.clock import SYSTEM_CLOCK, Clock
from notify_core.errors import (
    BackendError,
    ConditionFailedError,
    NotifyError,
    UpdatesPartlyAppliedError,
    ValidationError,
)
from notify_core.store.port import (
    KEY_ATTRIBUTES,
    TTL_ATTRIBUTE,
    Columns,
    Condition,
    Item,
    Key,
    KeyRange,
    Update,
    check_attributes,
    check_frame,
    check_key,
    check_query,
    columns_of,
    is_expired,
    last_of_each_key,
)

if TYPE_CHECKING:
    import polars as pl

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")  # same table names as the SQLite adapter accepts
_PREFIX = re.compile(r"^[A-Za-z0-9_.\-]*$")  # DynamoDB's table-name alphabet
_GET_CHUNK = 100  # BatchGetItem limit
_PUT_CHUNK = 25  # BatchWriteItem limit
_MAX_RETRY_ROUNDS = 10  # rounds of Unprocessed{Keys,Items} before giving up
_BACKOFF_BASE_S = 0.05
_BACKOFF_CAP_S = 2.0
_T = TypeVar("_T")
_TABLE_ACTIVE_TIMEOUT_S = 300.0
# Queries of query_many in flight at once (within the client's 32 pooled connections): DynamoDB has no
# multi-partition query. 960 partitions with a 4 ms round trip added to DynamoDB Local: 6.6-7.2 s one after
# another, 1.75-2.07 s 16 at a time; on bare loopback both are CPU-bound on 2 cores (1.2-1.4x). Measured by
# bench/bench_query_many.py.
_QUERY_THREADS = 16

AttributeValue = dict[str, Any]
# DynamoDB's Number range: 0, or a magnitude in [1E-130, 1E+126) (the largest is 9.99...E+125, 38 digits).
_N_SMALLEST = Decimal("1E-130")
_N_BEYOND = Decimal("1E+126")


# value mapping ------------------------------------------------------------------------------------
def serialize(value: Any) -> AttributeValue:
    """A Python value as a DynamoDB AttributeValue (see the module docstring for the mapping)."""
    if value is None:
        return {"NULL": True}
    if isinstance(value, bool):  # before int: bool is an int subclass
        return {"BOOL": value}
    if isinstance(value, str):
        return {"S": value}
    if isinstance(value, int):
        return {"N": str(value)}
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValidationError(f"a Store item cannot hold the non-finite number {value!r}")
        return {"N": _number_text(Decimal(str(value)), value)}
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValidationError(f"a Store item cannot hold the non-finite number {value!r}")
        return {"N": _number_text(value, value)}
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"B": bytes(value)}
    if isinstance(value, Mapping):
        return {"M": {str(name): serialize(inner) for name, inner in value.items()}}
    if isinstance(value, (list, tuple)):
        return {"L": [serialize(inner) for inner in value]}
    raise ValidationError(f"a Store item cannot hold {type(value).__name__}")


def _number_text(number: Decimal, value: float | Decimal) -> str:
    """``number`` as an ``N`` string, or a :class:`ValidationError` when DynamoDB could not hold it.

    Why here: DynamoDB answers such a number with "Number underflow"/"overflow" only once the request is
    sent, in words that name neither the attribute's value nor the range; :mod:`notify_core.bounds` keeps
    these numbers out of captured events, and this check gives whatever reaches the adapter by another
    path a refusal that names the value and the range before the request is sent (as a NaN gets)."""
    if number and not _N_SMALLEST <= abs(number) < _N_BEYOND:
        raise ValidationError(
            f"a Store item cannot hold the number {value!r}: DynamoDB numbers are 0 or of magnitude "
            f"{_N_SMALLEST} to 9.99...E+125 ({'underflow' if abs(number) < _N_SMALLEST else 'overflow'})")
    return str(number)


def _number(text: str) -> int | float:
    number = Decimal(text)
    return int(number) if number == number.to_integral_value() else float(number)


def deserialize(value: AttributeValue) -> Any:
    """A DynamoDB AttributeValue as the Python value the port promises."""
    (kind, inner), *_ = value.items()
    if kind == "S":
        return inner
    if kind == "N":
        return _number(inner)
    if kind == "BOOL":
        return bool(inner)
    if kind == "NULL":
        return None
    if kind == "B":
        return bytes(inner)
    if kind == "M":
        return {name: deserialize(v) for name, v in inner.items()}
    if kind == "L":
        return [deserialize(v) for v in inner]
    # Sets are never written by this adapter; read them as lists in case another writer used them.
    if kind == "SS":
        return list(inner)
    if kind == "NS":
        return [_number(v) for v in inner]
    if kind == "BS":
        return [bytes(v) for v in inner]
    raise BackendError(f"unexpected DynamoDB attribute type {kind!r}")


def serialize_item(item: Mapping[str, Any]) -> dict[str, AttributeValue]:
    return {str(name): serialize(value) for name, value in item.items()}


def deserialize_item(item: Mapping[str, AttributeValue]) -> Item:
    return {name: deserialize(value) for name, value in item.items()}


def _key(pk: str, sk: str) -> dict[str, AttributeValue]:
    return {"pk": {"S": pk}, "sk": {"S": sk}}


# conditions ---------------------------------------------------------------------------------------
class _Expression:
    """Collects placeholders so every attribute name is escaped (``ttl``, ``name``, ``status``... are
    DynamoDB reserved words) and every value is passed as a parameter."""

    def __init__(self) -> None:
        self.names: dict[str, str] = {}
        self.values: dict[str, AttributeValue] = {}

    def name(self, attribute: str) -> str:
        for placeholder, existing in self.names.items():
            if existing == attribute:
                return placeholder
        placeholder = f"#n{len(self.names)}"
        self.names[placeholder] = attribute
        return placeholder

    def value(self, value: Any) -> str:
        placeholder = f":v{len(self.values)}"
        self.values[placeholder] = serialize(value)
        return placeholder

    def expired(self, now: float) -> str:
        """True when the stored item is past its TTL. False when ``ttl`` is missing, NULL or not a number,
        matching :func:`notify_core.store.port.is_expired` for every value the port writes."""
        return f"{self.name(TTL_ATTRIBUTE)} <= {self.value(now)}"

    def live(self, now: float) -> str:
        """True for an item that exists and has not expired (the negation of ``absent``)."""
        return f"(attribute_exists({self.name('pk')}) AND NOT ({self.expired(now)}))"

    def absent(self, now: float) -> str:
        """True for no item or an expired one: an expired item counts as absent, as in SQLite."""
        return f"(attribute_not_exists({self.name('pk')}) OR {self.expired(now)})"

    def condition(self, condition: Condition, now: float) -> str:
        if condition.not_exists:
            return self.absent(now)
        parts = [self.live(now)]
        for attribute, expected in condition.equals.items():
            name = self.name(attribute)
            if expected is None:
                # The reference semantics compare ``current.get(name) == None``: a missing attribute matches.
                parts.append(f"(attribute_not_exists({name}) OR {name} = {self.value(None)})")
            else:
                parts.append(f"{name} = {self.value(expected)}")
        return " AND ".join(parts)

    def params(self, **extra: Any) -> dict[str, Any]:
        params: dict[str, Any] = dict(extra)
        if self.names:
            params["ExpressionAttributeNames"] = self.names
        if self.values:
            params["ExpressionAttributeValues"] = self.values
        return params


def _aws_code(exc: BaseException) -> str:
    """The AWS error code behind a translated error ("" if it did not come from a ClientError)."""
    cause = exc.__cause__
    return str(cause.response.get("Error", {}).get("Code", "")) if isinstance(cause, ClientError) else ""


def _backoff(round_: int) -> None:
    time.sleep(min(_BACKOFF_CAP_S, _BACKOFF_BASE_S * 2**round_))


# the store ----------------------------------------------------------------------------------------
class DynamoStore:
    """A Store on DynamoDB (or DynamoDB Local when ``endpoint_url`` points at one). Thread-safe."""

    single_writer = False

    def tune_for_bulk_writes(self) -> None:
        """Nothing to tune: DynamoDB's write speed is the table's capacity."""

    def __init__(
        self,
        *,
        region: str,
        endpoint_url: str | None = None,
        table_prefix: str = "notify_",
        create_tables: bool = True,
        session: boto3.Session | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        if not _PREFIX.match(table_prefix):
            raise ValidationError(f"invalid DynamoDB table prefix {table_prefix!r}")
        self.region = region
        self.clock = clock  # hides expired-but-unswept items, as DynamoDB's own TTL would
        self.endpoint_url = endpoint_url
        self.table_prefix = table_prefix
        self.create_tables = create_tables
        session = session or boto3.Session()
        #: The low-level client, public for admin work the port does not cover (tests delete tables with it).
        self.client: Any = session.client(
            "dynamodb",
            region_name=region,
            endpoint_url=endpoint_url,
            config=Config(
                retries={"mode": "standard", "max_attempts": 5},  # throttling and 5xx retried by botocore
                max_pool_connections=32,  # the worker shares one store between many threads
                connect_timeout=5,
                read_timeout=30,
            ),
        )
        self._tables: dict[str, DynamoTable] = {}
        self._lock = threading.Lock()
        self._readers: ThreadPoolExecutor | None = None
        self._readers_pid = 0

    def where(self) -> str:
        return self.endpoint_url or f"DynamoDB in {self.region}"

    def call(self, operation: str, table: str, **params: Any) -> Any:
        """Run one client operation, translating errors into the port's hierarchy.

        ``ConditionalCheckFailedException`` is the only expected failure (a lost claim); a
        ``ValidationException`` means the request itself is wrong (an item over 400 KB, a number out of
        DynamoDB's range) and no retry will fix it; everything else may be transient.
        """
        try:
            return getattr(self.client, operation)(**params)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = error.get("Code", "")
            message = error.get("Message", str(exc))
            if code == "ConditionalCheckFailedException":
                raise ConditionFailedError(f"condition failed on {table}: {message}") from exc
            if code == "ValidationException":
                raise ValidationError(f"DynamoDB rejected {operation} on {table}: {message}") from exc
            if code == "ResourceNotFoundException":
                raise BackendError(
                    f"DynamoDB table {table} does not exist at {self.where()} "
                    f"(create it, or build the store with create_tables=True): {message}"
                ) from exc
            raise BackendError(f"DynamoDB {operation} on {table} failed ({code}): {message}") from exc
        except NoCredentialsError as exc:
            raise BackendError(
                f"no AWS credentials for {self.where()}; DynamoDB Local accepts any (e.g. AWS_ACCESS_KEY_ID=local)"
            ) from exc
        except BotoCoreError as exc:
            raise BackendError(f"DynamoDB {operation} on {table} at {self.where()} failed: {exc}") from exc

    def table(self, name: str) -> DynamoTable:
        if not _NAME.match(name):
            raise ValidationError(f"invalid table name {name!r}")
        with self._lock:
            table = self._tables.get(name)
            if table is None:
                full_name = self.table_prefix + name
                if not 3 <= len(full_name) <= 255:
                    raise ValidationError(f"DynamoDB table names are 3 to 255 characters long, got {full_name!r}")
                if self.create_tables:
                    self._ensure_table(full_name)
                table = self._tables[name] = DynamoTable(self, name, full_name)
        return table

    def _ensure_table(self, full_name: str) -> None:
        """Create the table if missing (racing creators are fine), wait for ACTIVE, then switch TTL on."""
        try:
            status = self.call("describe_table", full_name, TableName=full_name)["Table"]["TableStatus"]
            created = False
        except BackendError as exc:
            if _aws_code(exc) != "ResourceNotFoundException":
                raise
            try:
                status = self.call(
                    "create_table",
                    full_name,
                    TableName=full_name,
                    BillingMode="PAY_PER_REQUEST",
                    AttributeDefinitions=[
                        {"AttributeName": "pk", "AttributeType": "S"},
                        {"AttributeName": "sk", "AttributeType": "S"},
                    ],
                    KeySchema=[
                        {"AttributeName": "pk", "KeyType": "HASH"},
                        {"AttributeName": "sk", "KeyType": "RANGE"},
                    ],
                )["TableDescription"]["TableStatus"]
                created = True
            except BackendError as create_exc:
                if _aws_code(create_exc) != "ResourceInUseException":
                    raise
                status, created = "CREATING", False  # another process won the race
        deadline = time.monotonic() + _TABLE_ACTIVE_TIMEOUT_S
        while status != "ACTIVE":
            if time.monotonic() > deadline:
                raise BackendError(f"DynamoDB table {full_name} not ACTIVE after {_TABLE_ACTIVE_TIMEOUT_S:.0f} s")
            time.sleep(0.5)
            status = self.call("describe_table", full_name, TableName=full_name)["Table"]["TableStatus"]
        if created:
            self.call(
                "update_time_to_live",
                full_name,
                TableName=full_name,
                TimeToLiveSpecification={"Enabled": True, "AttributeName": TTL_ATTRIBUTE},
            )

    def readers(self) -> ThreadPoolExecutor:
        """The threads :meth:`DynamoTable.query_many` runs its queries on (made on first use, one per store)."""
        with self._lock:
            if self._readers is None or self._readers_pid != os.getpid():  # a forked child has none of the threads
                self._readers = ThreadPoolExecutor(max_workers=_QUERY_THREADS, thread_name_prefix="dynamodb-query")
                self._readers_pid = os.getpid()
            return self._readers

    def close(self) -> None:
        with self._lock:
            readers, self._readers = self._readers, None
        if readers is not None:
            readers.shutdown(wait=True)
        self.client.close()


class DynamoTable:
    """One table; see :class:`notify_core.store.port.Table` for the contract."""

    def __init__(self, store: DynamoStore, name: str, full_name: str) -> None:
        self.store = store
        self.name = name
        self.full_name = full_name

    def _call(self, operation: str, **params: Any) -> Any:
        return self.store.call(operation, self.full_name, **params)

    # reads -------------------------------------------------------------------------------------
    def get(self, pk: str, sk: str, *, consistent: bool = False) -> Item | None:
        check_key(pk, sk)
        response = self._call("get_item", TableName=self.full_name, Key=_key(pk, sk), ConsistentRead=consistent)
        raw = response.get("Item")
        if raw is None:
            return None
        item = deserialize_item(raw)
        return None if is_expired(item, now=self.store.clock.now()) else item

    def batch_get(self, keys: Sequence[Key], *, consistent: bool = False) -> list[Item]:
        for pk, sk in keys:
            check_key(pk, sk)
        unique = list(dict.fromkeys((pk, sk) for pk, sk in keys))  # BatchGetItem rejects duplicate keys
        found: list[Item] = []
        for start in range(0, len(unique), _GET_CHUNK):
            pending: list[dict[str, AttributeValue]] = [_key(pk, sk) for pk, sk in unique[start : start + _GET_CHUNK]]
            round_ = 0
            while pending:
                response = self._call(
                    "batch_get_item",
                    RequestItems={self.full_name: {"Keys": pending, "ConsistentRead": consistent}},
                )
                found.extend(deserialize_item(raw) for raw in response.get("Responses", {}).get(self.full_name, []))
                pending = response.get("UnprocessedKeys", {}).get(self.full_name, {}).get("Keys", [])
                if pending:
                    round_ += 1
                    if round_ > _MAX_RETRY_ROUNDS:
                        raise BackendError(
                            f"DynamoDB left {len(pending)} keys of {self.full_name} unprocessed after "
                            f"{_MAX_RETRY_ROUNDS} retries (throttled?)"
                        )
                    _backoff(round_)
        now = self.store.clock.now()
        return [item for item in found if not is_expired(item, now=now)]

    def query(
        self,
        pk: str,
        *,
        key_range: KeyRange | None = None,
        limit: int | None = None,
        descending: bool = False,
        consistent: bool = False,
    ) -> list[Item]:
        check_query(pk, limit)
        return self._query(pk, key_range=key_range, limit=limit, descending=descending, consistent=consistent)

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
        """The Query with a ``ProjectionExpression`` of the named attributes (and ``ttl``, which the
        client-side expiry check reads): less on the wire; the read capacity is the same."""
        check_query(pk, limit)
        check_attributes(attributes)
        items = self._query(pk, key_range=key_range, limit=limit, descending=descending, consistent=consistent,
                            projection=(*attributes, TTL_ATTRIBUTE))
        return columns_of(items, attributes)

    def _query(self, pk: str, *, key_range: KeyRange | None, limit: int | None, descending: bool,
               consistent: bool, projection: Sequence[str] = ()) -> list[Item]:
        if limit == 0:
            return []  # DynamoDB rejects Limit=0
        expr = _Expression()
        key_condition = f"{expr.name('pk')} = {expr.value(pk)}"
        if key_range is not None:
            # Empty strings cannot be key-condition values in DynamoDB; they mean "no bound" here
            # (every sk is a non-empty string, so >= "" and begins_with "" hold for all of them).
            start = key_range.start or None
            if key_range.end is not None and (key_range.end == "" or (start is not None and start > key_range.end)):
                return []  # empty range; DynamoDB would reject BETWEEN with lower > upper
            # ``sk`` is named only inside a condition that uses it: DynamoDB rejects a request whose
            # ExpressionAttributeNames hold a name no expression uses, so a range without any bound
            # (KeyRange(), KeyRange(start=""), KeyRange(prefix="")) adds nothing: the whole partition, as on SQLite.
            if key_range.prefix:
                key_condition += f" AND begins_with({expr.name('sk')}, {expr.value(key_range.prefix)})"
            elif start is not None and key_range.end is not None:
                key_condition += (f" AND {expr.name('sk')} BETWEEN {expr.value(start)} "
                                  f"AND {expr.value(key_range.end)}")
            elif start is not None:
                key_condition += f" AND {expr.name('sk')} >= {expr.value(start)}"
            elif key_range.end is not None:
                key_condition += f" AND {expr.name('sk')} <= {expr.value(key_range.end)}"
        params = expr.params(
            TableName=self.full_name,
            KeyConditionExpression=key_condition,
            ScanIndexForward=not descending,
            ConsistentRead=consistent,
        )
        if projection:
            params["ProjectionExpression"] = ", ".join(expr.name(a) for a in dict.fromkeys(projection))
        items: list[Item] = []
        for item in self._pages("query", params, expr, page_size=None if limit is None else limit):
            items.append(item)
            if limit is not None and len(items) >= limit:
                break
        return items

    def scan(self, *, segment_size: int = 1000) -> Iterator[Item]:
        expr = _Expression()
        # Consistent: scan is for maintenance and tests, which must see what they just wrote.
        params = expr.params(TableName=self.full_name, ConsistentRead=True)
        yield from self._pages("scan", params, expr, page_size=max(1, segment_size))

    def _pages(
        self, operation: str, params: dict[str, Any], expr: _Expression, page_size: int | None
    ) -> Iterator[Item]:
        """Follow ``LastEvaluatedKey`` page by page. Expired items are filtered server-side (saves transfer;
        ``Limit`` counts items *before* the filter, so we keep paging) and again client-side at yield time."""
        now = self.store.clock.now()
        params = dict(params)
        params["FilterExpression"] = f"NOT ({expr.expired(now)})"
        params["ExpressionAttributeNames"] = expr.names
        params["ExpressionAttributeValues"] = expr.values
        if page_size is not None:
            params["Limit"] = page_size
        while True:
            response = self._call(operation, **params)
            for raw in response.get("Items", []):
                item = deserialize_item(raw)
                if not is_expired(item, now=now):
                    yield item
            last = response.get("LastEvaluatedKey")
            if not last:
                return
            params["ExclusiveStartKey"] = last

    # writes ------------------------------------------------------------------------------------
    def batch_put(self, items: Iterable[Item]) -> int:
        """Unconditional overwrite in BatchWriteItem chunks of 25 distinct keys.

        BatchWriteItem rejects a request naming one key twice, so a chunk is keyed by (pk, sk) and a later
        item replaces an earlier one (last wins, as with SQLite's upsert). Chunks are written in input
        order, each fully (unprocessed items retried) before the next, so last-wins also holds across chunks.
        """
        written = 0
        chunk: dict[Key, dict[str, AttributeValue]] = {}
        for item in items:
            pk, sk = item.get("pk"), item.get("sk")
            check_key(pk, sk)
            key = (str(pk), str(sk))
            if key not in chunk and len(chunk) >= _PUT_CHUNK:
                self._write_chunk(list(chunk.values()))
                chunk = {}
            chunk[key] = serialize_item(item)
            written += 1
        if chunk:
            self._write_chunk(list(chunk.values()))
        return written

    def batch_put_frame(self, frame: pl.DataFrame) -> int:
        """:meth:`batch_put` of a frame's rows: BatchWriteItem needs one typed map per item anyway, so the
        rows become items here (checked as the port says) and go through the same 25-item chunks."""
        return self.batch_put(last_of_each_key(check_frame(frame)).iter_rows(named=True))

    def query_many(self, pks: Sequence[str], *, key_range: KeyRange | None = None,
                   consistent: bool = False) -> dict[str, list[Item]]:
        """One Query per partition (DynamoDB has no multi-partition query; BatchGetItem needs full keys), several
        in flight (:meth:`_each_partition`)."""
        return self._each_partition(pks, lambda pk: self.query(pk, key_range=key_range, consistent=consistent))

    def query_columns_many(self, pks: Sequence[str], attributes: Sequence[str], *,
                           key_range: KeyRange | None = None, consistent: bool = False) -> dict[str, Columns]:
        """One projected Query per partition (:meth:`query_columns`), up to ``_QUERY_THREADS`` in flight."""
        check_attributes(attributes)
        return self._each_partition(
            pks, lambda pk: self.query_columns(pk, attributes, key_range=key_range, consistent=consistent))

    def _each_partition(self, pks: Sequence[str], answer: Callable[[str], _T]) -> dict[str, _T]:
        """``answer(pk)`` for each distinct pk, in their first order, up to ``_QUERY_THREADS`` in flight (the
        store's client is thread-safe; a query's round trip, not its work, is what a sequence waits on). The
        first failing query's error is raised."""
        unique = list(dict.fromkeys(pks))
        for pk in unique:
            check_query(pk, None)
        if len(unique) <= 1:
            return {pk: answer(pk) for pk in unique}
        return dict(zip(unique, self.store.readers().map(answer, unique), strict=True))

    def _write_chunk(self, items: list[dict[str, AttributeValue]]) -> None:
        pending: list[dict[str, Any]] = [{"PutRequest": {"Item": item}} for item in items]
        round_ = 0
        while pending:
            response = self._call("batch_write_item", RequestItems={self.full_name: pending})
            pending = response.get("UnprocessedItems", {}).get(self.full_name, [])
            if pending:
                round_ += 1
                if round_ > _MAX_RETRY_ROUNDS:
                    raise BackendError(
                        f"DynamoDB left {len(pending)} writes to {self.full_name} unprocessed after "
                        f"{_MAX_RETRY_ROUNDS} retries (throttled?)"
                    )
                _backoff(round_)

    def put(self, item: Item, *, condition: Condition | None = None) -> None:
        check_key(item.get("pk"), item.get("sk"))
        expr = _Expression()
        extra: dict[str, Any] = {}
        if condition is not None:
            extra["ConditionExpression"] = expr.condition(condition, self.store.clock.now())
        self._call("put_item", **expr.params(TableName=self.full_name, Item=serialize_item(item), **extra))

    def update(self, pk: str, sk: str, *, set: Mapping[str, Any], condition: Condition | None = None) -> Item:
        """SET the given attributes; an expired item counts as absent, so its old attributes are dropped.

        DynamoDB's UpdateItem would merge into an expired-but-unswept item (keeping its stale ``ttl``, so
        the result would still be invisible). Hence: with ``Condition.absent()`` the result is exactly
        ``{pk, sk, **set}``, written by a conditional PutItem; without a condition we update only a live
        or missing item and fall back to replacing an expired one, retrying if we race another writer.
        """
        check_key(pk, sk)
        if any(name in KEY_ATTRIBUTES for name in set):
            raise ValidationError("update cannot change an item's key")
        fresh: Item = {"pk": pk, "sk": sk, **set}
        if condition is not None and condition.not_exists:
            self.put(fresh, condition=condition)
            return deserialize_item(serialize_item(fresh))
        for _ in range(_MAX_RETRY_ROUNDS):
            now = self.store.clock.now()
            expr = _Expression()
            if condition is not None:
                condition_expression = expr.condition(condition, now)
            else:
                condition_expression = f"(attribute_not_exists({expr.name('pk')}) OR NOT ({expr.expired(now)}))"
            extra: dict[str, Any] = {"ConditionExpression": condition_expression}
            if set:
                assignments = [f"{expr.name(name)} = {expr.value(value)}" for name, value in set.items()]
                extra["UpdateExpression"] = "SET " + ", ".join(assignments)
            try:
                response = self._call(
                    "update_item",
                    **expr.params(TableName=self.full_name, Key=_key(pk, sk), ReturnValues="ALL_NEW", **extra),
                )
                return deserialize_item(response["Attributes"])
            except ConditionFailedError:
                if condition is not None:
                    raise
            # The item exists but has expired: replace it, unless someone revived it meanwhile.
            try:
                self.put(fresh, condition=Condition.absent())
                return deserialize_item(serialize_item(fresh))
            except ConditionFailedError:
                continue
        raise BackendError(f"update of {self.full_name} {pk}/{sk} kept racing other writers; giving up")

    def update_many(self, updates: Sequence[Update]) -> list[Item | None]:
        """Item by item: DynamoDB has no batch conditional update, and a transaction would fail the whole
        batch on one lost condition (callers want the winners applied).

        An error after some updates (throttling, a 5xx) is raised as :class:`UpdatesPartlyAppliedError`
        carrying the results so far: those updates have landed, and a caller that redid them all, as it
        may after SQLite's all-or-nothing batch, added campaign counters twice. An error on the first
        update (nothing applied) is raised as it is."""
        results: list[Item | None] = []
        for u in updates:
            try:
                results.append(self.update(u.pk, u.sk, set=u.set, condition=u.condition))
            except ConditionFailedError:
                results.append(None)
            except NotifyError as exc:
                if not results:
                    raise
                raise UpdatesPartlyAppliedError(
                    f"update_many on {self.full_name}: {len(results)} of {len(updates)} updates done, then: {exc}",
                    done=results) from exc
        return results

    def delete(self, pk: str, sk: str, *, condition: Condition | None = None) -> None:
        check_key(pk, sk)
        expr = _Expression()
        extra: dict[str, Any] = {}
        if condition is not None:
            extra["ConditionExpression"] = expr.condition(condition, self.store.clock.now())
        self._call("delete_item", **expr.params(TableName=self.full_name, Key=_key(pk, sk), **extra))

"""The event consumer: stream -> Store, idempotent by event_id, offsets committed only after the write.

One batch is: poll -> decode (poison records go to ``<topic>.dlq`` with the reason) -> write -> commit.
Idempotency comes from the keys, not from a read before the write: every row key is derived from the
event (``user_events`` sk=<ts>#<event_id>; ``purchases`` sk=<ts>#<order>#<product>; ``events``
pk=event_id) and every row's content is a pure function of the event, so writing an event twice leaves
exactly the rows of writing it once. A "have I seen it?" read would cost every *new* event (the common
case) a read to save a rewrite on the rare replay; on DynamoDB a batch write of a known item costs what
the read would. For the same reason a client that reuses an event id for other content is not caught:
both records are written (rows of the same key: the later wins), within one batch as across batches
(:func:`prepare_columns`).

One row per click, view or open (its ``user_events`` row, whose key holds the event id: the event is
persisted exactly when that row exists); an order is its merged ``purchases`` lines plus one ``events``
ledger row, written after the lines, that says the whole order is in. No ledger row per click: at
millions of rows every row costs a random page write, and that, not Python, caps ingest on SQLite
(two rows per click cost ~40 % of the throughput). Write order:

1. derived rows: ``purchases`` lines for orders, ``user_events`` rows for clicks/views/opens;
2. the ``events`` ledger rows of the orders;
3. the Parquet landing file of the order lines (named by a content hash, written atomically). After the
   ledger rows: the landing sensor ingests a file as soon as it appears and nothing takes its lines back
   out of analytics, so a file holds only orders the Store took whole (a refused row stops the write first);
4. dead letters;
5. the group's position per partition, in the Store (``stream_positions`` pk group, sk
   ``<topic>#<partition>``), then the commit to the stream.

A row the Store refuses (a data error: a value it cannot hold) is a property of one record: the batch is
then written record by record and the refused record dead-lettered, after the rows its failed writes did
put are deleted (by their keys, which it alone derives): a dead-lettered event leaves no row behind and
never reached a landing file. That batch's positions are written after its dead letters.

Erased users stay erased: a record keyed by a user in the erasure register (:mod:`notify_core.erasure_register`)
and produced at or before their erasure is left out before decoding (:meth:`EventConsumer.not_erased`),
counted as ``erased``, and its position passed: Kafka keeps a user's records for the topic's retention,
and a replay must not write them back. The register a batch is checked against is at most
``register_interval`` s old, so an erasure made while that user's older records are in flight can be
overtaken by one batch; the next replay of them is left out.

Every row an event writes also carries the ``request_id`` of the capture request that produced it (from
the record's ``x-request-id`` header, when it has one): the correlation id from the HTTP edge to the Store.
It travels with the record, so a replay writes the same value again.

So ``kill -9`` anywhere loses nothing (the commit comes last) and duplicates nothing (a replay rewrites
the same keys with the same content). Replaying a topic from offset 0 adds no rows and changes none.

Why the position lives in the Store too: the Store is what backups restore. A Store restored to an
earlier point has a position just as old (it is written after the rows it covers, so any point in time
that holds the position holds the rows), and a member given a partition starts where the *Store* says,
so the records the restore took away are read again from the retained stream: restore + replay loses
no acknowledged event. A Store with no position for a partition (new, or wiped) reads it from offset 0.

Membership changes: when the stream takes partitions away (a Kafka rebalance), ``on_revoke`` finishes
the batch being written and commits it before they move; records of a revoked partition that were
already polled are still written (idempotently) and their commit dropped, so the new owner replays them.
A batch given up there (a stop while it kept failing) ends the consumer like one given up anywhere else:
nothing after it is written or committed, or a later batch of a partition still ours would move the
group's position past records never written.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import functools
import hashlib
import json
import logging
import math
import operator
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from msgspec import UNSET
from prometheus_client import Counter, Gauge, Histogram
from pydantic import BaseModel

from notify_core import bounds
from notify_core.atomic import atomic_write
from notify_core.backoff import Backoff
from notify_core.clock import Clock
from notify_core.erasure_register import ErasureRegister, erased_before
from notify_core.errors import BackendError, DatabaseReplacedError, NotifyError, ValidationError
from notify_core.events.decoder import DecodeProcess
from notify_core.events.models import (
    CLICKSTREAM,
    EVENT_MODELS,
    PURCHASE_HISTORY,
    TOPICS,
    TRUSTED_TAGS,
    VALIDATED_HEADERS,
    Event,
    Order,
    TrustedEvent,
    decode_event,
    decode_trusted,
    dlq_topic,
    json_time,
    topic_for,
)
from notify_core.landing import STREAM_FILE_PREFIX
from notify_core.metrics import CONSUMER_LAG_SECONDS
from notify_core.observability import BatchHistogram
from notify_core.store import tables
from notify_core.store.port import Item, Store
from notify_core.stream.port import REQUEST_ID_HEADER, Message, Record, Stream, header_value, next_positions

RecordColumns = tuple[list[str], list[bytes], list[tuple[tuple[str, bytes], ...]]]
"""A batch's topics, values and headers, one list each (:func:`record_columns`)."""

log = logging.getLogger(__name__)

RECORDS = Counter("notify_consumer_records", "Records handled by the event consumer", ["outcome"])
LAG = Gauge("notify_consumer_lag_records", "Records produced and not yet committed by the consumer group")
PERSIST_LATENCY = BatchHistogram(
    "notify_consumer_persist_latency_seconds",
    "Produce time to Store write, per event",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0),
)
BATCH_SECONDS = Histogram("notify_consumer_batch_seconds", "Time to process and commit one batch")

DEFAULT_GROUP = "notify-event-consumer"
# No turn of the loop and no write attempt for this long: stuck (a call that never returned), and /healthz says
# so. Generous: a boto3 call retried through its own timeouts can take minutes and must not restart a pod.
STALLED_AFTER_S = 600.0
_T = TypeVar("_T")


@dataclass
class BatchOutcome:
    """What one batch did; the counts add up to ``records``."""

    records: int = 0
    persisted: int = 0  # events written (a replayed event is written again, to the same rows)
    duplicates: int = 0  # repeats of an event (same id, same rows) within the batch (written once)
    dead_lettered: int = 0
    purchase_rows: int = 0
    user_event_rows: int = 0
    erased: int = 0  # records of erased users produced before their erasure (the erasure register): not written
    landing_file: Path | None = None


@dataclass
class PreparedBatch:
    """A batch decoded into the rows it writes (what :meth:`EventConsumer.write` persists)."""

    records: Sequence[Record]
    outcome: BatchOutcome
    purchases: list[Item] = field(default_factory=list)
    user_events: list[Item] = field(default_factory=list)
    ledger: list[Item] = field(default_factory=list)  # one ``events`` row per order
    poison: list[Message] = field(default_factory=list)
    # Built by the decoding process: (purchases, user_events, ledger) rows in the Store adapter's
    # ready-made form (``put_encoded``); ``user_events`` and ``ledger`` are then left empty and
    # ``purchases`` kept for the landing file. None: write the item lists.
    encoded: tuple[Any, Any, Any] | None = None
    # From the decoding process: (index in the batch, reason) of each poison record; the consumer
    # makes the dead letters from its own records (``poison`` is then filled from these).
    poison_at: list[tuple[int, str]] = field(default_factory=list)
    # From the decoding process: the batch's landing file (name, Parquet bytes); ``purchases`` is then empty.
    landing: tuple[str, bytes] | None = None


def purchase_rows(event: Order, *, event_id: str) -> list[Item]:
    """One ``purchases`` row per product of the order; repeated lines of a product are merged."""
    return _purchase_items(
        user_id=event.user_id, ts=event.ts.isoformat(), time_key=tables.time_sk(event.ts), order_id=event.order_id,
        country=event.country, lines=((line.product_id, line.quantity, line.unit_price) for line in event.items),
        event_id=event_id,
    )


def _purchase_items(*, user_id: str, ts: str, time_key: str, order_id: str, country: str | None,
                    lines: Iterable[tuple[str, int, float]], event_id: str) -> list[Item]:
    """The ``purchases`` rows of an order, from plain values: a model (:func:`purchase_rows`) or the
    trusted canonical JSON (:func:`trusted_rows`) give the same rows, byte for byte."""
    return [
        {
            "pk": user_id,
            "sk": tables.purchase_sk_at(time_key, order_id, product_id),
            "order_id": order_id,
            "user_id": user_id,
            "product_id": product_id,
            "quantity": quantity,
            "unit_price": price,
            "ts": ts,
            "country": country,
            "is_return": quantity < 0,
            "event_id": event_id,
        }
        for product_id, (quantity, price) in bounds.merge_lines(lines).items()
    ]


_NOT_COPIED = frozenset({"event_id", "user_id", "ts", "properties"})  # the key holds them, or set apart


@functools.cache
def _copied_fields(model: type[BaseModel]) -> tuple[str, ...]:
    """The fields a ``user_events`` row copies from an event of this model, in declaration order."""
    return tuple(name for name in model.model_fields if name not in _NOT_COPIED)


def user_event_row(event: Event, *, event_id: str) -> Item:
    """The event's fields but its id and user, as its JSON has them (``ts`` too), None and {} left out.

    Read attribute by attribute: ``model_dump(mode="json")`` cost 4 us of the consumer's ~25 us per event.
    """
    row: Item = {
        "pk": event.user_id,
        "sk": f"{tables.time_sk(event.ts)}#{event_id}",
        "event_id": event_id,
        "ts": json_time(event.ts),
    }
    for name in _copied_fields(type(event)):
        value = getattr(event, name)
        if value is not None:
            row[name] = value
    if event.properties:
        row["properties"] = dict(event.properties)
    return row


def event_row(event: Event, *, event_id: str, topic: str) -> Item:
    """An order's ledger row: small on purpose (the lines live in ``purchases``)."""
    return _ledger_item(event_id=event_id, type_name=event.type, user_id=event.user_id, ts=event.ts.isoformat(),
                        topic=topic, properties=event.properties)


def _ledger_item(*, event_id: str, type_name: str, user_id: str, ts: str, topic: str,
                 properties: Mapping[str, Any] | None) -> Item:
    row: Item = {"pk": event_id, "sk": tables.EVENT_SK, "type": type_name, "user_id": user_id, "ts": ts,
                 "topic": topic}
    if properties:
        row["properties"] = dict(properties)
    return row


_COPIED_BY_TYPE = {name: _copied_fields(model) for name, model in EVENT_MODELS.items()}


_ORDER_FIELDS = operator.attrgetter("order_id", "country", "items")  # of an order's trusted shape


def trusted_rows(event: TrustedEvent, *, topic: str) -> tuple[list[Item], Item | None] | None:
    """The rows of an event from its trusted canonical JSON (:func:`~notify_core.events.models.decode_trusted`),
    the same rows :func:`user_event_row` / :func:`purchase_rows` + :func:`event_row` build from its model:
    ``([user_events row], None)`` for a click, view or open; ``(purchases rows, ledger row)`` for an order.
    None when the record is on the other event topic (the full decode then names that defect).

    Why not the model: pydantic's decode plus the datetime work cost the consumer ~45 % of its time. The
    canonical ``ts`` (``...T10:00:01[.ffffff]Z``) already is the row's ``ts`` and its first 19 characters
    the sort key (:func:`~notify_core.store.tables.time_sk` of the same instant).
    """
    ts = event.ts
    event_id = event.event_id
    user_id = event.user_id
    type_name = TRUSTED_TAGS[type(event)]
    is_order = type_name == "order"
    if topic in TOPICS and topic != (PURCHASE_HISTORY if is_order else CLICKSTREAM):
        return None
    time_key = ts[:19]
    properties = event.properties
    if is_order:
        iso = ts[:-1] + "+00:00"  # datetime.isoformat() of the UTC instant, as the model path writes it
        order_id, country, items = _ORDER_FIELDS(event)
        lines = _purchase_items(
            user_id=user_id, ts=iso, time_key=time_key, order_id=order_id,
            country=None if country is UNSET else country, event_id=event_id,
            lines=((line.product_id, line.quantity, line.unit_price) for line in items),
        )
        return lines, _ledger_item(event_id=event_id, type_name=type_name, user_id=user_id, ts=iso, topic=topic,
                                   properties=properties or None)
    row: Item = {"pk": user_id, "sk": f"{time_key}#{event_id}", "event_id": event_id, "ts": ts}
    for name in _COPIED_BY_TYPE[type_name]:
        value = type_name if name == "type" else getattr(event, name)
        if value is not UNSET:
            row[name] = value
    if properties:
        row["properties"] = properties
    return [row], None


def prepare_records(records: Sequence[Record], *, now: Callable[[], float]) -> PreparedBatch:
    """Decode, validate and build the rows of a batch: pure Python, no I/O (see :meth:`EventConsumer.run`);
    ``now`` stamps dead letters, and its time when decoding starts bounds the records' times (see
    :func:`prepare_columns`). The batch's columns through :func:`prepare_columns`.
    """
    poison: list[Message] = []

    def dead(index: int, reason: str) -> None:
        poison.append(dead_letter(records[index], reason, now=now()))

    prepared = prepare_columns(*record_columns(records), dead=dead, now=datetime.fromtimestamp(now(), UTC))
    prepared.poison = poison
    return prepared


def record_columns(records: Sequence[Record]) -> RecordColumns:
    """The three fields of each record that decoding reads (topic, value, headers), as three lists.

    What goes to the decoding process: three lists pickle in ~0.5 us a record where a tuple per record
    (seven fields) cost ~1.4 us with the copy into plain tuples, in the consuming process, whose CPU is
    the stream's limit. The records of one capture request share one topic string and one headers tuple,
    which pickle once each (pickle's memo) and are one reference per record after that.
    """
    return [r[0] for r in records], [r[4] for r in records], [r[6] for r in records]


def prepare_columns(topics: Sequence[str], values: Sequence[bytes], headers_of: Sequence[tuple[tuple[str, bytes], ...]],
                    *, dead: Callable[[int, str], None], now: datetime) -> PreparedBatch:
    """:func:`prepare_records` on the batch's columns (:func:`record_columns`); the ``index``-th record
    found poison goes to ``dead(index, reason)`` (the caller holds the records and the clock).

    ``now`` is the consumer's clock when the batch was handed to decoding: the full decode validates with
    it, so a record dated past ``now + MAX_CLOCK_SKEW`` (:mod:`notify_core.bounds`) is dead-lettered, as
    capture refuses it and batch ingestion quarantines it. Required, so no path decodes without the bound.

    A record capture marked as validated (:data:`~notify_core.events.models.VALIDATED_HEADERS`) whose
    JSON has the canonical shape takes the fast path (:func:`trusted_rows`); every other record, and
    any marked one that does not look right, is decoded by the models, which accept it or give the
    reason it is dead-lettered with.

    A repeat of an event id is a duplicate (counted, written once) only when it is the same event: the
    same bytes, or the same rows (:func:`_same_rows`). A client that reuses an id for other content gets
    both written, in order, as when the two arrive in different batches: rows of different keys (another
    ``ts`` or user) both stay, rows of the same key are overwritten by the later one. Dropping the second
    only when it shared a batch with the first made the Store's content depend on batch boundaries (one
    row or two for the same two acknowledged events). Dead-lettering reused ids was not chosen because
    the cross-batch case cannot be detected cheaply (clicks have no row keyed by event id alone: it would
    take a Store read per event on the consumer's hot path), and a rule that holds only within a batch is
    the inconsistency this replaces.
    """
    out = BatchOutcome(records=len(values))
    prepared = PreparedBatch(records=(), outcome=out)  # the caller attaches its Records
    seen: dict[str, tuple[bytes, list[Item], Item | None]] = {}  # event id -> its latest value and rows
    written = 0
    purchases, user_events, ledger = prepared.purchases, prepared.user_events, prepared.ledger
    last_headers: tuple[tuple[str, bytes], ...] | None = None
    last_rid: str | None = None
    dead_lettered = 0
    for index, (topic, value, headers) in enumerate(zip(topics, values, headers_of, strict=True)):
        rows = None
        if headers and VALIDATED_HEADERS[0] in headers:
            trusted = decode_trusted(value)
            if trusted is not None:
                rows = trusted_rows(trusted, topic=topic)
                event_id: str = trusted.event_id
        if rows is None:
            try:
                event = decode_event(value, now=now)
                expected = topic_for(event)
                if topic not in (expected,) and topic in TOPICS:
                    raise ValidationError(f"a {event.type} event does not belong on {topic}")
            except ValidationError as exc:
                dead(index, str(exc))
                dead_lettered += 1
                continue
            except (ValueError, OverflowError, RecursionError) as exc:  # a defect the models did not name
                dead(index, f"undecodable message: {type(exc).__name__}: {exc}")
                dead_lettered += 1
                continue
            event_id = event.id
            if isinstance(event, Order):
                rows = (purchase_rows(event, event_id=event_id),
                        event_row(event, event_id=event_id, topic=topic))
            else:
                rows = ([user_event_row(event, event_id=event_id)], None)
        lines, ledger_row = rows
        prior = seen.get(event_id)
        if prior is not None and (prior[0] == value or _same_rows(prior[1], prior[2], lines, ledger_row)):
            out.duplicates += 1
            continue
        seen[event_id] = (value, lines, ledger_row)
        written += 1
        if not headers:
            rid = None
        elif headers is last_headers:  # the records of one capture request share one headers tuple
            rid = last_rid
        else:
            rid = last_rid = header_value(headers, REQUEST_ID_HEADER)
            last_headers = headers
        if rid:  # the correlation id of the capture request, on every row the event wrote
            for row in lines:
                row["request_id"] = rid
            if ledger_row is not None:
                ledger_row["request_id"] = rid
        if ledger_row is None:
            user_events.extend(lines)
        else:
            purchases.extend(lines)
            ledger.append(ledger_row)
    out.persisted = written
    out.dead_lettered = dead_lettered
    out.purchase_rows = len(purchases)
    out.user_event_rows = len(user_events)
    return prepared


def _same_rows(lines: list[Item], ledger_row: Item | None, other_lines: list[Item], other_ledger: Item | None) -> bool:
    """Whether two records of one event id write the same rows, the capture request's id aside (a retry of
    one event in another request is still that event). Only called for a repeated id, so its cost is off
    the per-event path."""
    def bare(row: Item | None) -> Item | None:
        return None if row is None else {k: v for k, v in row.items() if k != "request_id"}

    return (bare(ledger_row) == bare(other_ledger) and len(lines) == len(other_lines)
            and all(bare(a) == bare(b) for a, b in zip(lines, other_lines, strict=True)))


def prepare_encoded(columns: RecordColumns, encoders: tuple[tuple[Callable[..., Any], str], ...],
                    landing: bool, now: datetime) -> PreparedBatch:
    """:func:`prepare_columns` plus the Store adapter's row encoding, in the decoding process
    (:mod:`notify_core.events.decoder`). ``encoders``: (``row_encoder``, table name) of the
    purchases, user_events and events tables. The records are not sent (their columns are) nor sent
    back (the consumer has them); the poison ones come back as ``poison_at`` (index, reason), which
    the consumer turns into dead letters from its records (:meth:`EventConsumer._decoded`). With
    ``landing``, the batch's landing file too (:func:`landing_parquet`), and its order lines are not
    sent back (the encoded rows and the file are all the writer needs of them).

    A row the adapter cannot encode (``ValidationError``) leaves the batch unencoded: the writer's
    ``batch_put`` then meets the same error and isolates the refused record, as without the process.
    Order lines the landing file cannot hold (:class:`LandingFileError`) leave it unbuilt and the lines
    kept: the writer builds it, meets the same error and isolates the record, as without the process
    (and the process is not restarted for a defect of the data). ``now``: the consumer's clock at the
    hand-over, the time window's reference (:func:`prepare_columns`): the process has no clock of its own.
    """
    poison_at: list[tuple[int, str]] = []
    prepared = prepare_columns(*columns, dead=lambda index, reason: poison_at.append((index, reason)), now=now)
    prepared.poison_at = poison_at
    try:
        prepared.encoded = tuple(
            encode(rows, table=name)
            for (encode, name), rows in zip(encoders, (prepared.purchases, prepared.user_events, prepared.ledger),
                                            strict=True)
        )
    except ValidationError:
        return prepared
    if landing and prepared.purchases:
        try:
            prepared.landing = landing_parquet(prepared.purchases)
        except LandingFileError:
            return prepared  # lines kept: the writer meets the error again and isolates the record
        prepared.purchases = []
    prepared.user_events = []
    prepared.ledger = []
    return prepared


def write_landing_file(rows: Sequence[Item], folder: Path) -> Path:
    """New order lines as Parquet (PURCHASES schema), named by a hash of their content."""
    return put_landing_file(*landing_parquet(rows), folder)


def landing_parquet(rows: Sequence[Item]) -> tuple[str, bytes]:
    """The landing file of order lines: its name (a hash of their content) and its Parquet bytes.

    Apart from the write (:func:`put_landing_file`) so the decoding process builds it (polars, a
    hash over every line: ~6 % of the consuming process's CPU) and the writer only puts the bytes.

    Lines the file's schema cannot hold (a quantity past Int64 that slipped past the bounds) raise
    :class:`LandingFileError`, a ``ValidationError``: the writer then isolates the record(s) at fault
    into the dead letters (:meth:`EventConsumer._isolate`) instead of the consumer dying on the batch,
    and on every restart after (one ``try`` per batch: nothing on the per-record path).
    """
    import polars as pl

    try:
        return _landing_parquet(rows)
    except (pl.exceptions.PolarsError, OverflowError, ValueError, TypeError) as exc:
        raise LandingFileError(
            f"its order lines do not fit the landing file: {type(exc).__name__}: {str(exc)[:200]}") from exc


def _landing_parquet(rows: Sequence[Item]) -> tuple[str, bytes]:
    import io

    import polars as pl

    from notify_core.schemas import PURCHASES

    ordered = sorted(rows, key=lambda r: (r["order_id"], r["product_id"]))
    columns = list(PURCHASES)
    digest = hashlib.sha256(
        json.dumps([[r.get(c) for c in columns] for r in ordered], default=str).encode()
    ).hexdigest()[:24]
    frame = pl.DataFrame(
        {
            "order_id": [r["order_id"] for r in ordered],
            "user_id": [r["user_id"] for r in ordered],
            "product_id": [r["product_id"] for r in ordered],
            "quantity": [r["quantity"] for r in ordered],
            "unit_price": [r["unit_price"] for r in ordered],
            "ts": [r["ts"] for r in ordered],
            "country": [r["country"] for r in ordered],
            "is_return": [r["is_return"] for r in ordered],
        }
    ).with_columns(pl.col("ts").str.to_datetime(time_unit="us", time_zone="UTC"))
    frame = frame.cast(PURCHASES)  # type: ignore[arg-type]
    buffer = io.BytesIO()
    frame.write_parquet(buffer)
    return f"{STREAM_FILE_PREFIX}{digest}.parquet", buffer.getvalue()


def put_landing_file(name: str, data: bytes, folder: Path) -> Path:
    """Write a landing file atomically unless it is there already (a replayed batch: same content, same name)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    if not path.exists():
        atomic_write(path, lambda tmp: tmp.write_bytes(data))
    return path


class LandingFileError(ValidationError):
    """A batch's order lines do not fit the landing file (:func:`landing_parquet`): a defect of a record's
    data, so the record is dead-lettered with this reason (:meth:`EventConsumer._isolate`)."""


class StoppedWhileRetryingError(NotifyError):
    """A stop (SIGTERM) came while the batch in hand kept failing to write (the Store down, its disk full), or
    the Store's file was replaced under the consumer (:class:`notify_core.errors.DatabaseReplacedError`).
    Finishing that batch first could take for ever, so the consumer gives it up uncommitted and exits: the
    next consumer reads it again (writes are idempotent), so nothing acknowledged is lost or doubled."""


def _with_erased(prepared: PreparedBatch, records: Sequence[Record], erased: int) -> PreparedBatch:
    """``prepared`` (decoded without the ``erased`` records of erased users) as the batch of ``records``: its
    positions cover every record, and its counts add up to all of them."""
    prepared.records = records
    prepared.outcome.records += erased
    prepared.outcome.erased += erased
    return prepared


class _Stamped(NamedTuple):
    """A batch in the decoding process, the consumer's clock when it was handed over, and the records it was
    given (the batch without its erased users' records; ``poison_at`` indexes these)."""

    future: Future[PreparedBatch]
    at: float
    given: Sequence[Record]
    erased: int


def dead_letter(record: Record, reason: str, *, now: float) -> Message:
    try:
        text: dict[str, str] = {"value": record.value.decode()}
    except UnicodeDecodeError:
        text = {"value_b64": base64.b64encode(record.value).decode()}
    body = {
        "reason": reason,
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "timestamp_ms": record.timestamp_ms,
        "failed_at": round(now, 3),
        **text,
    }
    return Message(dlq_topic(record.topic), record.key, json.dumps(body).encode())


class EventConsumer:
    """Reads the event topics in batches and persists them; one instance per consumer process or thread."""

    def __init__(
        self,
        *,
        stream: Stream,
        store: Store,
        landing: Path | None,
        clock: Clock,
        group: str = DEFAULT_GROUP,
        topics: Sequence[str] = TOPICS,
        max_batch: int = 10_000,  # at 50k events/s: ~0.2 s of events; per-batch costs (landing file, commit) amortised
        poll_timeout: float = 0.2,
        lag_interval: float = 2.0,
        on_persisted: Callable[[Sequence[Record], float], None] | None = None,
        decode_process: bool = False,
        register_interval: float = 1.0,
    ) -> None:
        """``decode_process``: decode and encode batches in a second process (:mod:`~notify_core.events.decoder`)
        when the Store can take ready-made rows (SQLite); ignored otherwise. ``notify consume`` turns it on.
        ``register_interval``: how old (seconds) the erasure register a batch is checked against may be."""
        self.stream = stream
        self.store = store
        self.landing = landing
        self.group = group
        self.max_batch = max_batch
        self.poll_timeout = poll_timeout
        self.lag_interval = lag_interval
        self.on_persisted = on_persisted
        self.clock = clock  # dead-letter stamps and persist latency (against the records' produce time)
        self._events = store.table(tables.EVENTS)
        self._user_events = store.table(tables.USER_EVENTS)
        self._purchases = store.table(tables.PURCHASES)
        self._positions = store.table(tables.STREAM_POSITIONS)
        self._encoders = self._row_encoders() if decode_process else None
        self.decoder: DecodeProcess | None = None
        self._in_flight: tuple[Future[BatchOutcome], Sequence[Record], float] | None = None
        self._stop: threading.Event | None = None  # run()'s stop: ends a retry loop (_retrying)
        self._turned = time.monotonic()  # the loop's last turn or write attempt (stalled_s)
        self._gave_up: StoppedWhileRetryingError | None = None
        self._consumer = stream.consumer(
            group=group, topics=topics, start_at=self.stored_positions, on_revoke=self._finish_in_flight
        )
        if self._encoders is not None:  # only once the group is ours (a refused or standby member spawns none)
            self.decoder = DecodeProcess()
            self.decoder.start()  # now: its ~1 s of imports overlaps what the caller does before run()
        self._last_lag_at = 0.0
        self.register_interval = register_interval
        self._register = ErasureRegister()
        self._register_read_at = -math.inf
        self.totals = BatchOutcome()

    # one batch ---------------------------------------------------------------------------------
    def prepare(self, records: Sequence[Record]) -> PreparedBatch:
        """Decode, validate and build the rows of a batch (:func:`prepare_records`), without the records of
        erased users (:meth:`not_erased`); the batch's positions still cover every record."""
        given, erased = self.not_erased(records)
        return _with_erased(prepare_records(given, now=self.clock.now), records, erased)

    def not_erased(self, records: Sequence[Record]) -> tuple[Sequence[Record], int]:
        """``records`` without those of users in the erasure register produced at or before their erasure,
        and how many were left out.

        Kafka cannot delete single records: a user's events stay in a topic for its retention, and a group
        reset (or a member replaying an uncommitted batch) would write them again after ``notify users
        delete``. Events are keyed by user id, and the record's produce time says whether it is older than
        the erasure (a user who comes back is new data). Left-out records are never decoded, so their
        content reaches neither the Store nor a dead letter. The register is read again at most every
        ``register_interval`` s; its keys are hashed once per distinct key of the batch, and only when it
        holds an entry."""
        register = self._erasures()
        if not register.entries:
            return records, 0
        limits: dict[bytes, float] = {}
        for key in {r.key for r in records if r.key is not None}:
            erased_at = register.erased_at(key)
            if erased_at is not None:
                limits[key] = erased_at.timestamp() * 1000
        if not limits:
            return records, 0
        given = [r for r in records if r.key not in limits or r.timestamp_ms > limits[r.key]]
        return given, len(records) - len(given)

    def _erasures(self) -> ErasureRegister:
        now = time.monotonic()
        if now - self._register_read_at >= self.register_interval:
            try:
                self._register = erased_before(self.store)
                self._register_read_at = now
            except BackendError as exc:  # the Store down: its writes fail and retry too; read it again next batch
                log.warning("erasure register unreadable; using the last one read", extra={"error": str(exc)})
        return self._register

    def write(self, prepared: PreparedBatch, *, positions: bool = True) -> BatchOutcome:
        """Persist a prepared batch (no commit), in the order of the module doc. Idempotent.

        The landing file's bytes are built before anything is written, so a batch whose lines the file
        cannot hold (:class:`LandingFileError`) fails whole and writes nothing before it is isolated; the
        file is put after every row, so a batch the Store refused a row of put none. ``positions=False``
        leaves the group's positions to the caller: :meth:`_isolate` writes them once for the batch, after
        its dead letters, not record by record past records it has not dead-lettered yet."""
        out = prepared.outcome
        encoded = prepared.encoded
        landing = prepared.landing  # built by the decoding process, or here
        if landing is None and self.landing is not None and prepared.purchases:
            landing = landing_parquet(prepared.purchases)
        if encoded is not None:  # rows the decoding process made ready (prepare_encoded)
            purchases, user_events, ledger = self._encoded_tables()
            purchases.put_encoded(encoded[0])
            user_events.put_encoded(encoded[1])
            ledger.put_encoded(encoded[2])
        else:
            if prepared.purchases:
                self._purchases.batch_put(prepared.purchases)
            if prepared.user_events:
                self._user_events.batch_put(prepared.user_events)
            if prepared.ledger:
                self._events.batch_put(prepared.ledger)
        if self.landing is not None and landing is not None:
            out.landing_file = put_landing_file(*landing, self.landing)
        if prepared.poison:
            self.stream.produce_batch(prepared.poison)
        if positions:
            self._write_positions(prepared.records)
        return out

    def _write_positions(self, records: Sequence[Record]) -> None:
        """The group's position in the Store past ``records``, per partition (step 5 of the module doc)."""
        positions = next_positions(records)
        if positions:
            self._positions.batch_put(
                {"pk": self.group, "sk": tables.stream_position_sk(topic, partition), "position": position}
                for (topic, partition), position in positions.items()
            )


    # the decoding process ----------------------------------------------------------------------
    def _row_encoders(self) -> tuple[tuple[Callable[..., Any], str], ...] | None:
        """(row_encoder, table name) per written table, when the Store's tables take ready-made rows."""
        found = []
        for table, name in ((self._purchases, tables.PURCHASES), (self._user_events, tables.USER_EVENTS),
                            (self._events, tables.EVENTS)):
            encoder = getattr(table, "row_encoder", None)
            if encoder is None or not callable(getattr(table, "put_encoded", None)):
                return None
            found.append((encoder, name))
        return tuple(found)

    def _encoded_tables(self) -> tuple[Any, Any, Any]:
        return self._purchases, self._user_events, self._events

    def _submit_decode(self, records: Sequence[Record]) -> _Stamped | PreparedBatch:
        """Hand a batch to the decoding process (or decode it here when there is none)."""
        if self.decoder is None or self._encoders is None or not self.decoder.usable:
            return self.prepare(records)
        given, erased = self.not_erased(records)
        try:
            at = self.clock.now()  # what the batch's dead letters say it failed at: its hand-over
            future = self.decoder.submit(prepare_encoded, record_columns(given), self._encoders,
                                         self.landing is not None, datetime.fromtimestamp(at, UTC))
            return _Stamped(future, at, given, erased)
        except Exception as exc:  # the process cannot be started: decode here, never skip a batch
            log.warning("decoding process unavailable; decoding in the consumer", extra={"error": str(exc)})
            return _with_erased(prepare_records(given, now=self.clock.now), records, erased)

    def _decoded(self, pending: _Stamped | PreparedBatch, records: Sequence[Record]) -> PreparedBatch:
        """The prepared batch of :meth:`_submit_decode`; a lost process is replaced and the batch
        decoded here instead (same rows: the same code)."""
        if isinstance(pending, PreparedBatch):
            return pending
        try:
            prepared = pending.future.result()
        except Exception as exc:  # BrokenProcessPool (kill -9, OOM), or anything the process raised
            log.warning("decoding process failed; decoding the batch in the consumer", extra={"error": repr(exc)})
            if self.decoder is not None:
                self.decoder.restart()
            return self.prepare(records)
        if self.decoder is not None:
            self.decoder.succeeded()
        if prepared.poison_at:
            prepared.poison = [dead_letter(pending.given[i], reason, now=pending.at)
                               for i, reason in prepared.poison_at]
        return _with_erased(prepared, records, pending.erased)

    def stored_positions(self, partitions: Sequence[tuple[str, int]]) -> dict[tuple[str, int], int]:
        """Where the Store says this group is, for ``partitions`` (the stream's ``start_at`` hook)."""
        keys = [(self.group, tables.stream_position_sk(topic, partition)) for topic, partition in partitions]
        by_sk = {item["sk"]: int(item["position"]) for item in self._positions.batch_get(keys, consistent=True)}
        return {
            (topic, partition): by_sk[sk]
            for (topic, partition), (_pk, sk) in zip(partitions, keys, strict=True)
            if sk in by_sk
        }

    def _finish_in_flight(self, _partitions: Sequence[tuple[str, int]]) -> None:
        """Partitions are about to move: finish and commit the batch being written (the on_revoke hook).
        run() calls it too, before it hands the writer the next batch.

        Once a batch was given up (:class:`StoppedWhileRetryingError`, kept in ``_gave_up``) nothing is
        committed any more and the give-up is raised again: committing a later batch would move the group
        past the records given up. A give-up raised inside the revoke callback is swallowed by the stream
        (it never lets an exception out of a callback), which is why run() checks ``_gave_up`` after each
        poll as well."""
        in_flight, self._in_flight = self._in_flight, None
        if in_flight is not None:
            future, done, started = in_flight
            out = future.result()  # raises this batch's own give-up
            if self._gave_up is None:
                self._committed(done, out, started)
        if self._gave_up is not None:
            raise self._gave_up

    def process(self, records: Sequence[Record]) -> BatchOutcome:
        """Persist a batch (no commit). Idempotent: running it twice leaves the same rows, byte for byte."""
        return self.write(self.prepare(records))

    def run_once(self) -> BatchOutcome | None:
        """Poll one batch, persist it, then commit; None when nothing arrived within the poll timeout."""
        records = self._consumer.poll_batch(max_records=self.max_batch, timeout=self.poll_timeout)
        if not records:
            self._refresh_lag(force=False)
            return None
        started = time.monotonic()
        out = self._write_with_retry(self.prepare(records))
        self._committed(records, out, started)
        return out

    def _committed(self, records: Sequence[Record], out: BatchOutcome, started: float) -> None:
        """After a batch's rows are written: commit its offsets, then count and log it."""
        persisted_at = self.clock.now()
        if self.on_persisted is not None:
            self.on_persisted(records, persisted_at)
        self._retrying(lambda: self._consumer.commit(records), what="commit",
                       given_up="the batch is in the Store but its offsets were not committed to the stream; "
                                "the next consumer starts from the Store's positions")
        now_ms = int(persisted_at * 1000)
        produced = collections.Counter(record.timestamp_ms for record in records)
        PERSIST_LATENCY.observe_counts((max(now_ms - ts, 0) / 1000, n) for ts, n in produced.items())
        CONSUMER_LAG_SECONDS.set(max(now_ms - min(produced), 0) / 1000)
        RECORDS.labels("persisted").inc(out.persisted)
        RECORDS.labels("duplicate").inc(out.duplicates)
        RECORDS.labels("dead_lettered").inc(out.dead_lettered)
        RECORDS.labels("erased").inc(out.erased)
        BATCH_SECONDS.observe(time.monotonic() - started)
        self._accumulate(out)
        self._refresh_lag(force=False)
        log.info(
            "batch persisted",
            extra={
                "records": out.records,
                "persisted": out.persisted,
                "duplicates": out.duplicates,
                "dead_lettered": out.dead_lettered,
                "erased": out.erased,
                "seconds": round(time.monotonic() - started, 4),
            },
        )

    def stalled_s(self) -> float:
        """Seconds since the loop last turned or a write was last attempted: what ``/healthz`` compares with
        :data:`STALLED_AFTER_S` (:mod:`notify_core.metrics_server`). A poll returns within its timeout and a
        retry comes within 5 s, so a long silence is a call that never returned."""
        return time.monotonic() - self._turned

    def healthy(self) -> bool:
        return self.stalled_s() < STALLED_AFTER_S

    def _write_with_retry(self, prepared: PreparedBatch) -> BatchOutcome:
        """Write a batch; a backend error is retried, a data error never stops the consumer.

        The Store refusing a row (``ValidationError``: a value it cannot hold that slipped past the
        models), or the landing file its order lines (:class:`LandingFileError`), is a property of one
        record, not of the batch: the records are then written one by one and each refused one is
        dead-lettered with the reason, so the batch commits.
        """
        try:
            return self._retrying(lambda: self.write(prepared), on_failure=lambda: self._lag_while_failing(prepared))
        except ValidationError as exc:
            log.warning("a row was refused; writing the batch record by record", extra={"error": str(exc)})
            return self._isolate(prepared)

    def _lag_while_failing(self, prepared: PreparedBatch) -> None:
        """The Store keeps failing the batch in hand: the lag in seconds is that batch's age, and it grows.
        (Set only at commits, the gauge kept the last committed batch's age through a whole Store outage,
        and the consumer-lag alert stayed quiet while nothing was persisted.)"""
        if prepared.records:
            oldest_ms = min(record.timestamp_ms for record in prepared.records)
            CONSUMER_LAG_SECONDS.set(max(self.clock.now() * 1000 - oldest_ms, 0) / 1000)

    def _give_up(self, reason: str) -> StoppedWhileRetryingError:
        """The batch in hand given up uncommitted, for ``reason``: kept for :meth:`run` to raise (a callback of
        the poll loop cannot raise through it), and returned to raise here."""
        self._gave_up = StoppedWhileRetryingError(reason)
        return self._gave_up

    def _retrying(self, action: Callable[[], _T], *, on_failure: Callable[[], None] | None = None,
                  what: str = "batch",
                  given_up: str = "the batch in hand was not committed, so the next consumer reads it again") -> _T:
        """``action`` until it succeeds: the Store, the DLQ or the offset commit down is retried with the same
        batch, never skipped, and never a crash (a full log disk or a restarting broker at the commit once
        ended the process with a traceback, exit 1: a crash loop under a supervisor, each turn re-reading the
        batch). A stop while it keeps failing gives the batch up uncommitted (StoppedWhileRetryingError): a
        SIGTERM must end the process within its grace period even when the disk is full. ``on_failure`` runs
        after each failure. A Store or log whose file was removed or replaced under this process (a wiped data
        directory) is not retried: no retry reaches the new file, so the batch is given up at once, uncommitted,
        and the consumer stops for its supervisor to start it on the file now there. ``what`` names the action
        in the retry line; ``given_up`` says what giving up left behind."""
        pauses = Backoff()
        while True:
            self._turned = time.monotonic()  # retrying through an outage is not a stall
            try:
                return action()
            except DatabaseReplacedError as exc:
                raise self._give_up(f"stopped: {exc}. {given_up[:1].upper()}{given_up[1:]}") from exc
            except BackendError as exc:
                if on_failure is not None:
                    on_failure()
                delay = pauses.next()
                log.warning(f"{what} failed, retrying", extra={"error": str(exc), "retry_in_s": delay})
                if self._stop is None:  # process() / run_once(): no stop to watch
                    time.sleep(delay)
                elif self._stop.wait(delay):
                    raise self._give_up(f"stopped while the {what} kept failing ({exc}); {given_up}") from exc

    def _isolate(self, prepared: PreparedBatch) -> BatchOutcome:
        """Write a batch the Store refused a row of record by record; each refused record is dead-lettered
        and leaves nothing behind (no row, no landing-file line), the others are persisted whole.

        The failed writes may have put some of a refused record's rows first (an order's lines before its
        refused ledger row; the chunks of a DynamoDB batch before the refused one): they are deleted
        (:meth:`_unwrite`). Its lines never reached a landing file, put after every row (:meth:`write`).
        An order line's key is shared by any other event of the same line (the same order under another
        event id), so a record of this batch whose line was deleted that way is written again. The
        positions come last, after the dead letters: a ``kill -9`` anywhere here replays the whole batch,
        which redoes the same writes, deletes and dead letters (at least once, as every dead letter)."""
        poison = list(prepared.poison)
        written: list[PreparedBatch] = []
        refused: list[PreparedBatch] = []
        for record in prepared.records:
            single = self.prepare([record])
            if single.poison:  # already among the batch's dead letters
                continue
            try:
                self._retrying(functools.partial(self.write, single, positions=False))
            except ValidationError as exc:
                reason = str(exc) if isinstance(exc, LandingFileError) else f"the Store cannot hold it: {exc}"
                poison.append(dead_letter(record, reason, now=self.clock.now()))
                refused.append(single)
            else:
                written.append(single)
        if refused:
            self._retrying(functools.partial(self._unwrite, refused))
            deleted = {(row["pk"], row["sk"]) for single in refused for row in single.purchases}
            for single in written:
                if any((row["pk"], row["sk"]) in deleted for row in single.purchases):
                    self._retrying(functools.partial(self.write, single, positions=False))
        if poison:
            self._retrying(lambda: self.stream.produce_batch(poison))
        self._retrying(functools.partial(self._write_positions, prepared.records))
        out = prepared.outcome
        out.persisted -= min(len(refused), out.persisted)
        out.dead_lettered += len(refused)
        return out

    def _unwrite(self, refused: Sequence[PreparedBatch]) -> None:
        """Delete every row the ``refused`` records would write, whichever of them their failed writes put.

        By key, and idempotent: the keys derive from the records alone, so a replay deletes the same. The
        ledger rows go first: no moment shows a ledger row ("the whole order is in") without its lines."""
        for single in refused:
            for table, rows in ((self._events, single.ledger), (self._purchases, single.purchases),
                                (self._user_events, single.user_events)):
                for row in rows:
                    with contextlib.suppress(ValidationError):  # a key the Store cannot hold: never written
                        table.delete(row["pk"], row["sk"])

    def _accumulate(self, out: BatchOutcome) -> None:
        t = self.totals
        t.records += out.records
        t.persisted += out.persisted
        t.duplicates += out.duplicates
        t.dead_lettered += out.dead_lettered
        t.purchase_rows += out.purchase_rows
        t.user_event_rows += out.user_event_rows
        t.erased += out.erased

    # loop, lag, lifecycle ---------------------------------------------------------------------
    def _refresh_lag(self, *, force: bool) -> None:
        now = time.monotonic()
        if force or now - self._last_lag_at >= self.lag_interval:
            self._last_lag_at = now
            try:
                lag = self._consumer.lag()
                LAG.set(lag)
                if lag == 0:  # caught up: nothing is waiting, however old the last batch was
                    CONSUMER_LAG_SECONDS.set(0)
            except BackendError as exc:
                log.warning("lag query failed", extra={"error": str(exc)})

    def lag(self) -> int:
        """Records produced to the topics and not yet committed by this group (also the gauge's value)."""
        value = self._consumer.lag()
        LAG.set(value)
        return value

    def seek_to_beginning(self) -> None:
        self._consumer.seek_to_beginning()

    def run(
        self, *, stop: threading.Event, idle_exit: float | None = None, max_records: int | None = None
    ) -> BatchOutcome:
        """Loop until ``stop`` is set (SIGTERM), ``idle_exit`` seconds pass with nothing new, or
        ``max_records`` have been handled. The batch being written is always finished and committed first,
        unless the stop comes while it keeps failing: it is then given up uncommitted and
        :class:`StoppedWhileRetryingError` raised, with nothing after it written or committed, also when it
        was given up inside a rebalance callback (which swallows what it raises).

        Pipelined: a writer thread writes batch N while this thread polls and prepares batch N+1. SQLite
        (and boto3) release the GIL while they work, so decoding overlaps the Store's page writes, which
        at millions of rows cost as much as all the Python. The stream consumer stays on this thread, and
        batch N is committed, here, only after its write finished and before N+1 is handed over: commits
        stay in order and after their writes, so a ``kill -9`` still replays and never skips.

        With a decoding process (``decode_process``, :mod:`~notify_core.events.decoder`) it is three
        stages: this thread polls batch N+2 and hands it over, the process decodes and encodes N+1, the
        writer writes N. Batches leave the process in the order they went in, and a batch is handed to
        the writer only after the previous one committed, so the order and the commit rule are the same.
        """
        idle_since = time.monotonic()
        submitted = 0
        self._stop, self._gave_up = stop, None
        log.info("consumer started", extra={"group": self.group, "decode_process": self._encoders is not None})
        if self._encoders is not None and self.decoder is None:
            self.decoder = DecodeProcess()
        # Batches polled and being decoded, oldest first. With a decoding process one batch decodes
        # there while the previous one is written and the next one polled; without, a batch is
        # prepared here and handed to the writer at once (depth 0).
        depth = 1 if self.decoder is not None else 0
        decoding: collections.deque[tuple[_Stamped | PreparedBatch, Sequence[Record]]] = (
            collections.deque())
        try:
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="notify-consumer-writer",
                                    initializer=self.store.tune_for_bulk_writes) as writer:
                self._in_flight = None
                while True:
                    self._turned = time.monotonic()
                    polling = not stop.is_set() and (max_records is None or submitted < max_records)
                    records = (self._consumer.poll_batch(max_records=self.max_batch, timeout=self.poll_timeout)
                               if polling else [])
                    if self._gave_up is not None:  # given up in a revoke callback the poll ran: write nothing more
                        break
                    if records:
                        decoding.append((self._submit_decode(records), records))
                        submitted += len(records)
                        idle_since = time.monotonic()
                    if decoding and (len(decoding) > depth or not records):
                        pending, batch = decoding.popleft()
                        prepared = self._decoded(pending, batch)
                        self._finish_in_flight([])  # batch N-1 committed before N is handed over (raises a give-up)
                        self._in_flight = (writer.submit(self._write_with_retry, prepared), batch, time.monotonic())
                        idle_since = time.monotonic()
                        continue
                    if records:
                        continue
                    if self._in_flight is not None:
                        self._finish_in_flight([])
                        idle_since = time.monotonic()  # a write that was slow (a Store outage) is not idleness
                        continue
                    if not polling:
                        break
                    self._refresh_lag(force=False)
                    if idle_exit is not None and time.monotonic() - idle_since >= idle_exit:
                        break
        finally:
            for pending, _batch in decoding:  # polled, never written (an error above): nothing to commit
                if isinstance(pending, _Stamped):
                    pending.future.cancel()
        if self._gave_up is not None:  # given up inside a rebalance callback, which swallows what it raises
            raise self._gave_up
        # Commits a group change deferred go in before the lag is read: a member stopped during a
        # rebalance would otherwise report (and leave) everything it wrote since as lag.
        unsettled = self._consumer.settle()
        if unsettled:
            log.warning("positions left uncommitted at stop: the next owner reads them again",
                        extra={"partitions": unsettled})
        self._refresh_lag(force=True)
        log.info("consumer stopped", extra={"totals": vars(self.totals) | {"landing_file": None}})
        return self.totals

    def close(self) -> None:
        self._consumer.close()
        if self.decoder is not None:
            self.decoder.close()
            self.decoder = None


def totals_dict(out: BatchOutcome) -> dict[str, Any]:
    return {k: v for k, v in vars(out).items() if k != "landing_file"}



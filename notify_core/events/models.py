"""Captured events: one pydantic model per type, a discriminated union on ``type``, and batch parsing.

The models are the contract between the app, the stream and the consumer: capture validates with them,
the stream carries their canonical JSON, the consumer validates again (a topic may have other writers).

Every event has an ``event_id``: the client's, or a stable hash of the canonical payload, so a client
that retries a request without ids still produces the same ids and the Store writes each event once.
Because the hash covers the whole payload (``ts`` included, which is why ``ts`` is required), two genuinely
different events never share an id.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import typing
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import msgspec
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationInfo, field_validator, model_validator
from pydantic import ValidationError as PydanticValidationError

from notify_core import bounds
from notify_core.errors import PayloadTooLargeError, ValidationError
from notify_core.stream.port import DEAD_LETTER_SUFFIX

MAX_BODY_BYTES = 1024 * 1024  # one capture request
MAX_BATCH_EVENTS = 500
MAX_ORDER_LINES = 500
MAX_PROPERTIES = 32

PURCHASE_HISTORY = "purchase_history"
CLICKSTREAM = "notify_clickstream"
TOPICS = (PURCHASE_HISTORY, CLICKSTREAM)

Id = Annotated[str, Field(min_length=1, max_length=bounds.MAX_ID_LENGTH, pattern=bounds.ID_PATTERN)]
ShortText = Annotated[str, Field(max_length=1024)]
Url = Annotated[str, Field(min_length=1, max_length=2048)]


class _Event(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    event_id: Id | None = None
    user_id: Id
    ts: datetime
    properties: dict[Annotated[str, Field(max_length=64)], ShortText | int | float | bool] = Field(
        default_factory=dict, max_length=MAX_PROPERTIES
    )

    @field_validator("ts")
    @classmethod
    def _utc(cls, value: datetime, info: ValidationInfo) -> datetime:
        """Naive timestamps are UTC; aware ones are converted, so equal instants hash equally.

        Then the sane window of :mod:`notify_core.bounds`: the lower edge always, the upper edge when the
        caller passed its clock's time as ``context={"now": ...}`` (capture does; a replay need not).
        """
        try:
            value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        except OverflowError:  # 0001-01-01T00:00+01:00, 9999-12-31T23:59-01:00: no UTC form
            raise ValueError(f"time {value.isoformat()} has no UTC representation") from None
        now = info.context.get("now") if isinstance(info.context, dict) else None
        reason = bounds.time_reason(value, now=now)
        if reason is not None:
            raise ValueError(reason)
        return value

    @field_validator("properties")
    @classmethod
    def _storable(cls, value: dict[str, Any]) -> dict[str, Any]:
        """Every number must fit the Store (int64, finite) and sane bounds."""
        for name, item in value.items():
            reason = bounds.scalar_reason(item)
            if reason is not None:
                raise ValueError(f"{name}: {reason}")
        return value

    @property
    def id(self) -> str:
        """The event id (always set on events that came out of :func:`parse_event`)."""
        return self.event_id if self.event_id is not None else stable_event_id(self)


class OrderLine(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    product_id: Id
    quantity: int = Field(ge=-bounds.MAX_QUANTITY, le=bounds.MAX_QUANTITY)  # negative on returns
    unit_price: float = Field(ge=0, le=bounds.MAX_UNIT_PRICE)

    @field_validator("quantity")
    @classmethod
    def _non_zero(cls, value: int) -> int:
        if value == 0:
            raise ValueError("quantity must not be 0")
        return value

    @field_validator("unit_price")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("unit_price must be finite")
        return value

    @model_validator(mode="after")
    def _amount(self) -> OrderLine:
        reason = bounds.line_reason(self.quantity, self.unit_price)
        if reason is not None:
            raise ValueError(reason)
        return self


class Order(_Event):
    type: Literal["order"]
    order_id: Id
    items: list[OrderLine] = Field(min_length=1, max_length=MAX_ORDER_LINES)
    country: ShortText | None = None

    @model_validator(mode="after")
    def _merged(self) -> Order:
        """The lines of one product are one ``purchases`` row: that row within bounds too."""
        if len(self.items) > 1:
            reason = bounds.merged_lines_reason((line.product_id, line.quantity, line.unit_price)
                                                for line in self.items)
            if reason is not None:
                raise ValueError(reason)
        return self


class Click(_Event):
    type: Literal["click"]
    campaign_id: Id | None = None
    product_id: Id | None = None
    notification_id: Id | None = None
    url: Url | None = None


class CampaignView(_Event):
    type: Literal["campaign_view"]
    campaign_id: Id


class NotificationOpen(_Event):
    type: Literal["notification_open"]
    notification_id: Id
    campaign_id: Id | None = None


class NotificationClick(_Event):
    type: Literal["notification_click"]
    notification_id: Id
    campaign_id: Id | None = None
    url: Url | None = None


Event = Annotated[
    Order | Click | CampaignView | NotificationOpen | NotificationClick,
    Field(discriminator="type"),
]
EVENT_TYPES = ("order", "click", "campaign_view", "notification_open", "notification_click")
EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)


def stable_event_id(event: _Event) -> str:
    """``ev_`` + 32 hex of SHA-256 over the canonical JSON of the payload without its id."""
    payload = event.model_dump(mode="json", exclude={"event_id"})
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "ev_" + hashlib.sha256(canonical.encode()).hexdigest()[:32]


def json_time(ts: datetime) -> str:
    """An event's (UTC) ``ts`` as its JSON carries it, ``...T10:00:01Z``: pydantic's format, 5x cheaper."""
    return ts.isoformat().removesuffix("+00:00") + "Z"


def topic_for(event: _Event) -> str:
    """Orders go to the purchase history; everything users do with campaigns goes to the clickstream."""
    return PURCHASE_HISTORY if isinstance(event, Order) else CLICKSTREAM


def dlq_topic(topic: str) -> str:
    return f"{topic}{DEAD_LETTER_SUFFIX}"


def encode_event(event: _Event) -> bytes:
    """The stream value: the event's canonical JSON (with its id)."""
    return event.model_dump_json(exclude_none=True).encode()


def _with_id(event: Event) -> Event:
    if event.event_id is not None:
        return event
    return event.model_copy(update={"event_id": stable_event_id(event)})


def explain(exc: PydanticValidationError) -> str:
    """One readable line per validation error, the first few only."""
    parts: list[str] = []
    for error in exc.errors()[:3]:
        kind = error["type"]
        ctx = error.get("ctx") or {}
        if kind == "union_tag_invalid":
            parts.append(f"unknown event type {ctx.get('tag')!r} (expected one of: {', '.join(EVENT_TYPES)})")
        elif kind == "union_tag_not_found":
            parts.append("missing event type (field 'type')")
        else:
            loc = [str(p) for p in error["loc"]]
            if loc and loc[0] in EVENT_TYPES:
                loc = loc[1:]  # drop the union tag pydantic puts first
            where = ".".join(loc) or "event"
            parts.append(f"{where}: {error['msg']}")
    more = len(exc.errors()) - len(parts)
    return "; ".join(parts) + (f" (+{more} more)" if more > 0 else "")


def parse_event(data: Any, *, now: datetime | None = None) -> Event:
    """Validate one decoded event (a dict); raises ``ValidationError`` with a readable reason.

    ``now`` (the receiver's clock) enables the upper edge of the time window (see :mod:`notify_core.bounds`).
    """
    if not isinstance(data, dict):
        raise ValidationError("an event must be a JSON object")
    try:
        return _with_id(EVENT_ADAPTER.validate_python(data, context={"now": now}))
    except PydanticValidationError as exc:
        raise ValidationError(explain(exc)) from None


def decode_event(value: bytes, *, now: datetime | None = None) -> Event:
    """Validate a stream value (JSON bytes); raises ``ValidationError`` (poison message) on any defect.

    ``now`` (the consumer's clock) enables the upper edge of the time window, as :func:`parse_event`'s
    does at capture: a record another writer put on the log dated 9999-12-31 is poison, not an order
    (batch ingestion quarantines the same row, so the Store and the lake would disagree otherwise).
    """
    try:
        return _with_id(EVENT_ADAPTER.validate_json(value, context={"now": now}))
    except PydanticValidationError as exc:
        if any(e["type"] == "json_invalid" for e in exc.errors()):
            raise ValidationError(f"undecodable message: {exc.errors()[0]['msg']}") from None
        raise ValidationError(explain(exc)) from None


VALIDATED_HEADER = "x-notify-validated"
"""Record header capture puts on every event it produced: "these models validated it at the HTTP edge"."""
SCHEMA_VERSION = b"1"
"""The value of :data:`VALIDATED_HEADER`: the version of these models. Bump it when a change to the models
makes older canonical JSON mean something else; records of another version take the full decode."""
VALIDATED_HEADERS: tuple[tuple[str, bytes], ...] = ((VALIDATED_HEADER, SCHEMA_VERSION),)

EVENT_MODELS: dict[str, type[_Event]] = {
    typing.get_args(model.model_fields["type"].annotation)[0]: model
    for model in (Order, Click, CampaignView, NotificationOpen, NotificationClick)
}
"""Each event type's model, by its ``type`` tag."""
_CANONICAL_TS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{6})?Z")  # pydantic's UTC form
_EARLIEST_TS = json_time(bounds.EARLIEST_EVENT_TIME)  # the lower bound, in that form
_LONGEST_TEXT = 2048  # the models' longest string field (Url); ids are shorter and their own rule checks them
_LONGEST_PROPERTY = 1024  # ShortText
_Text = Annotated[str, msgspec.Meta(max_length=_LONGEST_TEXT)]
_Scalar = bool | int | float | Annotated[str, msgspec.Meta(max_length=_LONGEST_PROPERTY)]


class TrustedLine(msgspec.Struct, forbid_unknown_fields=True):
    """An order line of trusted canonical JSON: exactly the models' three fields."""

    product_id: _Text
    quantity: int
    unit_price: int | float  # an int is not the canonical form: it makes the record the models' (below)


class TrustedEvent(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, tag_field="type"):
    """The canonical JSON of a validated event, decoded by :func:`decode_trusted`. One subclass per event
    type (:data:`_TRUSTED_TYPES`), each with that model's fields: the models own the field list; this only
    says which JSON shape a field has. Fields the JSON leaves out are ``msgspec.UNSET``."""

    event_id: _Text
    user_id: _Text
    ts: _Text
    properties: Annotated[dict[str, _Scalar], msgspec.Meta(max_length=MAX_PROPERTIES)] | msgspec.UnsetType = (
        msgspec.UNSET)


def _trusted_type(name: str, model: type[_Event]) -> type[TrustedEvent]:
    """The trusted shape of one model: its JSON-string fields as bounded strings, its order lines as
    :class:`TrustedLine`; required as the canonical JSON always has them (the id too), else optional."""
    fields: list[tuple[str, Any, Any]] = []
    for field_name, info in model.model_fields.items():
        if field_name in TrustedEvent.__struct_fields__ or field_name == "type":
            continue
        kind: Any = (Annotated[list[TrustedLine], msgspec.Meta(min_length=1, max_length=MAX_ORDER_LINES)]
                     if field_name == "items" else _Text)
        fields.append((field_name, kind, msgspec.NODEFAULT) if info.is_required()
                      else (field_name, kind | msgspec.UnsetType, msgspec.UNSET))
    shape = msgspec.defstruct(f"Trusted{model.__name__}", fields, bases=(TrustedEvent,), tag=name)
    return typing.cast(type[TrustedEvent], shape)


_TRUSTED_TYPES: dict[str, type[TrustedEvent]] = {
    name: _trusted_type(name, model) for name, model in EVENT_MODELS.items()
}
"""Each event type's trusted shape, by its ``type`` tag."""
TRUSTED_TAGS: dict[type[TrustedEvent], str] = {shape: name for name, shape in _TRUSTED_TYPES.items()}
"""The ``type`` tag of each trusted shape (the tag is not a field of the decoded value)."""
_TRUSTED: msgspec.json.Decoder[TrustedEvent] = msgspec.json.Decoder(
    typing.Union[tuple(_TRUSTED_TYPES.values())]  # noqa: UP007 (the union of a runtime tuple of types)
)


def decode_trusted(value: bytes) -> TrustedEvent | None:
    """The canonical JSON of an event capture validated, decoded; None when it does not look like one.

    Why: the models run at the HTTP edge (capture, with the receiver's clock for the time window) and
    used to run again in the consumer, where pydantic's decode and the datetime work were ~45 % of its
    time. A record carrying :data:`VALIDATED_HEADERS` was produced from a validated event, so the
    consumer trusts its *content* (patterns, lengths, bounds: the models' rules, owned there) and this
    checks only its *shape*: a JSON object of a known type, no unknown field, every required field
    present, the id-like fields strings, ``ts`` in the one UTC form :func:`encode_event` writes (and
    not before the lower edge of :mod:`~notify_core.bounds`, which the full decode checks too),
    properties flat scalars the Store can hold, order lines of the three typed fields within the bounds
    of :mod:`~notify_core.bounds` (each line, and the lines of a product merged: the trusted rows reach
    the Store and the landing file's Int64 columns as they are). Anything else
    returns None and the caller takes :func:`decode_event`, the full models, which either accept the
    event or name the defect (the record is then dead-lettered with that reason): a malformed record
    is never persisted on trust, and never dropped silently.

    The shape is checked by msgspec's typed decode (:class:`TrustedEvent`), in C: the same checks as a
    dict and a Python walk over its fields cost ~2 us an event, a third of the decoding process's work.
    What msgspec's types cannot say (the ``ts`` form and calendar, the numbers' bounds) is checked here.
    """
    try:
        event = _TRUSTED.decode(value)
    except msgspec.DecodeError:  # not JSON, not an object, no or unknown type, or not the shape
        return None
    ts = event.ts
    if not _CANONICAL_TS.fullmatch(ts) or ts < _EARLIEST_TS:  # canonical strings compare as their instants
        return None
    try:
        datetime.fromisoformat(ts)  # a real calendar date (the pattern alone allows month 13)
    except ValueError:
        return None
    properties = event.properties
    if properties and not _scalars(properties):  # (UNSET is false)
        return None
    lines = getattr(event, "items", None)
    if lines is not None and not _lines(lines):
        return None
    return event


def _scalars(properties: dict[str, Any]) -> bool:
    """The numbers among flat scalars within the bounds (texts and flags are bounded by their type)."""
    for item in properties.values():
        kind = type(item)
        if kind is not bool and kind is not str and bounds.scalar_reason(item) is not None:
            return False
    return True


def _lines(lines: list[TrustedLine]) -> bool:
    """Order lines within the bounds the models apply (:mod:`~notify_core.bounds` owns them: each line,
    then the lines of one product merged), prices as floats: a number beyond them is not content to
    trust but a record to decode with the models, which name the bound it breaks."""
    for line in lines:
        quantity, price = line.quantity, line.unit_price
        if not quantity or type(price) is not float or bounds.line_reason(quantity, price) is not None:
            return False
    if len(lines) == 1 or len({line.product_id for line in lines}) == len(lines):
        return True  # no product repeats: each merged row is a line, checked above
    return bounds.merged_lines_reason((line.product_id, line.quantity, line.unit_price) for line in lines) is None


@dataclass(frozen=True, slots=True)
class Accepted:
    index: int
    event: Event


@dataclass(frozen=True, slots=True)
class Rejected:
    index: int
    event_id: str | None
    reason: str


@dataclass(frozen=True, slots=True)
class ParsedBatch:
    accepted: list[Accepted]
    rejected: list[Rejected]
    single: bool  # the body was one event, not a batch


def parse_batch(raw: bytes | str, *, now: datetime | None = None) -> ParsedBatch:
    """Parse a capture body: one event object, ``{"events": [...]}``, or a bare JSON array.

    Whole-request defects raise (``PayloadTooLargeError`` over :data:`MAX_BODY_BYTES` or
    :data:`MAX_BATCH_EVENTS`, ``ValidationError`` for malformed JSON or a wrong shape); a bad event in a
    good batch is rejected alone with its reason and never costs the others their place. A repeated
    event id within the batch is rejected too ("duplicate in batch"): the first one is the one produced.
    """
    size = len(raw)
    if size > MAX_BODY_BYTES:
        raise PayloadTooLargeError(f"request body is {size} bytes; the limit is {MAX_BODY_BYTES}")
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValidationError(f"malformed JSON: {exc}") from None
    except RecursionError:  # events are flat; thousands of nested brackets are an attack or a bug
        raise ValidationError("malformed JSON: nested too deeply") from None
    single = False
    if isinstance(doc, dict) and "events" in doc and "type" not in doc:
        items = doc["events"]
        if set(doc) - {"events"}:
            raise ValidationError("a batch object takes only the field 'events'")
    elif isinstance(doc, dict):
        items, single = [doc], True
    else:
        items = doc
    if not isinstance(items, list):
        raise ValidationError('body must be an event object, {"events": [...]}, or a JSON array of events')
    if not items:
        raise ValidationError("the batch is empty")
    if len(items) > MAX_BATCH_EVENTS:
        raise PayloadTooLargeError(f"the batch has {len(items)} events; the limit is {MAX_BATCH_EVENTS}")
    accepted: list[Accepted] = []
    rejected: list[Rejected] = []
    first_at: dict[str, int] = {}
    for index, item in enumerate(items):
        try:
            event = parse_event(item, now=now)
            event_id = event.id
            if event_id in first_at:
                rejected.append(Rejected(index, event_id, f"duplicate in batch: event_id {event_id!r} is also "
                                                          f"event {first_at[event_id]} of this request"))
                continue
            first_at[event_id] = index
            accepted.append(Accepted(index, event))
        except ValidationError as exc:
            given = item.get("event_id") if isinstance(item, dict) else None
            rejected.append(Rejected(index, given if isinstance(given, str) else None, str(exc)))
    return ParsedBatch(accepted, rejected, single)

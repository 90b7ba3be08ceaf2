"""Sane bounds for the values Notify accepts, named once: capture, the consumer and batch checks share them.

Why bounds at all: what the edge accepts must be something the Store can hold and the models can
use. An integer beyond int64 makes SQLite (and DynamoDB's number type, 38 digits, differently) refuse
the row long after the client got its 202; NaN and Infinity have no JSON or DynamoDB form; a
timestamp at the calendar's edge overflows when converted to UTC; a quantity of 10^12 or a time in 1970
or next year is a client bug that would skew features and plans. Each check returns a reason (a
string) or None, so callers choose between a 400, a dead letter or a quarantined row.

Numbers have a floor as well as a ceiling: DynamoDB's Number type holds magnitudes from 1E-130 (below is
"Number underflow"), while SQLite and JSON hold doubles down to 5e-324. A property of 1e-200 used to pass
capture (202), persist on SQLite and be dead-lettered on DynamoDB, so the edge acknowledged an event one
backend cannot keep. :func:`float_reason` refuses a nonzero magnitude below :data:`MIN_NONZERO_MAGNITUDE`
(zero itself is fine), so every backend answers the same 400; the DynamoDB adapter keeps its own check
for anything that reaches it by another path.

Batch ingestion has its own set below (dates, amounts and counts of landing rows):


A single poisoned row used to move everything downstream: an order dated 9999-12-31 became the lake's
"newest purchase", the as-of time of every feature, and put every user's ``recency_days`` near three
million; a price of 1e308 made spend and revenue infinite. These bounds are enforced twice:

* at batch ingestion (:mod:`notify_core.ingest.validation`): a row outside a bound is quarantined with a
  reason that names the bound (``"ts after MAX_FUTURE_SKEW (now + 1 day)"``), and a non-finite number
  (``inf``, ``nan``) does not parse;
* in feature engineering (:func:`purchases_in_bounds`), as defence in depth for rows that reached the
  lake before these checks existed: features never see an infinite amount or a year-9999 date.

Why these numbers: Online Retail's dearest line is 38,970 and its largest quantity 80,995; a shop whose
real orders pass 1,000,000 per unit or per line changes the constant, visibly. Dates start at
:data:`MIN_DATE` (older is a typo or an epoch default) and may run at most :data:`MAX_FUTURE_SKEW` ahead of
the ingesting clock (clock skew between shops and Notify), and never past :data:`MAX_DATE`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any, Literal, get_args

import polars as pl
from pydantic import StringConstraints

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

EARLIEST_EVENT_TIME = datetime(2000, 1, 1, tzinfo=UTC)
"""Events before this are rejected (clients sending epoch 0 or a year-1 default)."""

# Ids (users, products, campaigns, orders, events): letters, digits and ``. _ : @ / + = -``, 1 to 128 of them.
# ``#`` is the Store's key separator (a schedule item's sort key is ``<user id>#<notification id>``), so an
# id holding one could pass for another's key prefix: the erasure of user ``a`` matched ``a#b``'s schedule
# items. Capture always refused such ids; batch ingestion now quarantines them too.
MAX_ID_LENGTH = 128
ID_CHARACTERS = "A-Za-z0-9._:@/+=-"
ID_PATTERN = rf"^[{ID_CHARACTERS}]{{1,{MAX_ID_LENGTH}}}$"


def integer_id_text(values: pl.Expr) -> pl.Expr:
    """An id that arrived as a number (pandas writes an id column with a missing value as floats), as the
    integer text every other path gives it: ``12345.0`` -> ``"12345"``, not ``"12345.0"`` (another user).
    A value that is not a whole number within int64 (``17850.7``, ``1e30``, ``NaN``, ``"abc"``) is null,
    for the caller to report as unparseable; truncating it would name another id."""
    number = values.cast(pl.Float64, strict=False)
    whole = number.is_finite() & (number == number.floor()) & (number.abs() < float(2**63))
    return pl.when(whole).then(number.cast(pl.Int64, strict=False)).otherwise(None).cast(pl.String)


MAX_CLOCK_SKEW = timedelta(days=1)
"""How far ahead of the receiver's clock an event time may be (clock skew, time zones gone wrong)."""

MAX_QUANTITY = 1_000_000  # units of one order line, either sign (returns are negative)
MAX_UNIT_PRICE = 1_000_000.0  # currency units per unit
MAX_LINE_AMOUNT = 100_000_000.0  # |quantity| * unit_price of one line
MAX_PROPERTY_NUMBER = 1e15  # a float property beyond this is noise or a unit error (and loses cents)
MIN_NONZERO_MAGNITUDE = 1e-130
"""The smallest nonzero magnitude a number may have: DynamoDB's Number type stops at 1E-130 (see above)."""

def int_reason(value: int) -> str | None:
    if INT64_MIN <= value <= INT64_MAX:
        return None
    return f"integer {_short(value)} is outside the 64-bit range [-2^63, 2^63-1]"


def float_reason(value: float, *, limit: float = MAX_PROPERTY_NUMBER) -> str | None:
    """A float every backend can store: finite, at most ``limit`` in magnitude, and zero or at least
    :data:`MIN_NONZERO_MAGNITUDE` in magnitude (below that DynamoDB underflows where SQLite would not)."""
    if not math.isfinite(value):
        return f"{value} is not a finite number (NaN and Infinity cannot be stored)"
    if abs(value) > limit:
        return f"{value:g} is outside [-{limit:g}, {limit:g}]"
    if value != 0 and abs(value) < MIN_NONZERO_MAGNITUDE:
        return (f"{value:g} is too close to zero: a nonzero number must be at least {MIN_NONZERO_MAGNITUDE:g} "
                f"in magnitude (send 0 or rescale the unit)")
    return None


def scalar_reason(value: Any) -> str | None:
    """A property value: bools are fine, ints must fit int64, floats must be finite and bounded."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return int_reason(value)
    if isinstance(value, float):
        return float_reason(value)
    return None


def time_reason(ts: datetime, *, now: datetime | None) -> str | None:
    """An event time: not before :data:`EARLIEST_EVENT_TIME`, not more than :data:`MAX_CLOCK_SKEW` after ``now``."""
    if ts < EARLIEST_EVENT_TIME:
        return f"time {ts.isoformat()} is before {EARLIEST_EVENT_TIME.date().isoformat()}"
    if now is not None and ts > now + MAX_CLOCK_SKEW:
        return f"time {ts.isoformat()} is more than {MAX_CLOCK_SKEW} ahead of now ({now.isoformat()})"
    return None


def line_reason(quantity: int, unit_price: float) -> str | None:
    """One order line: quantity and price within bounds, and so is their product."""
    if abs(quantity) > MAX_QUANTITY:
        return f"quantity {_short(quantity)} is outside [-{MAX_QUANTITY}, {MAX_QUANTITY}]"
    if not math.isfinite(unit_price) or not 0 <= unit_price <= MAX_UNIT_PRICE:
        return f"unit_price {unit_price} is outside [0, {MAX_UNIT_PRICE:g}]"
    tiny = float_reason(unit_price, limit=MAX_UNIT_PRICE)  # the floor every stored number has
    if tiny is not None:
        return f"unit_price {tiny}"
    if abs(quantity) * unit_price > MAX_LINE_AMOUNT:
        return f"line amount {abs(quantity) * unit_price:g} is above {MAX_LINE_AMOUNT:g}"
    return None


def line_amount(quantity: pl.Expr, unit_price: pl.Expr) -> pl.Expr:
    """The amount :func:`line_reason` bounds by :data:`MAX_LINE_AMOUNT` (``|quantity| * unit_price``), for a
    frame: batch ingestion quarantines the lines capture refuses. Null where a factor is outside its own
    bound: as in :func:`line_reason`, that bound is the reason, not the product as well. In floats, so that
    ``|INT64_MIN|`` cannot wrap."""
    magnitude = quantity.cast(pl.Float64).abs()
    return pl.when((magnitude <= MAX_QUANTITY) & (unit_price <= MAX_UNIT_PRICE)).then(magnitude * unit_price)


def merge_lines(lines: Iterable[tuple[str, int, float]]) -> dict[str, tuple[int, float]]:
    """An order's (product_id, quantity, unit_price) lines as the Store and the landing file keep them: one row
    per product, its quantities summed at its first line's price. The consumer writes these rows and
    :func:`merged_lines_reason` bounds them; batch ingestion applies the same rule to a file's repeated lines
    (``ingest.batch._merge_repeated_lines``, in polars)."""
    merged: dict[str, tuple[int, float]] = {}
    for product_id, quantity, unit_price in lines:
        total, price = merged.get(product_id, (0, unit_price))
        merged[product_id] = (total + quantity, price)
    return merged


def merged_lines_reason(lines: Iterable[tuple[str, int, float]]) -> str | None:
    """An order's lines merged per product, as the Store and the landing file keep them (one ``purchases``
    row per product: the quantities summed, the first line's price): each merged row within the bounds
    of :func:`line_reason` too. Lines each within bounds can sum past them (two lines of 10^6 units),
    and in the consumer's trusted path past int64 (two of 2^62), which the landing file cannot hold.

    Lines can also cancel out (+1 and -1 of one product): each is a valid line, but the merged row has a
    quantity of 0, which batch ingestion quarantines ("quantity must not be 0"), so the consumer's own
    landing file would be refused by the lake the Store already took it into. Refused here, where the
    merge is defined, so capture answers 400 and a record written straight to the log is dead-lettered."""
    for product_id, (total, price) in merge_lines(lines).items():
        if total == 0:
            return f"product {product_id!r}, its lines merged: quantity must not be 0 (its lines cancel out)"
        reason = line_reason(total, price)
        if reason is not None:
            return f"product {product_id!r}, its lines merged: {reason}"
    return None


def _short(value: int) -> str:
    text = str(value)
    return text if len(text) <= 24 else f"{text[:10]}...({len(text)} digits)"


# batch ingestion and features ------------------------------------------------------------------
MIN_DATE = date(1990, 1, 1)
MAX_DATE = date(2100, 1, 1)  # the static ceiling when no clock is at hand (features)
MIN_TIMESTAMP = datetime(MIN_DATE.year, MIN_DATE.month, MIN_DATE.day, tzinfo=UTC)
MAX_TIMESTAMP = datetime(MAX_DATE.year, MAX_DATE.month, MAX_DATE.day, tzinfo=UTC)
MAX_FUTURE_SKEW = MAX_CLOCK_SKEW  # purchases and sign-ups at most this far ahead of "now", as events
# The longest cooldown that can be honoured: a cooldown is judged by the user's ``sends``, which are kept this
# long (plus a day: delivery.outcomes.SENDS_TTL_S), so a longer one would quietly end early. Refused instead
# (the campaign API's 400, ingestion's quarantine); was a year, while the sends were kept 30 days.
MAX_COOLDOWN_HOURS = 24 * 30
MAX_DAILY_BUDGET = 1_000_000_000  # sends per campaign and day
MIN_PRIORITY, MAX_PRIORITY = 1, 5  # a campaign's priority: 1 (low) .. 5 (high)
MAX_DAILY_CAP = 5  # notifications a user gets a day at most: the requirement's "max 5", and a profile's cap 0..5

# Text lengths, in characters. Every backend must hold the row: DynamoDB refuses an item over 400 KB where
# SQLite takes anything, so a 500 KB product description passed validation and then failed the whole
# dataset's ingestion (the good rows beside it too) inside the Store write, on every retry. The campaign
# API and batch ingestion read the same constants (ids have their own rule, MAX_ID_LENGTH; templates and
# URLs theirs, in notify_core.delivery).
MAX_NAME_LENGTH = 200  # a campaign's name
MAX_TEXT_LENGTH = 2_000  # a campaign's text, a product's description: prose that is embedded and shown
MAX_CATEGORY_LENGTH = 64  # a product's or campaign's category, as a user's opt-out names it (preferences)
MAX_COUNTRY_LENGTH = 64  # a user's or an order's country
Category = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_CATEGORY_LENGTH)]
"""A category name, as the API takes it in a user's opt-outs and a campaign (here, not in a module of either:
what a Lambda imports decides the tables its role may touch, ``notify templates``)."""

# The list columns, item by item and in count, as the API takes them (the preferences and campaign models)
# and batch ingestion quarantines them (``ingest.validation.LIST_LIMITS``): a file once landed a channel no
# worker knows, a 10 KB product id, thousands of categories.
Channel = Literal["push", "email", "sms", "in_app", "webhook"]
CHANNELS: tuple[str, ...] = get_args(Channel)
MAX_CATEGORIES = 50  # categories one user opts out of
MAX_PRODUCT_IDS = 1_000  # products one campaign promotes
MAX_TARGET_COUNTRIES = 300  # countries one campaign targets (more than there are)


def latest_allowed(now: datetime | None) -> datetime:
    """The newest timestamp accepted: ``now + MAX_FUTURE_SKEW``, never past :data:`MAX_TIMESTAMP`."""
    if now is None:
        return MAX_TIMESTAMP
    return min(now.astimezone(UTC) + MAX_FUTURE_SKEW, MAX_TIMESTAMP)


def latest_allowed_label(now: datetime | None) -> str:
    return "MAX_FUTURE_SKEW (now + 1 day)" if now is not None else f"MAX_DATE ({MAX_DATE.isoformat()})"


def purchases_in_bounds(purchases: pl.DataFrame) -> pl.DataFrame:
    """Only purchase rows inside every bound (finite, in range, a line amount capture would take, dated
    between MIN_DATE and MAX_DATE): the features' second line of defence behind ingestion and capture."""
    if purchases.is_empty():
        return purchases
    price = pl.col("unit_price")
    quantity = pl.col("quantity")
    ts = pl.col("ts")
    keep = (price.is_finite() & (price > 0) & (price <= MAX_UNIT_PRICE)
            & (quantity.abs() <= MAX_QUANTITY) & (line_amount(quantity, price) <= MAX_LINE_AMOUNT)
            & (ts >= pl.lit(MIN_TIMESTAMP)) & (ts < pl.lit(MAX_TIMESTAMP)))
    return purchases.filter(keep.fill_null(False))

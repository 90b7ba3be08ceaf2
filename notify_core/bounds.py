"""Sane bounds for the values Notify accepts, named once: capture, the consumer and batch checks share them.

Why bounds at all: what the edge accepts must be something the Store can hold and the models can
use. An integer beyond int64 makes SQLite (and DynamoDB's number type, 38 digits, differently) refuse
the row long after the client got its 202; NaN and Infinity have no JSON or DynamoDB form; a
timestamp at the calendar's edge overflows when converted to UTC; a quantity of 10^12 or a time in 1970
or next year is a client bug that would skew features and plans. Each check returns a reason (a
string) or None, so callers choose between a 400, a dead letter or a quarantined row.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

EARLIEST_EVENT_TIME = datetime(2000, 1, 1, tzinfo=UTC)
"""Events before this are rejected (clients sending epoch 0 or a year-1 default)."""
MAX_CLOCK_SKEW = timedelta(days=1)
"""How far ahead of the receiver's clock an event time may be (clock skew, time zones gone wrong)."""

MAX_QUANTITY = 1_000_000  # units of one order line, either sign (returns are negative)
MAX_UNIT_PRICE = 1_000_000.0  # currency units per unit
MAX_LINE_AMOUNT = 100_000_000.0  # |quantity| * unit_price of one line
MAX_PROPERTY_NUMBER = 1e15  # a float property beyond this is noise or a unit error (and loses cents)

def int_reason(value: int) -> str | None:
    if INT64_MIN <= value <= INT64_MAX:
        return None
    return f"integer {_short(value)} is outside the 64-bit range [-2^63, 2^63-1]"


def float_reason(value: float, *, limit: float = MAX_PROPERTY_NUMBER) -> str | None:
    if not math.isfinite(value):
        return f"{value} is not a finite number (NaN and Infinity cannot be stored)"
    if abs(value) > limit:
        return f"{value:g} is outside [-{limit:g}, {limit:g}]"
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
    if abs(quantity) * unit_price > MAX_LINE_AMOUNT:
        return f"line amount {abs(quantity) * unit_price:g} is above {MAX_LINE_AMOUNT:g}"
    return None


def _short(value: int) -> str:
    text = str(value)
    return text if len(text) <= 24 else f"{text[:10]}...({len(text)} digits)"

"""The floor under stored numbers (audit finding 2): DynamoDB's Number type stops at 1E-130, SQLite's
doubles go down to 5e-324. :mod:`notify_core.bounds` owns the rule (a nonzero magnitude below
:data:`~notify_core.bounds.MIN_NONZERO_MAGNITUDE` is refused, zero is fine), so capture refuses the same
numbers on every backend; the DynamoDB adapter refuses them itself, with the range named, if they reach it
by another path."""

from __future__ import annotations

import sys
from decimal import Decimal

import pytest

from notify_core import bounds
from notify_core.errors import ValidationError
from notify_core.store.dynamodb import serialize

TINY = [1e-200, -1e-200, 9.99e-131, -9.99e-131, sys.float_info.min, 5e-324]


@pytest.mark.parametrize("value", TINY, ids=repr)
def test_a_nonzero_float_below_the_floor_is_refused_with_a_reason(value: float) -> None:
    reason = bounds.float_reason(value)
    assert reason is not None and "too close to zero" in reason and "1e-130" in reason, reason
    assert bounds.scalar_reason(value) == reason  # the properties' check is the same rule


@pytest.mark.parametrize("value", [0.0, -0.0, 1e-130, -1e-130, 1.5e-7, 1.0, -2.5, bounds.MAX_PROPERTY_NUMBER], ids=repr)
def test_zero_and_magnitudes_from_the_floor_up_are_fine(value: float) -> None:
    assert bounds.float_reason(value) is None
    assert bounds.scalar_reason(value) is None


def test_the_upper_limit_and_non_finite_numbers_keep_their_reasons() -> None:
    assert bounds.float_reason(1e16) == "1e+16 is outside [-1e+15, 1e+15]"
    assert bounds.float_reason(-1e16) == "-1e+16 is outside [-1e+15, 1e+15]"
    assert bounds.float_reason(1e-200, limit=1e-300) == "1e-200 is outside [-1e-300, 1e-300]"  # the limit first
    assert "not a finite number" in (bounds.float_reason(float("nan")) or "")
    assert "not a finite number" in (bounds.float_reason(float("inf")) or "")


def test_a_unit_price_below_the_floor_is_refused_in_a_line_and_in_merged_lines() -> None:
    reason = bounds.line_reason(1, 1e-200)
    assert reason is not None and reason.startswith("unit_price 1e-200 is too close to zero"), reason
    assert bounds.line_reason(1, 0.0) is None and bounds.line_reason(-3, 1e-130) is None
    merged = bounds.merged_lines_reason([("p1", 1, 1e-200), ("p1", 2, 1e-200)])
    assert merged is not None and "too close to zero" in merged


@pytest.mark.parametrize("value", [1e-200, -1e-200, 9.99e-131, Decimal("1E-131"), Decimal("-1E-200")], ids=repr)
def test_the_dynamodb_mapping_refuses_an_underflowing_number_with_the_range_named(value: float | Decimal) -> None:
    """Before the request is sent, with the value and DynamoDB's range in the message (DynamoDB itself says
    "Number underflow" after the round trip, naming neither)."""
    with pytest.raises(ValidationError, match=r"cannot hold the number .*1E-130 to 9\.99\.\.\.E\+125 \(underflow\)"):
        serialize(value)
    with pytest.raises(ValidationError, match="underflow"):
        serialize({"nested": [value]})


@pytest.mark.parametrize("value", [1e126, -1e300, Decimal("1E+126")], ids=repr)
def test_the_dynamodb_mapping_refuses_an_overflowing_number_with_the_range_named(value: float | Decimal) -> None:
    with pytest.raises(ValidationError, match=r"\(overflow\)"):
        serialize(value)


def test_the_dynamodb_mapping_keeps_zero_and_the_edges_of_its_range() -> None:
    assert serialize(0.0) == {"N": "0.0"} and serialize(-0.0) == {"N": "-0.0"}
    assert serialize(1e-130) == {"N": "1E-130"} and serialize(-1e-130) == {"N": "-1E-130"}
    assert serialize(9.99e125) == {"N": "9.99E+125"}
    assert serialize(Decimal("0E-200")) == {"N": "0E-200"}
    assert serialize(1.5e-7) == {"N": "1.5E-7"} and serialize(0.1) == {"N": "0.1"}

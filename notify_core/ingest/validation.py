"""Data checks at the edge, with great-expectations: every bad row is quarantined with its reasons.

A landing file arrives as text (CSV) or typed Parquet. :func:`prepare` casts it to the dataset's
schema without failing (a value that does not parse becomes null and a ``<column>__parsed`` flag
records it), then one great-expectations suite per dataset runs over the prepared frame with
``result_format=COMPLETE`` so each failing expectation names the rows it failed on. A row that fails
any expectation is bad, with one reason per failed expectation; every other row is good and lands.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import polars as pl

from notify_core import bounds
from notify_core.errors import ValidationError
from notify_core.scheduling.timezones import known_zones
from notify_core.schemas import KEYS, SCHEMAS

log = logging.getLogger(__name__)

PARSED_SUFFIX = "__parsed"
PRESENT_SUFFIX = "__present"
SAFE_SUFFIX = "__safe"
ID_SUFFIX = "__id"  # an id column's value is missing or unparseable (their own reasons) or matches bounds.ID_PATTERN
FLOOR_SUFFIX = "__floor"  # a float column's value is 0, null, or at least bounds.MIN_NONZERO_MAGNITUDE in magnitude
ROW_COLUMN = "_row"
LINE_AMOUNT = "line_amount"  # a purchase line's bounds.line_amount, derived by prepare() for its bound check
LIST_SEPARATOR = "|"
# The columns that hold ids, per dataset (bounds.ID_PATTERN; a guest order's null user_id is not checked)
ID_COLUMNS: dict[str, tuple[str, ...]] = {
    "users": ("user_id",), "products": ("product_id",), "campaigns": ("campaign_id",),
    "purchases": ("order_id", "product_id", "user_id"),
}

# The longest value of each free-text column, per dataset, with the bound's name for the reason (see
# notify_core.bounds: every backend must hold the row). Ids have their own rule (ID_COLUMNS); timezone and
# status are checked against their sets, template and url by the campaign content checks.
TEXT_LIMITS: dict[str, dict[str, tuple[str, int]]] = {
    "users": {"country": ("MAX_COUNTRY_LENGTH", bounds.MAX_COUNTRY_LENGTH)},
    "products": {"description": ("MAX_TEXT_LENGTH", bounds.MAX_TEXT_LENGTH),
                 "category": ("MAX_CATEGORY_LENGTH", bounds.MAX_CATEGORY_LENGTH)},
    "campaigns": {"name": ("MAX_NAME_LENGTH", bounds.MAX_NAME_LENGTH),
                  "text": ("MAX_TEXT_LENGTH", bounds.MAX_TEXT_LENGTH),
                  "category": ("MAX_CATEGORY_LENGTH", bounds.MAX_CATEGORY_LENGTH)},
    "purchases": {"country": ("MAX_COUNTRY_LENGTH", bounds.MAX_COUNTRY_LENGTH)},
}


@dataclass(frozen=True, slots=True)
class ListRule:
    """What one list column may hold: items no longer than ``item`` (the bound's name and value), at most
    ``count`` of them, each among ``allowed``."""

    item: tuple[str, int] | None = None
    count: tuple[str, int] | None = None
    allowed: tuple[str, ...] | None = None

    def columns(self, column: str) -> list[tuple[str, pl.Expr, str]]:
        """(derived column, its per-row "holds" expression, the reason a row where it does not gets)."""
        values = pl.col(column)
        out: list[tuple[str, pl.Expr, str]] = []
        if self.item is not None:
            name, limit = self.item
            out.append((f"{column}__item_length", values.list.eval(pl.element().str.len_chars() <= limit).list.all(),
                        f"{column}: an item longer than {name} ({limit})"))
        if self.count is not None:
            name, limit = self.count
            out.append((f"{column}__count", values.list.len() <= limit,
                        f"{column}: more than {name} ({limit}) items"))
        if self.allowed is not None:
            out.append((f"{column}__known", values.list.eval(pl.element().is_in(self.allowed)).list.all(),
                        f"{column}: a value outside {', '.join(self.allowed)}"))
        return out


# The list columns, as the API bounds the same fields (notify_core.bounds owns every limit).
LIST_LIMITS: dict[str, dict[str, ListRule]] = {
    "users": {"channels": ListRule(allowed=bounds.CHANNELS),
              "opted_out_categories": ListRule(item=("MAX_CATEGORY_LENGTH", bounds.MAX_CATEGORY_LENGTH),
                                               count=("MAX_CATEGORIES", bounds.MAX_CATEGORIES))},
    "products": {},
    "campaigns": {"product_ids": ListRule(item=("MAX_ID_LENGTH", bounds.MAX_ID_LENGTH),
                                          count=("MAX_PRODUCT_IDS", bounds.MAX_PRODUCT_IDS)),
                  "target_countries": ListRule(item=("MAX_COUNTRY_LENGTH", bounds.MAX_COUNTRY_LENGTH),
                                               count=("MAX_TARGET_COUNTRIES", bounds.MAX_TARGET_COUNTRIES))},
    "purchases": {},
}


@dataclass(frozen=True, slots=True)
class Check:
    """One rule: a great-expectations expectation and the reason a failing row is given."""

    reason: str
    kind: str  # expectation class name in great_expectations.expectations
    kwargs: tuple[tuple[str, Any], ...]

    def build(self) -> Any:
        import great_expectations as gx

        return getattr(gx.expectations, self.kind)(**dict(self.kwargs), meta={"reason": self.reason})


def _check(reason: str, kind: str, **kwargs: Any) -> Check:
    return Check(reason=reason, kind=kind, kwargs=tuple(kwargs.items()))


def _required(*columns: str) -> list[Check]:
    return [_check(f"missing {c}", "ExpectColumnValuesToBeInSet", column=f"{c}{PRESENT_SUFFIX}", value_set=[True])
            for c in columns]


def _bounded(column: str, *, low: Any = None, high: Any = None, low_name: str = "", high_name: str = "") -> list[Check]:
    """One check per side of a :mod:`notify_core.bounds` bound; the reason names the bound it broke."""
    out: list[Check] = []
    if low is not None:
        out.append(_check(f"{column} before {low_name}", "ExpectColumnValuesToBeBetween", column=column,
                          min_value=low))
    if high is not None:
        out.append(_check(f"{column} above {high_name}", "ExpectColumnValuesToBeBetween", column=column,
                          max_value=high))
    return out


def _bound_checks(dataset: str, now: datetime | None) -> list[Check]:
    """Dates, amounts and counts inside :mod:`notify_core.bounds` (see there for why these numbers)."""
    latest = bounds.latest_allowed(now)
    latest_label = bounds.latest_allowed_label(now)
    # great-expectations compares pandas values: aware UTC datetimes for ``ts`` (a UTC column), naive
    # datetimes for date columns (pandas holds them as naive datetime64).
    latest_naive = latest.replace(tzinfo=None)
    earliest_naive = bounds.MIN_TIMESTAMP.replace(tzinfo=None)
    if dataset == "purchases":
        return [
            *_bounded("ts", low=bounds.MIN_TIMESTAMP, high=latest, low_name=f"MIN_DATE ({bounds.MIN_DATE})",
                      high_name=latest_label),
            *_bounded("unit_price", high=bounds.MAX_UNIT_PRICE,
                      high_name=f"MAX_UNIT_PRICE ({bounds.MAX_UNIT_PRICE:g})"),
            *_bounded("quantity", low=-bounds.MAX_QUANTITY, high=bounds.MAX_QUANTITY,
                      low_name=f"-MAX_QUANTITY ({-bounds.MAX_QUANTITY})",
                      high_name=f"MAX_QUANTITY ({bounds.MAX_QUANTITY})"),
            # capture refuses such a line (bounds.line_reason); each factor within its bound can still
            # make one row of 10^12 revenue
            *_bounded(LINE_AMOUNT, high=bounds.MAX_LINE_AMOUNT,
                      high_name=f"MAX_LINE_AMOUNT ({bounds.MAX_LINE_AMOUNT:g})"),
        ]
    if dataset == "products":
        return _bounded("unit_price", high=bounds.MAX_UNIT_PRICE,
                        high_name=f"MAX_UNIT_PRICE ({bounds.MAX_UNIT_PRICE:g})")
    if dataset == "users":
        return _bounded("signup_date", low=earliest_naive, high=latest_naive,
                        low_name=f"MIN_DATE ({bounds.MIN_DATE})", high_name=latest_label)
    if dataset == "campaigns":
        static_max = bounds.MAX_TIMESTAMP.replace(tzinfo=None)
        max_label = f"MAX_DATE ({bounds.MAX_DATE})"
        min_label = f"MIN_DATE ({bounds.MIN_DATE})"
        return [
            *_bounded("start_date", low=earliest_naive, high=static_max, low_name=min_label, high_name=max_label),
            *_bounded("end_date", low=earliest_naive, high=static_max, low_name=min_label, high_name=max_label),
            *_bounded("cooldown_hours", high=bounds.MAX_COOLDOWN_HOURS,
                      high_name=f"MAX_COOLDOWN_HOURS ({bounds.MAX_COOLDOWN_HOURS})"),
            *_bounded("daily_budget", low=0, high=bounds.MAX_DAILY_BUDGET, low_name="0",
                      high_name=f"MAX_DAILY_BUDGET ({bounds.MAX_DAILY_BUDGET})"),
        ]
    return []


def checks_for(dataset: str, *, now: datetime | None = None) -> list[Check]:
    """The suite of a dataset: required ids, parseable values, domain ranges, then the bounds (dates
    relative to ``now`` when given: at most ``MAX_FUTURE_SKEW`` ahead)."""
    parsed = [
        _check(f"unparseable {name}", "ExpectColumnValuesToBeInSet", column=f"{name}{PARSED_SUFFIX}",
               value_set=[True])
        for name, dtype in SCHEMAS[dataset].items()
        if dtype != pl.String or name in ID_COLUMNS[dataset]  # an id can arrive as a number (not whole)
    ] + [
        # every backend must hold the number: DynamoDB's Number underflows below 1e-130 (notify_core.bounds)
        _check(f"{name} nonzero below MIN_NONZERO_MAGNITUDE ({bounds.MIN_NONZERO_MAGNITUDE:g})",
               "ExpectColumnValuesToBeInSet", column=f"{name}{FLOOR_SUFFIX}", value_set=[True])
        for name, dtype in SCHEMAS[dataset].items()
        if dtype.is_float()
    ]
    if dataset == "users":
        domain = _required("user_id", "timezone") + [
            _check("unknown timezone", "ExpectColumnValuesToBeInSet", column="timezone",
                   value_set=sorted(known_zones())),  # the one owner: what the planner can use
            _check(f"daily_cap outside 0..{bounds.MAX_DAILY_CAP}", "ExpectColumnValuesToBeBetween", column="daily_cap",
                   min_value=0, max_value=bounds.MAX_DAILY_CAP),
            _check("quiet_start_hour outside 0..23", "ExpectColumnValuesToBeBetween", column="quiet_start_hour",
                   min_value=0, max_value=23),
            _check("quiet_end_hour outside 0..23", "ExpectColumnValuesToBeBetween", column="quiet_end_hour",
                   min_value=0, max_value=23),
        ]
    elif dataset == "products":
        domain = _required("product_id", "description") + [
            _check("negative unit_price", "ExpectColumnValuesToBeBetween", column="unit_price", min_value=0),
        ]
    elif dataset == "campaigns":
        domain = _required("campaign_id", "name", "text", "start_date", "end_date") + [
            _check(f"priority outside {bounds.MIN_PRIORITY}..{bounds.MAX_PRIORITY}", "ExpectColumnValuesToBeBetween",
                   column="priority", min_value=bounds.MIN_PRIORITY, max_value=bounds.MAX_PRIORITY),
            _check("unknown status", "ExpectColumnValuesToBeInSet", column="status", value_set=["active", "paused"]),
            _check("end_date before start_date", "ExpectColumnPairValuesAToBeGreaterThanB", column_A="end_date",
                   column_B="start_date", or_equal=True, ignore_row_if="either_value_is_missing"),
            _check("negative cooldown_hours", "ExpectColumnValuesToBeBetween", column="cooldown_hours", min_value=0),
            _check("unsafe template (see notify_core.delivery.templates)", "ExpectColumnValuesToBeInSet",
                   column=f"template{SAFE_SUFFIX}", value_set=[True]),
            _check("unsafe url (https only, no credentials or javascript:/data:)", "ExpectColumnValuesToBeInSet",
                   column=f"url{SAFE_SUFFIX}", value_set=[True]),
        ]
    elif dataset == "purchases":
        domain = _required("order_id", "product_id", "ts", "quantity", "unit_price") + [
            _check("unit_price must be > 0", "ExpectColumnValuesToBeBetween", column="unit_price", min_value=0,
                   strict_min=True),
            _check("quantity must not be 0", "ExpectColumnValuesToNotBeInSet", column="quantity", value_set=[0]),
        ]
    else:
        raise ValidationError(f"unknown dataset {dataset!r}")
    ids = [_check(f"{column} is not an id (1-{bounds.MAX_ID_LENGTH} of {bounds.ID_CHARACTERS})",
                  "ExpectColumnValuesToBeInSet", column=f"{column}{ID_SUFFIX}", value_set=[True])
           for column in ID_COLUMNS[dataset]]
    lengths = [_check(f"{column} longer than {name} ({limit})", "ExpectColumnValueLengthsToBeBetween",
                      column=column, max_value=limit)
               for column, (name, limit) in TEXT_LIMITS[dataset].items()]
    lists = [_check(reason, "ExpectColumnValuesToBeInSet", column=derived, value_set=[True])
             for column, rule in LIST_LIMITS[dataset].items() for derived, _, reason in rule.columns(column)]
    return domain + ids + parsed + _bound_checks(dataset, now) + lengths + lists


def _parse(column: pl.Expr, dtype: Any) -> pl.Expr:
    text = column.cast(pl.String).str.strip_chars()
    text = pl.when(text == "").then(None).otherwise(text)
    if dtype == pl.Boolean:
        lowered = text.str.to_lowercase()
        return pl.when(lowered.is_in(["true", "1", "yes"])).then(True).when(lowered.is_in(["false", "0", "no"])) \
            .then(False).otherwise(None)
    if dtype == pl.Date:
        return text.str.to_date(strict=False)
    if isinstance(dtype, pl.Datetime):
        # ISO 8601 with or without an offset; naive times are taken as UTC.
        text = text.str.replace(r"Z$", "+00:00")
        with_offset = text.str.to_datetime("%Y-%m-%dT%H:%M:%S%.f%z", strict=False, time_zone="UTC")
        naive = text.str.replace("T", " ").str.to_datetime("%Y-%m-%d %H:%M:%S%.f", strict=False) \
            .dt.replace_time_zone("UTC")
        return pl.coalesce(with_offset, naive).cast(dtype)
    if isinstance(dtype, pl.List):
        return pl.when(text.is_null()).then(pl.lit([], dtype=dtype)).otherwise(
            text.str.split(LIST_SEPARATOR).list.eval(pl.element().str.strip_chars()).list.filter(
                pl.element() != ""))
    return text.cast(dtype, strict=False)


def prepare(dataset: str, raw: pl.DataFrame) -> pl.DataFrame:
    """Cast a landing frame to the dataset's schema without failing; record what did not parse."""
    schema = SCHEMAS[dataset]
    missing = [c for c in KEYS[dataset] if c not in raw.columns]
    if missing:
        raise ValidationError(f"{dataset} file lacks key columns {missing}; columns present: {raw.columns}")
    exprs: list[pl.Expr] = [pl.int_range(1, pl.len() + 1, dtype=pl.Int64).alias(ROW_COLUMN)]
    for name, dtype in schema.items():
        if name not in raw.columns:
            default = pl.lit([], dtype=dtype) if isinstance(dtype, pl.List) else pl.lit(
                False if dtype == pl.Boolean else None, dtype=dtype)
            exprs.append(default.alias(name))
            exprs.append(pl.lit(True).alias(f"{name}{PARSED_SUFFIX}"))
            exprs.append(pl.lit(False).alias(f"{name}{PRESENT_SUFFIX}"))
            continue
        source = raw.schema[name]
        raw_present = pl.col(name).is_not_null()
        if source == pl.String:
            raw_present = raw_present & (pl.col(name).str.strip_chars() != "")
        if source.is_float() and name in ID_COLUMNS[dataset]:  # pandas' float id column: NaN is a missing id
            raw_present = raw_present & pl.col(name).is_not_nan()
            value = bounds.integer_id_text(pl.col(name))
            exprs += [raw_present.alias(f"{name}{PRESENT_SUFFIX}"), value.alias(name),
                      (~raw_present | value.is_not_null()).alias(f"{name}{PARSED_SUFFIX}")]
            continue
        exprs.append(raw_present.alias(f"{name}{PRESENT_SUFFIX}"))
        if source == dtype or (isinstance(dtype, pl.Datetime) and isinstance(source, pl.Datetime)):
            value = pl.col(name).cast(dtype)
            parsed = pl.lit(True)
            if dtype.is_float():  # inf / nan in a typed file: not a number Notify can use
                parsed = value.is_null() | value.is_finite()
                value = pl.when(value.is_finite()).then(value).otherwise(None)
            exprs += [value.alias(name), parsed.alias(f"{name}{PARSED_SUFFIX}")]
            continue
        value = _parse(pl.col(name), dtype)
        if dtype.is_float():  # "inf", "nan", "1e999" parse as floats but are not usable amounts
            value = pl.when(value.is_finite()).then(value).otherwise(None)
        exprs += [value.alias(name), (~raw_present | value.is_not_null()).alias(f"{name}{PARSED_SUFFIX}")]
    prepared = raw.select(exprs).with_columns(
        (pl.col(name).is_null() | (pl.col(name) == 0) | (pl.col(name).abs() >= bounds.MIN_NONZERO_MAGNITUDE))
        .alias(f"{name}{FLOOR_SUFFIX}") for name, dtype in schema.items() if dtype.is_float()).with_columns(
        (~pl.col(f"{name}{PRESENT_SUFFIX}") | ~pl.col(f"{name}{PARSED_SUFFIX}")  # unparseable: its own reason
         | pl.col(name).str.contains(bounds.ID_PATTERN)).fill_null(False)
        .alias(f"{name}{ID_SUFFIX}")
        for name in ID_COLUMNS[dataset])
    prepared = prepared.with_columns(
        holds.fill_null(True).alias(derived)
        for column, rule in LIST_LIMITS[dataset].items() for derived, holds, _ in rule.columns(column))
    if dataset == "purchases":
        prepared = prepared.with_columns(
            bounds.line_amount(pl.col("quantity"), pl.col("unit_price")).alias(LINE_AMOUNT))
    if dataset == "campaigns":  # the same content rules as the campaign upsert (template, redirect URL)
        prepared = prepared.with_columns(
            pl.col("template").map_elements(_template_ok, return_dtype=pl.Boolean).alias(f"template{SAFE_SUFFIX}"),
            pl.col("url").map_elements(_url_ok, return_dtype=pl.Boolean).alias(f"url{SAFE_SUFFIX}"))
    return prepared


def _template_ok(template: str) -> bool:
    from notify_core.delivery.templates import validate_template

    try:
        validate_template(template)
    except ValidationError:
        return False
    return True


def _url_ok(url: str) -> bool:
    from notify_core.delivery.campaign_checks import check_redirect_url

    try:
        check_redirect_url(url)
    except ValidationError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class Validated:
    good: pl.DataFrame  # schema columns only
    bad: pl.DataFrame  # _row, key columns, reason


def validate(dataset: str, prepared: pl.DataFrame, *, now: datetime | None = None) -> Validated:
    """Run the dataset's great-expectations suite; split rows into good and bad-with-reasons.

    ``now`` (the ingesting clock) bounds dates from above at ``now + MAX_FUTURE_SKEW``; without it the
    static ``MAX_DATE`` applies."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    checks = checks_for(dataset, now=now)
    columns = sorted({v for c in checks for k, v in c.kwargs if k in ("column", "column_A", "column_B")})
    frame = prepared.select(columns).to_pandas(use_pyarrow_extension_array=False)
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    batch = (
        context.data_sources.add_pandas(f"landing_{dataset}")
        .add_dataframe_asset(dataset)
        .add_batch_definition_whole_dataframe("whole")
        .get_batch(batch_parameters={"dataframe": frame})
    )
    suite = gx.ExpectationSuite(name=f"{dataset}_landing")
    for check in checks:
        suite.add_expectation(check.build())
    outcome = batch.validate(suite, result_format={"result_format": "COMPLETE"})

    failed: dict[int, list[str]] = {}
    for result in outcome.results:
        if result.success:
            continue
        config = result.expectation_config
        reason = str((config.meta or {}).get("reason", config.type)) if config is not None else "failed check"
        indices = result.result.get("unexpected_index_list") or []
        if not indices and result.exception_info and result.exception_info.get("raised_exception"):
            raise ValidationError(f"{dataset}: check {reason!r} could not run: {result.exception_info}")
        for index in indices:
            row = int(index["index"] if isinstance(index, dict) else index)
            failed.setdefault(row, []).append(reason)

    bad_rows = sorted(failed)
    # Boolean even with no rows: an empty list alone makes a Null series, which ``filter`` refuses, so a
    # header-only CSV or an empty Parquet drop (an empty day's export) used to fail the whole dataset.
    bad_mask = pl.Series("bad", [False] * prepared.height, dtype=pl.Boolean)
    if bad_rows:
        bad_mask = bad_mask.scatter(bad_rows, True)
    keys = list(KEYS[dataset])
    bad = prepared.filter(bad_mask).select(ROW_COLUMN, *keys).with_columns(
        pl.Series("reason", ["; ".join(failed[i]) for i in bad_rows], dtype=pl.String))
    good = prepared.filter(~bad_mask).select(list(SCHEMAS[dataset]))
    return Validated(good=good, bad=bad)

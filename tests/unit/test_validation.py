"""Bad rows are quarantined with a reason each; good rows of the same batch land."""

from __future__ import annotations

import polars as pl
import pytest

from notify_core.errors import ValidationError
from notify_core.ingest.validation import prepare, validate


def _purchases(**overrides: list) -> pl.DataFrame:
    base = {
        "order_id": ["o1", "o2", "o3"],
        "product_id": ["p1", "p2", "p3"],
        "user_id": ["u1", "u2", None],
        "quantity": ["1", "2", "3"],
        "unit_price": ["1.50", "2.00", "3.00"],
        "ts": ["2011-01-01 10:00:00", "2011-01-02T10:00:00Z", "2011-01-03T10:00:00+01:00"],
    }
    base.update(overrides)
    return pl.DataFrame(base)


def _reasons(frame: pl.DataFrame, dataset: str = "purchases") -> dict[int, str]:
    checked = validate(dataset, prepare(dataset, frame))
    return {r["_row"]: r["reason"] for r in checked.bad.iter_rows(named=True)}


def test_clean_batch_has_no_bad_rows_and_parses_every_time_format() -> None:
    checked = validate("purchases", prepare("purchases", _purchases()))
    assert checked.bad.is_empty()
    assert checked.good.height == 3
    assert [t.hour for t in checked.good["ts"]] == [10, 10, 9]  # +01:00 -> 09:00 UTC


@pytest.mark.parametrize(
    ("column", "value", "reason"),
    [
        ("order_id", None, "missing order_id"),
        ("product_id", "", "missing product_id"),
        ("unit_price", "-2.5", "unit_price must be > 0"),
        ("unit_price", "abc", "unparseable unit_price"),
        ("ts", "2011-13-45 10:00:00", "unparseable ts"),
        ("ts", "yesterday", "unparseable ts"),
        ("quantity", "0", "quantity must not be 0"),
    ],
)
def test_each_bad_value_gets_its_reason_and_the_other_rows_land(column: str, value: object, reason: str) -> None:
    values = _purchases()[column].to_list()
    values[1] = value
    frame = _purchases(**{column: values})
    assert _reasons(frame) == {2: reason}
    assert validate("purchases", prepare("purchases", frame)).good["order_id"].to_list() == (
        ["o1", "o3"] if column != "order_id" else ["o1", "o3"])


def test_a_row_with_several_problems_lists_them_all() -> None:
    frame = _purchases(order_id=["o1", None, "o3"], unit_price=["1", "-1", "3"])
    assert _reasons(frame) == {2: "missing order_id; unit_price must be > 0"}


def test_users_checks_domain_values() -> None:
    users = pl.DataFrame({
        "user_id": ["a", "b", "c", "d"],
        "timezone": ["Europe/London", "Mars/Olympus", "UTC", "UTC"],
        "daily_cap": ["3", "2", "9", "1"],
        "signup_date": ["2011-01-01", "2011-01-01", "2011-01-01", "01/02/2011"],
    })
    assert _reasons(users, "users") == {
        2: "unknown timezone", 3: "daily_cap outside 0..5", 4: "unparseable signup_date"}


@pytest.mark.parametrize("zone", ["Factory", "localtime", "posixrules"])
def test_a_zone_the_planner_cannot_use_is_quarantined_as_unknown(zone: str) -> None:
    """``zoneinfo.available_timezones()`` lists these, but polars refuses Factory and localtime: a row that
    landed with one once failed every plan chunk it was in. Ingestion reads the planner's own zone set."""
    users = pl.DataFrame({
        "user_id": ["u1", "u2"], "timezone": ["Europe/London", zone], "daily_cap": ["3", "3"],
        "signup_date": ["2011-01-01", "2011-01-01"],
    })
    assert _reasons(users, "users") == {2: "unknown timezone"}


def test_campaign_dates_must_be_ordered() -> None:
    campaigns = pl.DataFrame({
        "campaign_id": ["c1", "c2"], "name": ["n", "n"], "text": ["t", "t"], "priority": ["3", "3"],
        "status": ["active", "active"], "start_date": ["2024-01-01", "2024-05-01"],
        "end_date": ["2024-02-01", "2024-04-01"],
    })
    assert _reasons(campaigns, "campaigns") == {2: "end_date before start_date"}


def test_a_cooldown_longer_than_the_sends_are_kept_is_quarantined() -> None:
    """A cooldown is judged by the user's sends, kept ``bounds.MAX_COOLDOWN_HOURS`` (30 days); a year was
    accepted and quietly honoured for 7 days by the planner, 14 by the recommender."""
    from notify_core import bounds

    campaigns = pl.DataFrame({
        "campaign_id": ["c1", "c2"], "name": ["n", "n"], "text": ["t", "t"], "priority": ["3", "3"],
        "status": ["active", "active"], "start_date": ["2024-01-01"] * 2, "end_date": ["2024-02-01"] * 2,
        "cooldown_hours": [str(bounds.MAX_COOLDOWN_HOURS), str(bounds.MAX_COOLDOWN_HOURS + 1)],
    })
    assert _reasons(campaigns, "campaigns") == {
        2: f"cooldown_hours above MAX_COOLDOWN_HOURS ({bounds.MAX_COOLDOWN_HOURS})"}


def test_list_columns_hold_what_the_api_accepts_item_by_item() -> None:
    """The list columns had no rule at all: a channel no worker knows, a 10 KB product id or 5,000 categories
    landed from a file while the API refuses each (``notify_core.bounds``, the one owner of both)."""
    from notify_core import bounds

    users = pl.DataFrame({
        "user_id": ["u1", "u2", "u3", "u4"], "country": ["GB"] * 4, "timezone": ["UTC"] * 4,
        "signup_date": ["2011-01-01"] * 4,
        "channels": ["push|email", "push|carrier-pigeon", "push", "sms"],
        "opted_out_categories": ["toys", "", "c" * (bounds.MAX_CATEGORY_LENGTH + 1),
                                 "|".join(f"k{i}" for i in range(bounds.MAX_CATEGORIES + 1))],
    })
    channels = ", ".join(bounds.CHANNELS)
    assert _reasons(users, "users") == {
        2: f"channels: a value outside {channels}",
        3: f"opted_out_categories: an item longer than MAX_CATEGORY_LENGTH ({bounds.MAX_CATEGORY_LENGTH})",
        4: f"opted_out_categories: more than MAX_CATEGORIES ({bounds.MAX_CATEGORIES}) items"}
    campaigns = pl.DataFrame({
        "campaign_id": ["c1", "c2", "c3"], "name": ["n"] * 3, "text": ["t"] * 3, "priority": ["3"] * 3,
        "status": ["active"] * 3, "start_date": ["2024-01-01"] * 3, "end_date": ["2024-02-01"] * 3,
        "product_ids": ["p1|p2", "p" * (bounds.MAX_ID_LENGTH + 1), "p1"],
        "target_countries": ["GB", "FR", "x" * (bounds.MAX_COUNTRY_LENGTH + 1)],
    })
    assert _reasons(campaigns, "campaigns") == {
        2: f"product_ids: an item longer than MAX_ID_LENGTH ({bounds.MAX_ID_LENGTH})",
        3: f"target_countries: an item longer than MAX_COUNTRY_LENGTH ({bounds.MAX_COUNTRY_LENGTH})"}


def test_a_file_without_key_columns_is_rejected_whole() -> None:
    with pytest.raises(ValidationError, match="lacks key columns"):
        prepare("purchases", pl.DataFrame({"order_id": ["o1"]}))


def test_text_longer_than_its_bound_is_quarantined_naming_the_bound() -> None:
    """No column had a length bound: a 500 KB description passed validation, then DynamoDB (400 KB an item)
    refused it inside the Store write and the whole dataset's ingestion failed. Each free-text column is
    bounded by a :mod:`notify_core.bounds` constant, the campaign API's own for a campaign's name and text."""
    from notify_core import bounds

    products = pl.DataFrame({
        "product_id": ["p1", "p2", "p3"], "unit_price": ["1", "1", "1"],
        "description": ["mug", "x" * (bounds.MAX_TEXT_LENGTH + 1), "y" * bounds.MAX_TEXT_LENGTH],
        "category": ["kitchen", "kitchen", "c" * (bounds.MAX_CATEGORY_LENGTH + 1)],
    })
    assert _reasons(products, "products") == {
        2: f"description longer than MAX_TEXT_LENGTH ({bounds.MAX_TEXT_LENGTH})",
        3: f"category longer than MAX_CATEGORY_LENGTH ({bounds.MAX_CATEGORY_LENGTH})"}
    campaigns = pl.DataFrame({
        "campaign_id": ["c1", "c2", "c3"], "priority": ["3"] * 3, "status": ["active"] * 3,
        "name": ["n", "n" * (bounds.MAX_NAME_LENGTH + 1), "n"], "text": ["t", "t", "t" * (bounds.MAX_TEXT_LENGTH + 1)],
        "start_date": ["2024-01-01"] * 3, "end_date": ["2024-02-01"] * 3,
    })
    assert _reasons(campaigns, "campaigns") == {
        2: f"name longer than MAX_NAME_LENGTH ({bounds.MAX_NAME_LENGTH})",
        3: f"text longer than MAX_TEXT_LENGTH ({bounds.MAX_TEXT_LENGTH})"}
    assert _reasons(_purchases(country=["GB", "z" * (bounds.MAX_COUNTRY_LENGTH + 1), None])) == {
        2: f"country longer than MAX_COUNTRY_LENGTH ({bounds.MAX_COUNTRY_LENGTH})"}


def test_the_campaign_api_reads_the_same_text_bounds() -> None:
    from notify_core import bounds
    from notify_core.recommend.updates import CampaignIn

    fields = CampaignIn.model_fields
    assert [m.max_length for f in ("name", "text") for m in fields[f].metadata if hasattr(m, "max_length")] == [
        bounds.MAX_NAME_LENGTH, bounds.MAX_TEXT_LENGTH]


def test_every_text_column_has_a_length_rule() -> None:
    """A new text column without a bound would reopen the hole: each is an id (its own pattern), bounded in
    TEXT_LIMITS, or checked against a set or by the campaign content checks."""
    from notify_core.ingest.validation import ID_COLUMNS, TEXT_LIMITS
    from notify_core.schemas import SCHEMAS

    checked_otherwise = {("users", "timezone"), ("campaigns", "status"), ("campaigns", "url"),
                         ("campaigns", "template")}
    unbounded = [(dataset, column) for dataset, schema in SCHEMAS.items() for column, dtype in schema.items()
                 if dtype == pl.String and column not in ID_COLUMNS[dataset]
                 and column not in TEXT_LIMITS[dataset] and (dataset, column) not in checked_otherwise]
    assert unbounded == []


def test_domain_ranges_hold_at_their_edges() -> None:
    """Each range's last good value lands and the first bad one is quarantined: daily_cap 5 / 6, quiet hours
    23 / 24, a campaign ending the day it starts / a status outside active and paused, a unit price of 0."""
    users = pl.DataFrame({
        "user_id": ["a", "b", "c", "d"], "timezone": ["UTC"] * 4, "daily_cap": ["5", "6", "0", "1"],
        "signup_date": ["2011-01-01"] * 4,
        "quiet_start_hour": ["23", "1", "24", "0"], "quiet_end_hour": ["0", "2", "3", "24"],
    })
    assert _reasons(users, "users") == {
        2: "daily_cap outside 0..5", 3: "quiet_start_hour outside 0..23", 4: "quiet_end_hour outside 0..23"}
    campaigns = pl.DataFrame({
        "campaign_id": ["c1", "c2"], "name": ["n", "n"], "text": ["t", "t"], "priority": ["3", "3"],
        "status": ["paused", "draft"], "start_date": ["2024-01-01"] * 2, "end_date": ["2024-01-01"] * 2,
    })
    assert _reasons(campaigns, "campaigns") == {2: "unknown status"}
    assert _reasons(_purchases(unit_price=["0.01", "0", "3"])) == {2: "unit_price must be > 0"}

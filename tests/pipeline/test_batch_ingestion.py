"""Batch ingestion end to end on the SQLite store: idempotency, in-place updates, bad rows."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from notify_core.ingest.batch import ingest_dataset
from notify_core.lake import Lake
from notify_core.repositories import get_entity, purchases_of
from notify_core.sources.demo import prepare_demo_landing
from notify_core.store import tables
from notify_core.store.sqlite import SqliteStore
from tests.retail_fixture import HEART, write_retail


@pytest.fixture
def env(tmp_path: Path):
    source = write_retail(tmp_path / "source" / "retail.parquet")
    landing = tmp_path / "landing"
    prepare_demo_landing(source=source, landing=landing, seed=1)
    store = SqliteStore(tmp_path / "store.sqlite")
    yield {"landing": landing, "lake": Lake(tmp_path / "lake"), "store": store, "quarantine": tmp_path / "q"}
    store.close()


def _ingest(env, dataset: str):
    return ingest_dataset(dataset, landing=env["landing"], lake=env["lake"], store=env["store"],
                          quarantine=env["quarantine"])


def test_second_run_writes_nothing(env) -> None:
    first = {d: _ingest(env, d) for d in ("users", "products", "campaigns", "purchases")}
    assert first["purchases"].lake_inserted == 7  # 10 source rows - postage - write-off - 1 merged line
    assert first["purchases"].store.inserted == 6  # the guest order stays in the lake only
    assert first["users"].store.inserted == 2
    second = {d: _ingest(env, d) for d in ("users", "products", "campaigns", "purchases")}
    for report in second.values():
        assert report.rows_changed == 0
        assert report.store.written == 0
        assert report.lake_unchanged == report.rows_valid


def test_changed_row_updates_in_place(env) -> None:
    _ingest(env, "purchases")
    path = env["landing"] / "purchases" / "online_retail.parquet"
    frame = pl.read_parquet(path)
    frame = frame.with_columns(
        pl.when(pl.col("order_id") == "1002").then(pl.lit(13, pl.Int64)).otherwise(pl.col("quantity"))
        .alias("quantity"))
    frame.write_parquet(path)
    report = _ingest(env, "purchases")
    assert (report.lake_inserted, report.lake_updated, report.store.updated, report.store.inserted) == (0, 1, 1, 0)
    lines = [i for i in purchases_of(env["store"], "100") if i["order_id"] == "1002"]
    assert [i["quantity"] for i in lines] == [13]


def test_moved_purchase_has_its_old_store_key_removed(env) -> None:
    _ingest(env, "purchases")
    path = env["landing"] / "purchases" / "online_retail.parquet"
    frame = pl.read_parquet(path)
    moved = frame.with_columns(
        pl.when(pl.col("order_id") == "1002").then(pl.col("ts").dt.offset_by("1h")).otherwise(pl.col("ts")).alias("ts"))
    moved.write_parquet(path)
    report = _ingest(env, "purchases")
    assert report.store.deleted == 1
    lines = [i for i in purchases_of(env["store"], "100") if i["order_id"] == "1002"]
    assert len(lines) == 1 and lines[0]["ts"].startswith("2011-02-10T15:30")


def test_bad_rows_are_reported_and_quarantined_while_good_rows_land(env) -> None:
    bad_csv = env["landing"] / "purchases" / "late_batch.csv"
    bad_csv.write_text(
        "order_id,user_id,product_id,quantity,unit_price,ts,country\n"
        "2001,100,85123A,1,2.55,2011-04-01 10:00:00,United Kingdom\n"
        ",100,85123A,1,2.55,2011-04-01 10:00:00,United Kingdom\n"
        "2003,100,85123A,1,-4.00,2011-04-01 10:00:00,United Kingdom\n"
        "2004,100,85123A,1,2.55,31/04/2011 10h,United Kingdom\n"
        "2005,200,,2,1.00,2011-04-02 10:00:00,France\n"
    )
    report = _ingest(env, "purchases")
    reasons = {(b.file, b.row): b.reason for b in report.bad_rows}
    assert reasons == {
        ("late_batch.csv", 2): "missing order_id",
        ("late_batch.csv", 3): "unit_price must be > 0",
        ("late_batch.csv", 4): "unparseable ts",
        ("late_batch.csv", 5): "missing product_id",
    }
    assert report.lake_inserted == 7 + 1  # the fixture's rows plus the one good CSV row
    assert any(i["order_id"] == "2001" for i in purchases_of(env["store"], "100"))
    quarantined = pl.concat([pl.read_parquet(p) for p in (env["quarantine"] / "purchases").glob("*.parquet")])
    assert sorted(quarantined["_row"].to_list()) == [2, 3, 4, 5]
    assert "unit_price must be > 0" in quarantined["reason"].to_list()


def test_unreadable_file_is_reported_and_other_files_still_land(env) -> None:
    (env["landing"] / "products" / "broken.parquet").write_bytes(b"not parquet at all")
    report = _ingest(env, "products")
    assert "broken.parquet" in report.file_errors
    assert report.lake_inserted == 3
    assert get_entity(env["store"], tables.PRODUCTS, HEART)["category"] == "candles & lighting"


def test_a_bad_row_in_a_parquet_drop_with_list_columns_is_quarantined_as_text(env) -> None:
    """A Parquet drop carries ``channels`` and ``opted_out_categories`` as lists: a bad row in it failed the
    whole ``users`` ingestion (its list columns could not be cast to text for the quarantine), on every retry."""
    from notify_core.schemas import USERS

    rows = [{"user_id": user, "country": "France", "timezone": "Europe/Paris", "signup_date": None,
             "daily_cap": cap, "quiet_start_hour": 22, "quiet_end_hour": 7, "channels": ["push", "email"],
             "opted_out_categories": opted} for user, cap, opted in (("u-good", 3, []), ("u-bad", 9, ["toys"]))]
    pl.DataFrame(rows, schema=USERS).write_parquet(env["landing"] / "users" / "drop.parquet")
    report = _ingest(env, "users")
    assert [(b.file, b.row, b.reason) for b in report.bad_rows] == [("drop.parquet", 2, "daily_cap outside 0..5")]
    assert get_entity(env["store"], tables.USERS, "u-good") is not None
    [quarantined] = [pl.read_parquet(p) for p in (env["quarantine"] / "users").glob("drop.*.parquet")]
    assert quarantined.select("user_id", "daily_cap", "channels", "opted_out_categories", "reason").rows() == [
        ("u-bad", "9", "push|email", "toys", "daily_cap outside 0..5")]


def test_nested_landing_values_are_quarantined_as_json() -> None:
    from notify_core.ingest.batch import _as_text

    frame = pl.DataFrame({"deep": [[["a"], ["b", "c"]], None], "obj": [{"k": 1}, {"k": None}]})
    text = frame.select(*(_as_text(c, frame.schema[c]) for c in frame.columns))
    assert text.rows() == [('[["a"], ["b", "c"]]', '{"k": 1}'), (None, '{"k": null}')]


def test_ids_outside_the_id_rule_are_quarantined_like_capture_refuses_them(env) -> None:
    """``#`` is the Store's key separator: a user ``a#b`` had schedule items whose keys start like user
    ``a``'s (``a#<notification>``), and the erasure of ``a`` took them. Capture refused such ids; batch
    ingestion let them in. Now a row with an id outside ``bounds.ID_PATTERN`` is quarantined with its reason."""
    (env["landing"] / "users" / "odd.csv").write_text(
        "user_id,country,timezone,signup_date,daily_cap\n"
        "u-ok,GB,Europe/London,2010-05-01,3\n"
        "a#b,GB,Europe/London,2010-05-01,3\n"
        "has space,GB,Europe/London,2010-05-01,3\n"
        f"{'x' * 129},GB,Europe/London,2010-05-01,3\n")
    (env["landing"] / "purchases" / "odd.csv").write_text(
        "order_id,user_id,product_id,quantity,unit_price,ts,country\n"
        "o#1,u-ok,85123A,1,2.55,2011-04-01 10:00:00,United Kingdom\n"
        "o2,u#2,85123A,1,2.55,2011-04-01 10:00:00,United Kingdom\n"
        "o3,,85123A,1,2.55,2011-04-01 10:00:00,United Kingdom\n")  # a guest order: no user id to check
    users = _ingest(env, "users")
    assert sorted((b.row, b.reason.split(" (")[0]) for b in users.bad_rows if b.file == "odd.csv") == [
        (2, "user_id is not an id"), (3, "user_id is not an id"), (4, "user_id is not an id")]
    assert get_entity(env["store"], tables.USERS, "u-ok") is not None
    purchases = _ingest(env, "purchases")
    assert sorted((b.row, b.reason.split(" (")[0]) for b in purchases.bad_rows if b.file == "odd.csv") == [
        (1, "order_id is not an id"), (2, "user_id is not an id")]


def test_a_time_zone_polars_refuses_is_quarantined_at_ingestion(tmp_path: Path) -> None:
    """'Factory' is in ``zoneinfo.available_timezones()``; ingestion once checked that set (its own copy), so
    the row landed and the planner's polars ``convert_time_zone`` then failed every plan including it."""
    landing = tmp_path / "landing"
    (landing / "users").mkdir(parents=True)
    (landing / "users" / "u.csv").write_text(
        "user_id,country,timezone,signup_date,daily_cap\n"
        "u-ok,GB,Europe/London,2010-05-01,3\n"
        "u-factory,GB,Factory,2010-05-01,3\n")
    store = SqliteStore(tmp_path / "store.sqlite")
    report = ingest_dataset("users", landing=landing, lake=Lake(tmp_path / "lake"), store=store,
                            quarantine=tmp_path / "q")
    store.close()
    assert [(b.row, b.reason) for b in report.bad_rows] == [(2, "unknown timezone")], report.bad_rows


# Landing files of odd shape, each beside a good file that must still land ---------------------------------
PURCHASES_HEADER = "order_id,user_id,product_id,quantity,unit_price,ts,country\n"
GOOD_LINE = "1001,u1,P1,3,2.0,2011-04-01 10:00:00,UK\n"


@pytest.fixture
def bare(tmp_path: Path):
    """An empty landing (no demo files): only what a test writes lands."""
    landing = tmp_path / "landing"
    for dataset in ("users", "products", "campaigns", "purchases"):
        (landing / dataset).mkdir(parents=True)
    store = SqliteStore(tmp_path / "store.sqlite")
    yield {"landing": landing, "lake": Lake(tmp_path / "lake"), "store": store, "quarantine": tmp_path / "q"}
    store.close()


@pytest.mark.parametrize("kind", ["csv header only", "parquet with no rows"])
def test_a_landing_file_with_no_rows_does_not_stop_the_dataset(bare, kind: str) -> None:
    """A header-only CSV (an empty day's export) or an empty Parquet drop is not bad input: it used to
    fail the whole ``purchases`` ingestion with a TypeError (a Null-typed filter mask), the good file
    beside it included, on every retry."""
    from notify_core.schemas import PURCHASES

    folder = bare["landing"] / "purchases"
    (folder / "a_good.csv").write_text(PURCHASES_HEADER + GOOD_LINE)
    if kind == "csv header only":
        (folder / "b_empty.csv").write_text(PURCHASES_HEADER)
    else:
        pl.DataFrame(schema=PURCHASES).write_parquet(folder / "b_empty.parquet")
    report = _ingest(bare, "purchases")
    assert (report.lake_inserted, report.rows_read, report.bad_rows, report.file_errors) == (1, 1, [], {})


def test_a_line_amount_capture_refuses_is_quarantined_by_batch_ingestion(bare) -> None:
    """``bounds.MAX_LINE_AMOUNT``: capture answers 400 for 10^6 units at 10^6 each (each factor within its
    own bound); batch ingestion landed the same line, 10^12 of revenue in one row."""
    (bare["landing"] / "purchases" / "a.csv").write_text(
        PURCHASES_HEADER + GOOD_LINE + "1002,u1,P1,1000000,1000000,2011-04-01 10:00:00,UK\n"
        "1003,u1,P1,-1000,100000.5,2011-04-01 10:00:00,UK\n")  # a return counts by its magnitude
    report = _ingest(bare, "purchases")
    assert [(b.row, b.reason) for b in report.bad_rows] == [
        (2, "line_amount above MAX_LINE_AMOUNT (1e+08)"), (3, "line_amount above MAX_LINE_AMOUNT (1e+08)")]
    assert bare["lake"].read("purchases")["order_id"].to_list() == ["1001"]


def test_a_repeated_header_column_rejects_the_file_by_name(bare) -> None:
    """``quantity`` twice in a header: polars renamed the second ``quantity_duplicated_0`` and ingestion used
    the first without a word (which value is meant is unknowable). The file is refused as a whole, naming
    the column, like a ragged CSV; the good file beside it lands."""
    folder = bare["landing"] / "purchases"
    (folder / "a_good.csv").write_text(PURCHASES_HEADER + GOOD_LINE)
    (folder / "b_twice.csv").write_text(
        "order_id,user_id,product_id,quantity,unit_price,ts,country,quantity\n"
        "1002,u1,P1,3,2.0,2011-04-01 10:00:00,UK,5\n")
    report = _ingest(bare, "purchases")
    assert report.file_errors == {"b_twice.csv": "cannot read b_twice.csv: header repeats column(s) ['quantity']"}
    assert bare["lake"].read("purchases")["order_id"].to_list() == ["1001"]


def test_a_float_typed_id_column_lands_integer_ids_and_quarantines_fractions(bare) -> None:
    """pandas writes an id column holding a missing value as Float64 (the Online Retail CustomerID is one):
    ``12345.0`` landed as user ``"12345.0"``, a user that does not exist, not the ``"12345"`` every other path
    names. Whole numbers now land as integer text, a missing value (null or NaN) is a guest order, and a
    fraction is quarantined as unparseable instead of being truncated into another user."""
    pl.DataFrame({
        "order_id": ["1001", "1002", "1003", "1004"], "user_id": [12345.0, None, float("nan"), 17850.7],
        "product_id": ["P1"] * 4, "quantity": [1, 2, 3, 4], "unit_price": [2.0] * 4,
        "ts": ["2011-04-01 10:00:00"] * 4, "country": ["UK"] * 4,
    }).write_parquet(bare["landing"] / "purchases" / "export.parquet")
    report = _ingest(bare, "purchases")
    assert [(b.row, b.reason) for b in report.bad_rows] == [(4, "unparseable user_id")]
    landed = bare["lake"].read("purchases").sort("order_id")
    assert landed.select("order_id", "user_id").rows() == [("1001", "12345"), ("1002", None), ("1003", None)]
    assert [i["order_id"] for i in purchases_of(bare["store"], "12345")] == ["1001"]


def test_a_description_too_long_for_every_backend_is_quarantined_and_the_rest_lands(bare) -> None:
    """A 500 KB description: SQLite holds it, DynamoDB (400 KB an item) refused it inside the Store write,
    failing the whole dataset there. It is quarantined on every backend now, naming the bound."""
    from notify_core import bounds

    (bare["landing"] / "products" / "p.csv").write_text(
        "product_id,description,category,unit_price\n"
        "P-OK,A good mug,kitchen & dining,2.5\n"
        f"P-LONG,{'x' * 500_000},kitchen & dining,2.5\n")
    report = _ingest(bare, "products")
    assert [(b.row, b.reason) for b in report.bad_rows] == [
        (2, f"description longer than MAX_TEXT_LENGTH ({bounds.MAX_TEXT_LENGTH})")]
    assert report.lake_inserted == 1 and get_entity(bare["store"], tables.PRODUCTS, "P-OK") is not None


@pytest.mark.dynamodb
def test_a_description_dynamodb_cannot_hold_is_quarantined_not_fatal(tmp_path: Path, dynamodb_endpoint: str) -> None:
    """The same 500 KB description on the DynamoDB Store, where it made ``ingest_dataset`` raise (item over
    400 KB) and the good product of the same run never landed either."""
    from tests.servers import scratch_dynamo_store

    landing = tmp_path / "landing"
    (landing / "products").mkdir(parents=True)
    (landing / "products" / "p.csv").write_text(
        "product_id,description,category,unit_price\n"
        "P-OK,A good mug,kitchen & dining,2.5\n"
        f"P-LONG,{'x' * 500_000},kitchen & dining,2.5\n")
    with scratch_dynamo_store(dynamodb_endpoint, name="longtext") as store:
        report = ingest_dataset("products", landing=landing, lake=Lake(tmp_path / "lake"), store=store,
                                quarantine=tmp_path / "q")
        assert get_entity(store, tables.PRODUCTS, "P-OK") is not None
    assert report.lake_inserted == 1 and [b.row for b in report.bad_rows] == [2]


def _accounted(report) -> int:
    """Every row read is landed (inserted, updated or unchanged), bad, erased, merged or superseded."""
    return (report.lake_inserted + report.lake_updated + report.lake_unchanged + len(report.bad_rows)
            + report.rows_erased + report.rows_merged + report.rows_superseded)


def test_repeated_lines_of_one_order_in_a_file_are_summed_as_the_event_path_does(bare) -> None:
    """The same order and product twice in one file (one key): both were counted valid, only the last
    landed and the first vanished. The lines are merged as an order event's are (quantities summed, the
    first line's price), and counted."""
    (bare["landing"] / "purchases" / "a.csv").write_text(
        PURCHASES_HEADER + "1001,u1,P1,3,2.0,2011-04-01 10:00:00,UK\n" + "1001,u1,P1,2,2.5,2011-04-01 10:00:00,UK\n"
        "1001,u1,P2,1,4.0,2011-04-01 10:00:00,UK\n")
    report = _ingest(bare, "purchases")
    landed = bare["lake"].read("purchases").sort("product_id")
    assert landed.select("product_id", "quantity", "unit_price").rows() == [("P1", 5, 2.0), ("P2", 1, 4.0)]
    assert (report.rows_read, report.rows_valid, report.rows_merged, report.lake_inserted) == (3, 3, 1, 2)
    assert _accounted(report) == report.rows_read
    assert sorted(i["quantity"] for i in purchases_of(bare["store"], "u1")) == [1, 5]


def test_repeated_lines_that_sum_past_a_bound_are_quarantined_every_line(bare) -> None:
    """Two lines of 10^6 units are each within MAX_QUANTITY; merged they are not (capture refuses the same
    order: bounds.merged_lines_reason). Both lines are quarantined with that reason; the rest lands."""
    (bare["landing"] / "purchases" / "a.csv").write_text(
        PURCHASES_HEADER + GOOD_LINE + "1002,u1,P1,1000000,1.0,2011-04-01 10:00:00,UK\n"
        "1002,u1,P1,1000000,1.0,2011-04-01 10:00:00,UK\n")
    report = _ingest(bare, "purchases")
    assert [(b.row, b.reason) for b in report.bad_rows] == [
        (2, "product 'P1', its lines merged: quantity 2000000 is outside [-1000000, 1000000]"),
        (3, "product 'P1', its lines merged: quantity 2000000 is outside [-1000000, 1000000]")]
    assert bare["lake"].read("purchases")["order_id"].to_list() == ["1001"]
    assert (report.rows_valid, report.rows_merged) == (1, 0) and _accounted(report) == report.rows_read
    [quarantined] = [pl.read_parquet(p) for p in (bare["quarantine"] / "purchases").glob("a.*.parquet")]
    assert quarantined["_row"].to_list() == [2, 3]


def test_a_key_repeated_in_a_later_file_supersedes_the_earlier_row_and_is_counted(bare) -> None:
    """Across files (and in the dimension tables) the later row of a key wins, as a later run's would;
    the superseded row is counted instead of vanishing."""
    folder = bare["landing"] / "users"
    (folder / "a.csv").write_text("user_id,country,timezone,daily_cap\nu1,GB,Europe/London,3\nu1,FR,Europe/Paris,2\n")
    (folder / "b.csv").write_text("user_id,country,timezone,daily_cap\nu1,DE,Europe/Berlin,1\nu2,GB,UTC,1\n")
    report = _ingest(bare, "users")
    assert (report.rows_read, report.rows_valid, report.rows_superseded, report.lake_inserted) == (4, 4, 2, 2)
    assert _accounted(report) == report.rows_read
    assert get_entity(bare["store"], tables.USERS, "u1")["country"] == "DE"


@pytest.mark.parametrize("kind", ["ragged", "not utf-8"])
def test_a_ragged_or_non_utf8_csv_is_reported_whole_and_the_good_file_lands(bare, kind: str) -> None:
    """The README: "An unreadable file (ragged, not UTF-8, a header naming one column twice) is reported whole
    and does not stop the other files" (the repeated header and a broken Parquet file had tests)."""
    folder = bare["landing"] / "purchases"
    (folder / "a_good.csv").write_text(PURCHASES_HEADER + GOOD_LINE)
    if kind == "ragged":
        (folder / "b_bad.csv").write_text(PURCHASES_HEADER + "1002,u1,P1,3,2.0,2011-04-01 10:00:00,UK,extra,more\n")
    else:
        (folder / "b_bad.csv").write_bytes((PURCHASES_HEADER + "1002,u1,P1,3,2.0,2011-04-01 10:00:00,").encode()
                                           + "Zürich\n".encode("latin-1"))
    report = _ingest(bare, "purchases")
    assert list(report.file_errors) == ["b_bad.csv"] and report.file_errors["b_bad.csv"], report.file_errors
    assert report.bad_rows == [] and bare["lake"].read("purchases")["order_id"].to_list() == ["1001"]

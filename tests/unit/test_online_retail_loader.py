"""The one loader (ingestion and evaluation): both UCI releases, Parquet timestamps, column mapping, errors."""

from __future__ import annotations

from datetime import UTC, date, datetime

import polars as pl
import pytest

from notify_core.errors import ValidationError
from notify_core.evaluation.split import load_tables, make_split
from notify_core.sources.demo import prepare_demo_landing
from notify_core.sources.online_retail import map_online_retail, read_source
from tests.retail_fixture import retail_frame

RELEASE_II = {"InvoiceNo": "Invoice", "UnitPrice": "Price", "CustomerID": "Customer ID"}


def _timestamps(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.with_columns(pl.col("InvoiceDate").str.to_datetime("%Y-%m-%d %H:%M:%S", time_unit="ns"))


def test_online_retail_ii_columns_map_like_release_i(tmp_path) -> None:
    path = tmp_path / "online_retail_ii.csv"
    retail_frame().rename(RELEASE_II).write_csv(path)
    assert map_online_retail(read_source(path)).purchases.equals(map_online_retail(retail_frame()).purchases)


def test_parquet_timestamp_column_keeps_every_row(tmp_path) -> None:
    path = tmp_path / "export.parquet"
    _timestamps(retail_frame()).write_parquet(path)  # nanosecond timestamps, as pandas writes them
    tables = map_online_retail(read_source(path))
    assert tables.dropped["unparseable row"] == 0
    assert tables.purchases.equals(map_online_retail(retail_frame()).purchases)


def test_zoned_parquet_timestamps_are_converted_to_shop_time(tmp_path) -> None:
    frame = _timestamps(retail_frame()).with_columns(
        pl.col("InvoiceDate").dt.replace_time_zone("Europe/London").dt.convert_time_zone("UTC"))
    path = tmp_path / "zoned.parquet"
    frame.write_parquet(path)
    assert map_online_retail(read_source(path)).purchases.equals(map_online_retail(retail_frame()).purchases)


def test_excel_export_dates_parse() -> None:
    frame = retail_frame().with_columns(pl.lit("7/1/2011 9:00").alias("InvoiceDate"))  # BST = UTC+1
    assert map_online_retail(frame).purchases["ts"][0] == datetime(2011, 7, 1, 8, 0, tzinfo=UTC)


def test_evaluation_split_reads_a_parquet_timestamp_export(tmp_path) -> None:
    path = tmp_path / "export.parquet"
    _timestamps(retail_frame()).write_parquet(path)
    raw, full = load_tables(path)
    split = make_split(raw, full, cutoff=date(2011, 3, 5), horizon_days=30)  # no "no purchases before"
    assert split.users == ["200"]  # bought on 1 March and again on 10 March
    assert split.train.purchases["ts"].max() < datetime(2011, 3, 5, tzinfo=UTC)


def test_column_mapping_for_another_retailers_export(tmp_path) -> None:
    theirs = {"InvoiceNo": "order_ref", "StockCode": "sku", "Description": "title", "Quantity": "qty",
              "InvoiceDate": "ordered_at", "UnitPrice": "price_gbp", "CustomerID": "client", "Country": "market"}
    path = tmp_path / "shop.csv"
    retail_frame().rename(theirs).write_csv(path)
    mapped = map_online_retail(read_source(path, columns=theirs))
    assert mapped.purchases.equals(map_online_retail(retail_frame()).purchases)
    landing = prepare_demo_landing(source=path, landing=tmp_path / "landing", seed=1, columns=theirs)
    assert landing.rows["purchases"] == mapped.purchases.height  # ingestion: the same loader, same rows


def test_missing_columns_error_names_them(tmp_path) -> None:
    path = tmp_path / "bad.csv"
    retail_frame().drop("UnitPrice", "Country").write_csv(path)
    with pytest.raises(ValidationError, match=r"lacks the Online Retail columns \['UnitPrice', 'Country'\]"):
        read_source(path)
    with pytest.raises(ValidationError, match=r"Quantity \(mapped to 'qty'\)"):
        read_source(path, columns={"Quantity": "qty"})
    with pytest.raises(ValidationError, match="unknown columns"):
        read_source(path, columns={"Amount": "qty"})

"""Landing and quarantine under the S3 prefix in aws, against a real SeaweedFS server (issue 15): a file
written on one machine (a consumer pod) reaches ingestion on another; bad rows are quarantined under the
prefix; an interrupted download leaves nothing half-written behind."""

from __future__ import annotations

import uuid
from pathlib import Path

import boto3
import polars as pl
import pytest

from notify_core.ingest.batch import IngestReport, ingest_dataset
from notify_core.lake import lake_for
from notify_core.landing import LandingArea, S3LandingArea, build_landing_area, s3_client
from notify_core.s3_objects import S3Bucket
from notify_core.settings import NotifySettings
from notify_core.store.sqlite import SqliteStore


@pytest.fixture
def aws_settings(s3_server, tmp_path, monkeypatch):
    bucket = f"landing-{uuid.uuid4().hex[:8]}"
    s3_server.create_bucket(bucket)
    for name, value in {"AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local",
                        "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)

    def make(machine: str) -> NotifySettings:
        return NotifySettings(env="aws", data_dir=tmp_path / machine, s3_bucket=bucket, aws_region="us-east-1",
                              s3_endpoint_url=s3_server.endpoint, delivery_channel="outbox",
                              master_key_file=tmp_path / "master.keys.json")
    return make


def _purchases(rows: list[tuple[str, str, str, int, float, str]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=["order_id", "user_id", "product_id", "quantity", "unit_price", "ts"],
                        orient="row").with_columns(pl.lit("United Kingdom").alias("country"),
                                                   pl.lit(False).alias("is_return"))


def _ingest_purchases(settings: NotifySettings, area: LandingArea) -> IngestReport:
    """One purchases ingestion on ``settings``' machine, from what ``area`` pulled there."""
    store = SqliteStore(settings.data_dir / "store.sqlite")
    try:
        return ingest_dataset("purchases", landing=area.landing, lake=lake_for(settings), store=store,
                              quarantine=area.quarantine)
    finally:
        store.close()


def test_a_file_pushed_on_one_machine_is_ingested_on_another_and_bad_rows_quarantined_in_s3(aws_settings) -> None:
    pod, batch = aws_settings("consumer-pod"), aws_settings("dagster-run")
    writer = build_landing_area(pod)
    assert isinstance(writer, S3LandingArea)
    before = build_landing_area(batch).fingerprint()
    landing = writer.landing / "purchases"
    landing.mkdir(parents=True)
    _purchases([("o1", "u1", "p1", 2, 3.5, "2011-01-10T09:00:00+00:00"),
                ("o2", "u2", "p1", 1, -1.0, "2011-01-10T09:00:00+00:00")]).write_parquet(landing / "orders-1.parquet")
    assert writer.push() == ["purchases/orders-1.parquet"]
    assert writer.push() == []  # unchanged: not uploaded again

    reader = build_landing_area(batch)
    assert reader.fingerprint() != before  # the landing sensor sees the new object
    assert reader.pull() == ["purchases/orders-1.parquet"]
    assert reader.pull() == []  # same ETag: not fetched again
    report = _ingest_purchases(batch, reader)
    assert report.rows_valid == 1 and len(report.bad_rows) == 1
    pushed = reader.push(quarantine=True)  # the bad row (price -1) with its reason, under the prefix
    assert len(pushed) == 1 and pushed[0].startswith("purchases/orders-1.")
    keys = [o["Key"] for o in s3_client(batch).list_objects_v2(Bucket=batch.s3_bucket)["Contents"]]
    assert "notify/landing/purchases/orders-1.parquet" in keys
    assert any(k.startswith("notify/quarantine/purchases/") for k in keys)
    assert any(k.startswith("notify/lake/purchases/") for k in keys)


def test_an_interrupted_download_leaves_no_partial_file_and_the_next_pull_fetches_it(aws_settings) -> None:
    settings = aws_settings("run")
    real = s3_client(settings)
    real.put_object(Bucket=settings.s3_bucket, Key="notify/landing/users/u.csv", Body=b"user_id\nu1\n")

    class Dying:
        """A client whose download dies mid-way (half the file written), like a process killed there."""

        def __getattr__(self, name: str):
            return getattr(real, name)

        def download_file(self, bucket: str, key: str, filename: str) -> None:
            Path(filename).write_bytes(b"user_")
            raise ConnectionResetError("killed mid-download")

    bucket = S3Bucket(bucket=settings.s3_bucket, prefix=settings.s3_prefix.rstrip("/") + "/", client=Dying())
    broken = S3LandingArea(bucket=bucket, landing=settings.landing, quarantine=settings.quarantine_root)
    with pytest.raises(Exception, match="killed mid-download"):
        broken.pull()
    assert not list(settings.landing.rglob("*.csv")) and not list(settings.landing.rglob("*.tmp"))
    assert build_landing_area(settings).pull() == ["users/u.csv"]
    assert (settings.landing / "users" / "u.csv").read_bytes() == b"user_id\nu1\n"


def test_local_landing_area_is_the_folder_itself(tmp_path) -> None:
    area = build_landing_area(NotifySettings(data_dir=tmp_path))
    assert area.landing == tmp_path / "landing" and area.pull() == [] and area.push() == []
    first = area.fingerprint()
    (tmp_path / "landing" / "users").mkdir(parents=True)
    (tmp_path / "landing" / "users" / "a.csv").write_text("user_id\nu1\n")
    assert area.fingerprint() != first


def test_boto3_only_in_adapters() -> None:
    """The domain reaches S3 only through adapters beside their ports (artefacts, landing, lake via polars)."""
    root = Path(__file__).resolve().parents[2] / "notify_core"
    users = sorted(str(p.relative_to(root)) for p in root.rglob("*.py") if "import boto3" in p.read_text())
    # CloudWatch (a pod's SLO counters), SNS, S3 (landing, artefacts, backups), KMS, Store
    assert users == ["cloudwatch_metrics.py", "delivery/sns.py", "s3_objects.py", "security/crypto.py",
                     "store/dynamodb.py"]
    assert boto3  # the test module itself talks to the server directly


def test_lake_exists_on_a_fresh_bucket_only_once_written(aws_settings) -> None:
    """The bug on main: Lake.exists() said True for any unpartitioned S3 dataset (NoSuchKey later)."""
    lake = lake_for(aws_settings("lake"))
    assert not lake.exists("campaigns") and not lake.exists("purchases")
    assert lake.scan("campaigns").collect().is_empty()  # empty, with its schema, instead of NoSuchKey
    lake.merge("purchases", _purchases([("o1", "u1", "p1", 2, 3.5, "2011-01-10T09:00:00+00:00")]).with_columns(
        pl.col("ts").str.to_datetime(time_zone="UTC")))
    assert lake.exists("purchases") and lake.partitions("purchases") == ["month=2011-01"]
    assert not lake.exists("campaigns")
    assert lake.write_table("features", pl.DataFrame({"a": [1]})) is True
    assert lake.write_table("features", pl.DataFrame({"a": [1]})) is False  # unchanged content: not rewritten


def test_every_endpoint_setting_reaches_its_client(tmp_path) -> None:
    from notify_core.delivery.channels import build_channel
    from notify_core.recommend.artefacts import build_artefact_store

    settings = NotifySettings(env="aws", data_dir=tmp_path, s3_bucket="b", aws_region="us-east-1",
                              s3_endpoint_url="http://127.0.0.1:1", sns_endpoint_url="http://127.0.0.1:2",
                              sns_topic_arn="arn:aws:sns:us-east-1:000000000000:t",
                              dynamodb_endpoint_url="http://127.0.0.1:3", public_base_url="https://n.example.com")
    assert build_artefact_store(settings).bucket.client.meta.endpoint_url == "http://127.0.0.1:1"  # type: ignore[attr-defined]
    assert build_channel(settings, clock=settings.clock())._client.meta.endpoint_url == "http://127.0.0.1:2"  # type: ignore[attr-defined]
    assert s3_client(settings).meta.endpoint_url == "http://127.0.0.1:1"
    assert lake_for(settings).storage_options == {"aws_endpoint_url": "http://127.0.0.1:1", "aws_region": "us-east-1",
                                                  "aws_allow_http": "true", "aws_virtual_hosted_style_request": "false"}
    assert NotifySettings(env="local").s3_storage_options is None


def test_notify_consume_in_aws_puts_order_files_under_the_prefix_for_ingestion(
        aws_settings, kafka_bootstrap, dynamodb_endpoint, monkeypatch) -> None:
    """The consumer pod's order files reach batch ingestion on another machine through S3."""
    import json as _json

    from typer.testing import CliRunner

    from notify_cli.main import app
    from notify_core.events import capture_events
    from notify_core.stream.kafka import KafkaStream
    from tests.events.helpers import events_clock, order

    pod, batch = aws_settings("consumer-pod"), aws_settings("dagster-run")
    stream = KafkaStream(bootstrap_servers=kafka_bootstrap)
    try:
        capture_events(_json.dumps([order(i) for i in range(20)]), stream=stream, clock=events_clock())
    finally:
        stream.close()
    for name, value in {"NOTIFY_ENV": "aws", "NOTIFY_S3_BUCKET": pod.s3_bucket, "NOTIFY_AWS_REGION": "us-east-1",
                        "NOTIFY_S3_ENDPOINT_URL": pod.s3_endpoint_url, "NOTIFY_KAFKA_BOOTSTRAP": kafka_bootstrap,
                        "NOTIFY_DYNAMODB_ENDPOINT_URL": dynamodb_endpoint, "NOTIFY_DELIVERY_CHANNEL": "outbox",
                        "NOTIFY_MASTER_KEY_FILE": str(pod.master_key_file),
                        "NOTIFY_TABLE_PREFIX": f"consume{uuid.uuid4().hex[:6]}_"}.items():
        monkeypatch.setenv(name, value)
    result = CliRunner().invoke(app, ["consume", "--data-dir", str(pod.data_dir), "--idle-exit", "5",
                                      "--max-records", "20"])
    assert result.exit_code == 0, result.output

    reader = build_landing_area(batch)
    fetched = reader.pull()
    assert fetched and all(name.startswith("purchases/") for name in fetched)
    report = _ingest_purchases(batch, reader)
    assert report.rows_valid == 40 and not report.bad_rows  # 20 orders x 2 lines each


def test_order_files_ingested_from_the_prefix_are_retired_there_and_never_pushed_again(aws_settings) -> None:
    """In aws the consumer pods' order files stayed under the prefix for good (``retire`` retired none, since
    a pod pushed the files of its own folder again once they were gone): every purchases ingestion pulled and
    read all of them again, each run slower than the last. A pod now keeps no copy of an order file it pushed,
    and ingestion deletes the ones it landed from the prefix; an operator's file stays."""
    from notify_core.landing import STREAM_FILE_PREFIX

    pod, batch = aws_settings("consumer-pod"), aws_settings("dagster-run")
    writer, reader = build_landing_area(pod), build_landing_area(batch)
    landing = writer.landing / "purchases"
    landing.mkdir(parents=True)
    batches = {f"{STREAM_FILE_PREFIX}{n}.parquet": _purchases([(f"o{n}", f"u{n}", "p1", 1, 2.0,
                                                                "2011-01-10T09:00:00+00:00")]) for n in (1, 2)}
    for name, frame in batches.items():
        frame.write_parquet(landing / name)
    _purchases([("x1", "u9", "p2", 1, 4.0, "2011-01-11T09:00:00+00:00")]).write_parquet(landing / "export.parquet")
    assert sorted(writer.push()) == sorted(f"purchases/{n}" for n in [*batches, "export.parquet"])
    assert sorted(p.name for p in landing.iterdir()) == ["export.parquet"]  # the pod's order files: on S3 only

    reader.pull()
    report = _ingest_purchases(batch, reader)
    assert sorted(reader.retire(report.landed_stream_files())) == sorted(f"purchases/{n}" for n in batches)
    assert sorted(reader.listing(dataset="purchases")) == ["purchases/export.parquet"]
    assert sorted(p.name for p in (reader.landing / "purchases").glob("*.parquet")) == ["export.parquet"]
    assert writer.push() == []  # nothing of the pod's comes back under the prefix
    assert sorted(reader.listing(dataset="purchases")) == ["purchases/export.parquet"]
    lake = lake_for(batch).read("purchases")
    assert sorted(lake["order_id"].to_list()) == ["o1", "o2", "x1"]  # every order landed before its file went
    reader.pull()
    # the next run reads only what is left (the operator's file), not the order files again
    assert _ingest_purchases(batch, reader).files == ["export.parquet"]

"""The aws environment end to end on a fresh, empty setup: DynamoDB Local, a SeaweedFS S3 server and a
Kafka-protocol broker, all started by the fixtures (issue 15).

``notify run`` runs the main job (one Dagster run) against them; then the same sample runs on the embedded
default, and both must hold the same rows per table and give the same recommendations. The CI-sized
sample (the first rows of the Online Retail export) runs by default; the whole export is ``slow``.
"""

from __future__ import annotations

import re
import sqlite3
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import polars as pl
import pytest
from typer.testing import CliRunner

from notify_cli.main import app
from notify_core.clock import ManualClock
from notify_core.settings import NotifySettings, load_settings
from notify_core.store import tables

# The runs' "now" (NOTIFY_CLOCK_START for both runs), not the wall clock: a morning, so today's plan (each user's
# local day) still has open windows when the delivery pass fast-forwards an hour. Late in the UTC evening the
# rest of the day holds no window and a wall-clock run planned and sent nothing.
NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
SOURCE = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "online_retail" / "online_retail.parquet"
CI_ROWS = 2_000


@dataclass
class RunResult:
    settings: NotifySettings
    seconds: float
    output: str
    items: dict[str, int]
    recommendations: dict[str, list[str]]


def _sample(tmp_path: Path, rows: int | None) -> Path:
    if not SOURCE.exists():
        pytest.fail(f"the Online Retail export is missing at {SOURCE}", pytrace=False)
    frame = pl.read_parquet(SOURCE)
    target = tmp_path / "retail.parquet"
    (frame.head(rows) if rows else frame).write_parquet(target)
    return target


def _aws_env(monkeypatch: pytest.MonkeyPatch, *, s3: object, dynamodb: str, kafka: str, master_key: Path) -> str:
    bucket = f"notify-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(bucket)  # type: ignore[attr-defined]
    for name, value in {
        "NOTIFY_ENV": "aws", "NOTIFY_AWS_REGION": "us-east-1", "NOTIFY_S3_BUCKET": bucket,
        "NOTIFY_S3_ENDPOINT_URL": s3.endpoint,  # type: ignore[attr-defined]
        "NOTIFY_DYNAMODB_ENDPOINT_URL": dynamodb, "NOTIFY_TABLE_PREFIX": f"e2e{uuid.uuid4().hex[:6]}_",
        "NOTIFY_KAFKA_BOOTSTRAP": kafka, "NOTIFY_PUBLIC_BASE_URL": "https://notify.example.com",
        # no SNS server runs offline: the delivery stage writes the outbox; the SNS adapter has its own tests
        "NOTIFY_DELIVERY_CHANNEL": "outbox",
        # one master key every process of the run shares (the template passes the stack's KMS key instead)
        "NOTIFY_MASTER_KEY_FILE": str(master_key),
        "AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local", "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    return bucket


def _items(settings: NotifySettings) -> dict[str, int]:
    """Items per Store table, counted on the backend itself (not through Notify's own code)."""
    counts: dict[str, int] = {}
    if settings.env == "aws":
        client = boto3.client("dynamodb", endpoint_url=settings.dynamodb_endpoint_url, region_name="us-east-1")
        for table in tables.ALL_TABLES:
            total, kwargs = 0, {"TableName": settings.table_prefix + table, "Select": "COUNT"}
            try:
                while True:
                    page = client.scan(**kwargs)
                    total += page["Count"]
                    if "LastEvaluatedKey" not in page:
                        break
                    kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
            except client.exceptions.ResourceNotFoundException:
                pass
            counts[table] = total
        return counts
    with sqlite3.connect(settings.sqlite_path) as conn:
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        for table in tables.ALL_TABLES:
            counts[table] = conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0] if table in names else 0
    return counts


def _recommend(settings: NotifySettings, users: list[str], now: datetime) -> dict[str, list[str]]:
    from notify_core.recommend.artefacts import build_artefact_store
    from notify_core.recommend.recommender import Recommender
    from notify_core.recommend.serving import IndexHolder
    from notify_core.store.factory import build_store

    store = build_store(settings)
    try:
        recommender = Recommender(store=store, holder=IndexHolder(build_artefact_store(settings)),
                                  clock=ManualClock(now))
        return {u: [c.campaign_id for c in recommender.recommend(u, limit=10, now=now).items] for u in users}
    finally:
        store.close()


def run_main(data_dir: Path, *, users: list[str] | None = None, now: datetime | None = None) -> RunResult:
    """``notify run`` in the environment the NOTIFY_* variables describe; items and recommendations after."""
    started = time.perf_counter()
    # the demo's fast-forward: the next hour of the plan is sent, so both runs have sends to compare
    result = CliRunner().invoke(app, ["run", "--data-dir", str(data_dir), "--fast-forward-minutes", "60"])
    seconds = time.perf_counter() - started
    assert result.exit_code == 0, result.output
    settings = load_settings(data_dir=data_dir)
    recs = _recommend(settings, users, now) if users and now else {}
    return RunResult(settings, seconds, result.output, _items(settings), recs)


def _sent(settings: NotifySettings, user: str) -> set[str]:
    """Campaigns the delivery pass sent to ``user`` in that environment."""
    from notify_core.store.factory import build_store

    store = build_store(settings)
    try:
        return {str(i["campaign_id"]) for i in store.table(tables.SENDS).query(user)}
    finally:
        store.close()


def _some_users(result: RunResult, count: int = 5) -> list[str]:
    from notify_core.lake import lake_for

    purchases = lake_for(result.settings).read("purchases").drop_nulls("user_id")
    top = purchases.group_by("user_id").len().sort(["len", "user_id"], descending=[True, False])
    return top["user_id"].head(count).to_list()


def _compare(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rows: int | None, *, s3: object, dynamodb: str,
             kafka: str) -> tuple[RunResult, RunResult]:
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.setenv("NOTIFY_SOURCE_DATA", str(_sample(tmp_path, rows)))
    monkeypatch.setenv("NOTIFY_CLOCK_START", NOW.isoformat())
    monkeypatch.setenv("NOTIFY_CLOCK_FROZEN", "true")
    now = NOW + timedelta(minutes=1)
    bucket = _aws_env(monkeypatch, s3=s3, dynamodb=dynamodb, kafka=kafka, master_key=tmp_path / "master.keys.json")
    aws = run_main(tmp_path / "aws")
    users = _some_users(aws)
    aws.recommendations = _recommend(aws.settings, users, now)
    # the landing files and the lake live under the bucket's prefix, not on local disk
    keys = [o["Key"] for o in boto3.client("s3", endpoint_url=s3.endpoint,  # type: ignore[attr-defined]
                                           region_name="us-east-1").list_objects_v2(Bucket=bucket)["Contents"]]
    assert any(k.startswith("notify/lake/purchases/") for k in keys)
    assert {f"notify/landing/{d}/" for d in ("users", "products", "campaigns", "purchases")} <= \
        {k.rsplit("/", 1)[0] + "/" for k in keys}  # landing files under the prefix, not only on local disk
    assert any(k.startswith("notify/artefacts/campaign_index/") for k in keys)
    for name in ("NOTIFY_ENV", "NOTIFY_S3_BUCKET", "NOTIFY_DYNAMODB_ENDPOINT_URL", "NOTIFY_KAFKA_BOOTSTRAP",
                 "NOTIFY_MASTER_KEY_FILE"):
        monkeypatch.delenv(name)
    embedded = run_main(tmp_path / "embedded", users=users, now=now)
    return aws, embedded


def _assert_same(aws: RunResult, embedded: RunResult) -> None:
    """Both runs stand at NOW (NOTIFY_CLOCK_FROZEN), so however long each backend takes, the plan and the
    delivery pass see the same minutes: every table holds the same number of rows, the same notifications
    were sent, and the recommender answers the same."""
    assert "published campaign index" in aws.output  # no daemon: `notify run` published it in aws
    # the one designed difference: in aws the key documents are Store items; embedded, 0600 files
    keys = {"aws": aws.items.pop(tables.KEY_DOCUMENTS), "embedded": embedded.items.pop(tables.KEY_DOCUMENTS)}
    assert keys == {"aws": len(list(embedded.settings.secrets_dir.glob("*.keys.json"))) - 1, "embedded": 0}
    assert aws.items == embedded.items
    assert aws.items[tables.PURCHASES] > 0 and aws.items[tables.PLANS] > 0 and aws.items[tables.SENDS] > 0
    assert {u: _sent(aws.settings, u) for u in aws.recommendations} == \
        {u: _sent(embedded.settings, u) for u in aws.recommendations}
    assert aws.recommendations == embedded.recommendations
    assert any(aws.recommendations.values()), "the published index answered nothing"
    written = int(re.search(r"rows written or changed in the Store this run: (\d+)", aws.output).group(1))
    assert written > 0


def _stage_seconds(output: str) -> dict[str, float]:
    return {m.group(1): float(m.group(2)) for m in re.finditer(r"done (\w+) in ([\d.]+) s", output)}


def _print_stages(aws: RunResult, embedded: RunResult) -> None:
    """The README table's rows: seconds per stage in each environment (shown with ``-s``)."""
    a, e = _stage_seconds(aws.output), _stage_seconds(embedded.output)
    for stage in a:
        print(f"| {stage} | {a[stage]:.1f} | {e.get(stage, 0.0):.1f} |")


def test_aws_main_job_on_real_servers_matches_embedded(tmp_path, monkeypatch, s3_server, dynamodb_endpoint,
                                                        kafka_bootstrap) -> None:
    aws, embedded = _compare(tmp_path, monkeypatch, CI_ROWS, s3=s3_server, dynamodb=dynamodb_endpoint,
                             kafka=kafka_bootstrap)
    _assert_same(aws, embedded)
    _print_stages(aws, embedded)
    print(f"\nCI sample {CI_ROWS} rows: aws {aws.seconds:.1f} s, embedded {embedded.seconds:.1f} s; "
          f"items {sum(aws.items.values())}; {aws.items}")


@pytest.mark.slow
@pytest.mark.timeout(2400)  # 1,130 s here (2026-12-01: the aws run 770 s, embedded 69 s); the suite's 600 s cut it
def test_aws_main_job_full_export(tmp_path, monkeypatch, s3_server, dynamodb_endpoint, kafka_bootstrap) -> None:
    aws, embedded = _compare(tmp_path, monkeypatch, None, s3=s3_server, dynamodb=dynamodb_endpoint,
                             kafka=kafka_bootstrap)
    _assert_same(aws, embedded)
    _print_stages(aws, embedded)
    print(f"\nfull export: aws {aws.seconds:.1f} s, embedded {embedded.seconds:.1f} s; "
          f"items {sum(aws.items.values())}; {aws.items}")

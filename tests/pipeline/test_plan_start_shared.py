"""The plan's first partition is one day for every process of a deployment, however many data directories.

On Kubernetes the code server, each run pod and a restarted pod each have a new data directory. While the
first day was a file there (``<data_dir>/deployed_on``), a run of today's plan whose pod loaded the
definitions after midnight had partitions starting tomorrow, without the day it was launched for. The
day is now recorded once in the Store (DynamoDB Local here, SQLite for one machine) and read by all."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest

from notify_assets.automation import DEPLOYED_ON, deployment_date
from notify_assets.definitions import assets_for
from notify_core.deployment_facts import PLAN_START, recorded_day
from notify_core.errors import ConfigurationError
from notify_core.settings import NotifySettings, load_settings
from notify_core.store import tables
from notify_core.store.adapter import build_adapter
from notify_core.store.sqlite import SqliteStore
from tests.servers import scratch_dynamo_store

FIRST = datetime(2031, 3, 14, 23, 59, tzinfo=UTC)
FIRST_DAY = FIRST.date()


@pytest.fixture
def on_dynamodb(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch):
    """Settings of one aws deployment on DynamoDB Local: each call is another pod (its own data directory)
    whose clock stands at ``at``."""
    endpoint = request.getfixturevalue("dynamodb_endpoint")
    for name, value in {"AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local",
                        "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    tmp = request.getfixturevalue("tmp_path")
    with scratch_dynamo_store(endpoint, name="start", region="us-east-1") as scratch:  # its tables go after

        def pod(name: str, at: datetime) -> NotifySettings:
            return NotifySettings(env="aws", data_dir=tmp / name, aws_region="us-east-1",
                                  dynamodb_endpoint_url=endpoint, table_prefix=scratch.table_prefix,
                                  s3_bucket="unused", sns_topic_arn="arn:aws:sns:us-east-1:0:unused",
                                  clock_start=at, clock_frozen=True)

        yield pod


def _plan_days(settings: NotifySettings) -> list[str]:
    _, plan = assets_for(settings)
    assert isinstance(plan.partitions_def, dg.DailyPartitionsDefinition)
    return plan.partitions_def.get_partition_keys()


def test_a_run_pod_started_after_midnight_has_the_day_it_was_launched_for(on_dynamodb) -> None:
    """The code server loads the definitions at 23:59 and launches today's plan; the run pod, a new data
    directory, loads them two minutes later, after midnight. Both must have today's partition: with the
    day in each data directory the run pod's partitions started tomorrow."""
    code_server = on_dynamodb("code-server", FIRST)
    assert _plan_days(code_server)[0] == FIRST_DAY.isoformat()
    run_pod = on_dynamodb("run-pod", FIRST + timedelta(minutes=2))
    assert FIRST_DAY.isoformat() in _plan_days(run_pod)
    assert deployment_date(run_pod, clock=run_pod.clock()) == FIRST_DAY
    restarted = on_dynamodb("code-server-restarted", FIRST + timedelta(days=40))  # a restart weeks later
    days = _plan_days(restarted)
    assert days[0] == FIRST_DAY.isoformat() and len(days) == 40 + 2  # every day since, today and tomorrow
    assert not (Path(code_server.data_dir) / DEPLOYED_ON).exists()  # one owner: the Store


def test_processes_proposing_different_days_at_once_all_agree_on_one(on_dynamodb, tmp_path: Path) -> None:
    """Eight processes start together, each proposing its own day; one wins, every one reads that day."""
    stores = [build_adapter(on_dynamodb(f"pod{i}", FIRST)) for i in range(8)]
    stores[0].table(tables.DEPLOYMENT)  # the table exists before the race (DynamoDB Local creates it lazily)
    start = threading.Barrier(len(stores))

    def propose(i: int) -> date:
        start.wait()
        return recorded_day(stores[i], PLAN_START, proposed=FIRST_DAY + timedelta(days=i))

    with ThreadPoolExecutor(len(stores)) as pool:
        got = list(pool.map(propose, range(len(stores))))
    for store in stores:
        store.close()
    assert len(got) == 8 and len(set(got)) == 1, got
    sqlite = SqliteStore(tmp_path / "one.sqlite")
    try:
        assert recorded_day(sqlite, PLAN_START, proposed=FIRST_DAY) == FIRST_DAY
        assert recorded_day(sqlite, PLAN_START, proposed=FIRST_DAY + timedelta(days=1)) == FIRST_DAY
    finally:
        sqlite.close()


def test_an_existing_deployments_marker_is_the_day_recorded(tmp_path: Path) -> None:
    """A data directory deployed before the day moved into the Store keeps its first day, not today's."""
    data = tmp_path / "data"
    data.mkdir()
    (data / DEPLOYED_ON).write_text("2031-01-02", encoding="utf-8")
    settings = load_settings(data_dir=data, clock_start=FIRST, clock_frozen=True)
    assert deployment_date(settings, clock=settings.clock()) == date(2031, 1, 2)
    (data / DEPLOYED_ON).unlink()  # read once: the Store holds it now
    later = load_settings(data_dir=data, clock_start=FIRST + timedelta(days=3), clock_frozen=True)
    assert deployment_date(later, clock=later.clock()) == date(2031, 1, 2)
    assert _plan_days(later)[0] == "2031-01-02"


def test_an_unreadable_recorded_day_is_a_configuration_error_naming_it(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.sqlite")
    try:
        store.table(tables.DEPLOYMENT).put({"pk": PLAN_START, "sk": tables.DEPLOYMENT_SK, "day": "14/03/2031"})
        with pytest.raises(ConfigurationError, match="plan_start_date"):
            recorded_day(store, PLAN_START, proposed=FIRST_DAY)
    finally:
        store.close()

"""The pipeline runs itself: a real ``dagster-daemon`` on a temporary instance, nobody typing a command.

- On an up-to-date instance (after one ``notify run``) the daemon launches nothing.
- A landing file with a new user and their orders becomes that user's plan in the Store: landing sensor
  -> ingestion -> features and embeddings (delta) -> plan, by the automation conditions alone.
  The landing-to-plan latency is printed (the README quotes it).

The instance is the repo's ``dagster.yaml`` (pools, run queue) with its storage moved under tmp.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
import yaml
from rich.console import Console

from notify_core.clock import ManualClock
from notify_core.settings import load_settings
from notify_core.store import tables
from notify_core.store.sqlite import SqliteStore
from tests.retail_fixture import HEART, STAR, write_retail

REPO = Path(__file__).resolve().parents[2]
NEW_USER = "900001"
# The tests' own "now": every process (notify run, the daemon, its code server and runs) reads it from
# NOTIFY_CLOCK_START, so "today", the plan's partitions and the orders' dates follow it, not the calendar.
NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


def _instance_yaml(home: Path) -> None:
    """The repo's instance config with every storage folder under ``home``."""
    config = yaml.safe_load((REPO / "dagster.yaml").read_text())
    config["storage"] = {"sqlite": {"base_dir": str(home / "storage")}}
    config["local_artifact_storage"]["config"]["base_dir"] = str(home)
    config["compute_logs"]["config"]["base_dir"] = str(home / "compute_logs")
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))


class Daemon:
    def __init__(self, env: dict[str, str], log: Path) -> None:
        daemon = Path(sys.executable).with_name("dagster-daemon")
        self.log = log
        self.process = subprocess.Popen(
            [str(daemon), "run", "-w", "workspace.yaml"], cwd=REPO, env=env, stdout=log.open("wb"),
            stderr=subprocess.STDOUT, start_new_session=True)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)


@pytest.fixture
def up_to_date(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict[str, str], Path]]:
    """A temporary instance and data dir after one ``notify run`` (the CLI path: one Dagster run)."""
    tmp = tmp_path_factory.mktemp("living")
    home = tmp / "dagster_home"
    home.mkdir()
    _instance_yaml(home)
    env = {**os.environ, "DAGSTER_HOME": str(home), "NOTIFY_DATA_DIR": str(tmp / "data"),
           "NOTIFY_SOURCE_DATA": str(write_retail(tmp / "retail.parquet")), "NOTIFY_CLOCK_START": NOW.isoformat()}
    saved = {k: os.environ.get(k) for k in ("DAGSTER_HOME", "NOTIFY_DATA_DIR", "NOTIFY_SOURCE_DATA",
                                            "NOTIFY_CLOCK_START")}
    os.environ.update({k: env[k] for k in saved})
    try:
        from notify_cli.run_command import run_main

        outcome = run_main(load_settings(), console=Console(file=open(os.devnull, "w")))  # noqa: SIM115
        assert outcome.success, outcome.failures
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    yield env, tmp


def _runs(home: str) -> list[dg.DagsterRun]:
    with dg.DagsterInstance.from_config(home) as instance:
        return list(instance.get_runs())


def _span(record: object, origin: float) -> str:
    """A run's start and end, in seconds after ``origin`` (a monotonic time taken with the wall clock)."""
    if record is None or getattr(record, "start_time", None) is None:
        return "?"
    shift = time.time() - time.monotonic()
    start = record.start_time - shift - origin  # type: ignore[attr-defined]
    end = (record.end_time or 0) - shift - origin  # type: ignore[attr-defined]
    return f"{start:.0f}..{end:.0f}s"


def _plan_rows(data_dir: Path, user_id: str) -> list[dict]:
    store = SqliteStore(data_dir / "store.sqlite", clock=ManualClock(NOW))  # plan TTLs judged by the runs' clock
    try:
        return [i for i in store.table(tables.PLANS).scan() if i.get("user_id") == user_id]
    finally:
        store.close()


def _land_new_user_and_orders(landing: Path) -> None:
    """A batch as an upstream system would drop it: one new user, two recent orders of known products,
    written aside and renamed into the landing folder together."""
    users = pl.read_parquet(next((landing / "users").glob("*.parquet")))
    users.head(1).with_columns(user_id=pl.lit(NEW_USER)).write_parquet(landing / "users" / ".new.parquet.tmp")
    lines = pl.read_parquet(next((landing / "purchases").glob("*.parquet")))
    now = NOW
    sample = lines.filter(pl.col("product_id").is_in([HEART, STAR])).unique("product_id").sort("product_id")
    sample.with_columns(
        order_id=pl.Series([f"N{NEW_USER}-{k}" for k in range(sample.height)]),
        user_id=pl.lit(NEW_USER),
        ts=pl.Series([now - timedelta(days=1 + k) for k in range(sample.height)]).cast(sample.schema["ts"]),
    ).write_parquet(landing / "purchases" / ".new.parquet.tmp")
    for dataset in ("users", "purchases"):
        (landing / dataset / ".new.parquet.tmp").rename(landing / dataset / "new.parquet")


def _idle_launches(up_to_date: tuple[dict[str, str], Path], seconds: float) -> tuple[int, Daemon]:
    env, tmp = up_to_date
    before = len(_runs(env["DAGSTER_HOME"]))
    daemon = Daemon(env, tmp / f"daemon-{int(time.time())}.log")
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert daemon.process.poll() is None, daemon.log.read_text()[-3000:]
        time.sleep(2)
    assert "default_automation_condition_sensor" in daemon.log.read_text(), "the automation sensor never ticked"
    return len(_runs(env["DAGSTER_HOME"])) - before, daemon


@pytest.mark.slow  # 4-6 min on a loaded machine; tests/pipeline/test_automation.py is the quick variant
@pytest.mark.timeout(1200)  # the fixture's notify run, 40 s idle, then up to 480 s for the plan
def test_daemon_on_an_up_to_date_instance_launches_nothing_then_plans_a_landed_user(up_to_date) -> None:
    env, tmp = up_to_date
    launched, daemon = _idle_launches(up_to_date, seconds=40)
    try:
        assert launched == 0, [r.job_name for r in _runs(env["DAGSTER_HOME"])]
        data_dir = Path(env["NOTIFY_DATA_DIR"])
        assert not _plan_rows(data_dir, NEW_USER)
        started = time.monotonic()
        _land_new_user_and_orders(data_dir / "landing")
        with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
            planned = instance.get_materialized_partitions(dg.AssetKey("notification_plan"))
        assert NOW.date().isoformat() in planned  # notify run planned the clock's today, not the calendar's
        rows: list[dict] = []
        while time.monotonic() - started < 420 and not rows:
            assert daemon.process.poll() is None, daemon.log.read_text()[-3000:]
            time.sleep(2)
            rows = _plan_rows(data_dir, NEW_USER)
        latency = time.monotonic() - started
        runs = _runs(env["DAGSTER_HOME"])
        with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
            records = {r.dagster_run.run_id: r for r in instance.get_run_records()}
        summary = [f"{r.job_name}:{r.status.value}:{r.tags.get('dagster/partition', '-')}:"
                   f"{_span(records.get(r.run_id), started)}:"
                   f"{','.join(sorted(k.to_user_string() for k in r.asset_selection or ()))}" for r in reversed(runs)]
        if os.environ.get("NOTIFY_TEST_DAEMON_LOG"):
            print("\n".join(line[:220] for line in daemon.log.read_text().splitlines()
                            if "requested" in line or "Launching run" in line or "Launched" in line))
        assert rows, f"no plan for the new user after {latency:.0f} s; runs: {summary}"
        assert {r["plan_day"] for r in rows} <= {NOW.date().isoformat(), (NOW.date() + timedelta(days=1)).isoformat()}
        print(f"\nlanding-to-plan latency: {latency:.0f} s ({len(rows)} notifications planned for {NEW_USER}); "
              f"runs: {summary}")
        assert latency <= 360, latency  # the goal (<= 120 s) holds on an idle machine; see notes/h16pipe.md
    finally:
        daemon.stop()


@pytest.mark.slow
def test_daemon_on_an_up_to_date_instance_launches_no_run_in_two_minutes(up_to_date) -> None:
    env, _ = up_to_date
    launched, daemon = _idle_launches(up_to_date, seconds=120)
    daemon.stop()
    assert launched == 0, [r.job_name for r in _runs(env["DAGSTER_HOME"])]

"""`notify run` end to end on the fixture: a summary, then 0 rows written on the second run."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

from typer.testing import CliRunner

from notify_cli.main import app
from notify_core.clock import ManualClock
from notify_core.store import tables
from notify_core.store.sqlite import SqliteStore
from tests.retail_fixture import write_retail

MORNING = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


def test_notify_run_twice(tmp_path, monkeypatch) -> None:
    import tempfile

    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    scratch = tmp_path / "tmp"  # the runs must leave nothing in the temporary folder (each left one before)
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    monkeypatch.setenv("NOTIFY_SOURCE_DATA", str(write_retail(tmp_path / "retail.parquet")))
    monkeypatch.setenv("NOTIFY_CLOCK_START", MORNING.isoformat())  # a morning: the day is still ahead to plan
    runner = CliRunner()
    first = runner.invoke(app, ["run", "--data-dir", str(tmp_path / "data")])
    assert first.exit_code == 0, first.output
    assert "purchases" in first.output and "user_features" in first.output
    # the README's summary: rows per dataset, new / changed / unchanged, quarantined, Store writes, asset checks
    header = next(line for line in first.output.splitlines() if " asset " in line and " unchanged " in line)
    assert all(f" {c} " in header for c in ("rows", "new", "changed", "unchanged", "bad", "Store written"))
    assert re.search(r"asset checks: (\d+)/\1 passed", first.output), first.output[-2000:]
    written = int(re.search(r"rows written or changed in the Store this run: (\d+)", first.output).group(1))
    assert written > 0
    # every fixture user gets notifications (the learned ranker scores them all under even odds: the plan
    # was empty while the planner took its raw logit for the relevance)
    store = SqliteStore(tmp_path / "data" / "store.sqlite", clock=ManualClock(MORNING))
    try:
        users = {str(u["pk"]) for u in store.table(tables.USERS).scan()}
        planned = {str(p["user_id"]) for p in store.table(tables.PLANS).scan()}
    finally:
        store.close()
    assert users and planned == users
    second = runner.invoke(app, ["run", "--data-dir", str(tmp_path / "data")])
    assert second.exit_code == 0, second.output
    assert "rows written or changed in the Store this run: 0" in second.output
    # the ephemeral Dagster instance's artefact folder is gone (torch's compile cache is shared, reused: kept)
    assert [p.name for p in scratch.iterdir() if not p.name.startswith("torchinductor_")] == []


def test_a_failed_run_is_one_line_with_the_reason_and_a_hint(tmp_path, monkeypatch) -> None:
    """Run from a folder where the default source path does not exist: one line says so and names the
    setting; the trace is in the log file, not on the terminal."""
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.setenv("NOTIFY_SOURCE_DATA", str(tmp_path / "nowhere" / "online_retail.parquet"))
    result = CliRunner().invoke(app, ["run", "--data-dir", str(tmp_path / "data")])
    assert result.exit_code == 1, result.output
    failed = [line for line in result.output.splitlines() if line.startswith("FAILED online_retail_landing")]
    assert len(failed) == 1 and "hint:" in failed[0] and "NOTIFY_SOURCE_DATA" in failed[0], result.output
    assert "Traceback" not in result.output
    assert "not run (downstream of a failure): " in result.output and "notification_plan" in result.output
    log = (tmp_path / "data" / "logs" / "notify.jsonl").read_text()
    assert "Traceback" in log or "trace" in log


def test_summary_numbers_have_units_and_the_fast_forward_is_explained() -> None:
    from notify_cli.run_command import AssetOutcome, RunOutcome, highlights

    outcome = RunOutcome(run_id="r", success=True, seconds=1.0, partition="2026-01-02", assets={
        "delivery_run": AssetOutcome(seconds=1.0, metadata={
            "delivered": 1234, "retried": 0, "dead_lettered": 0, "duplicates": 0, "channel": "outbox",
            "lateness_p50_s": 1837.3884391784668, "lateness_p99_s": 3540.2, "fast_forward_minutes": 60})})
    text = "\n".join(highlights(outcome))
    assert "1,234 delivered" in text and "lateness p50 30.6 min, p99 59.0 min" in text
    assert "fast-forwards the worker's clock 60 min" in text and "1837.38" not in text


def test_an_empty_plan_says_why_and_how_to_replay_a_morning() -> None:
    """Late in the UTC evening the rest of the users' local day has no window left: the run's summary says
    so instead of a bare "0 notifications" (the planner really placed nothing: its own metadata says)."""
    from notify_cli.run_command import AssetOutcome, RunOutcome, highlights

    def summary(planned: int) -> str:
        plan = AssetOutcome(seconds=0.1, metadata={"plan_day": "2026-11-23", "users_planned": 71,
                                                   "notifications_planned": planned, "users_with_notifications": 0})
        return "\n".join(highlights(RunOutcome(run_id="r", success=True, seconds=1.0, partition="2026-11-23",
                                               assets={"notification_plan": plan})))

    assert "nothing left to plan" in summary(0) and "NOTIFY_CLOCK_START=" in summary(0)
    assert "nothing left to plan" not in summary(3)


def _sent_schedule_items(data: Path) -> list[dict]:
    store = SqliteStore(data / "store.sqlite", clock=ManualClock(MORNING))
    try:
        return [i for i in store.table(tables.SCHEDULES).scan() if i.get("status") not in ("pending", "cancelled")]
    finally:
        store.close()


def test_notify_run_sends_nothing_before_its_time_unless_the_demos_fast_forward_is_asked(
        tmp_path, monkeypatch) -> None:
    """The delivery pass of the main job shifted its clock an hour by default: every `notify run`, and every
    run of the main job from the UI, sent the next hour of the plan at once, past the users' windows and
    quiet hours. Now only ``--fast-forward-minutes`` (what `make demo` passes) sends ahead, and says so."""
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.setenv("NOTIFY_SOURCE_DATA", str(write_retail(tmp_path / "retail.parquet")))
    monkeypatch.setenv("NOTIFY_CLOCK_START", MORNING.isoformat())
    monkeypatch.setenv("NOTIFY_CLOCK_FROZEN", "true")  # the run's now is MORNING throughout
    plain = CliRunner().invoke(app, ["run", "--data-dir", str(tmp_path / "plain")])
    assert plain.exit_code == 0, plain.output
    assert "fast-forward" not in plain.output
    early = [i for i in _sent_schedule_items(tmp_path / "plain") if str(i["send_at"]) > "2026-11-23T09:00:00Z"]
    assert early == [], early[:3]
    demo = CliRunner().invoke(app, ["run", "--data-dir", str(tmp_path / "demo"), "--fast-forward-minutes", "60"])
    assert demo.exit_code == 0, demo.output
    assert "sends the next 60 min of the plan now" in demo.output
    assert "fast-forwards the worker's clock 60" in demo.output
    ahead = [i for i in _sent_schedule_items(tmp_path / "demo") if str(i["send_at"]) > "2026-11-23T09:00:00Z"]
    assert ahead and all(str(i["send_at"]) <= "2026-11-23T10:00:00Z" for i in ahead)

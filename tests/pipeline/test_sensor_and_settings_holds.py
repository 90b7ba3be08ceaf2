"""Two holds found by an audit, with tests that fail on the old code.

The landing sensor: a failed (or canceled) ingestion records no fingerprint, so the sensor asks again for the
same files; Dagster never launches a second run for a run key it has seen, so the retry needs a new run key,
and it waits a growing backoff so a file that can never be ingested does not loop.

The settings: pydantic-settings ignores NOTIFY_* environment variables that name no field (``extra="forbid"``
covers keyword arguments only), so a misspelt one silently fell back to its default.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import dagster as dg
import pytest
from dagster._core.remote_origin import InProcessCodeLocationOrigin
from dagster._core.test_utils import (
    InProcessTestWorkspaceLoadTarget,
    create_run_for_test,
    freeze_time,
    instance_for_test,
)
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._daemon.sensor import execute_sensor_iteration

import notify_sensors.landing as landing
from notify_core.errors import ConfigurationError
from notify_core.settings import NotifySettings, load_settings
from notify_resources import resources_for

ROOT = Path(__file__).resolve().parents[2]
RUN_KEY = "dagster/run_key"


# --- the landing sensor -----------------------------------------------------------------------------------
@pytest.fixture
def landed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> NotifySettings:
    data = tmp_path / "data"
    monkeypatch.setenv("NOTIFY_DATA_DIR", str(data))  # the daemon test loads the definitions from the environment
    (data / "landing" / "users").mkdir(parents=True)
    (data / "landing" / "users" / "a.csv").write_text("user_id,timezone\nu1,UTC\n")
    return load_settings(data_dir=data)


def _clock(monkeypatch: pytest.MonkeyPatch, at: float) -> None:
    """The sensor's wall clock (the backoff), moved without sleeping."""
    monkeypatch.setattr(landing, "time", SimpleNamespace(time=lambda: at), raising=False)


def _skip(result: dg.SensorResult) -> str:
    return result.skip_reason.skip_message or "" if result.skip_reason is not None else ""


def _ended_at(instance: dg.DagsterInstance, run_id: str) -> float:
    record = instance.get_run_record_by_id(run_id)
    assert record is not None and record.end_time is not None
    return record.end_time


def _run_for(instance: dg.DagsterInstance, request: dg.RunRequest, status: dg.DagsterRunStatus) -> dg.DagsterRun:
    """A run as the daemon creates it for ``request`` (its tags and run key)."""
    return create_run_for_test(instance, job_name=landing.INGEST_JOB, status=status,
                               tags={**request.tags, RUN_KEY: request.run_key})


def test_a_failed_or_canceled_ingestion_is_asked_again_under_a_new_run_key_after_a_growing_backoff(
        landed: NotifySettings, monkeypatch: pytest.MonkeyPatch) -> None:
    with instance_for_test() as instance:
        def tick() -> dg.SensorResult:
            with dg.build_sensor_context(instance=instance, resources=resources_for(landed)) as context:
                return landing.landing_sensor(context)

        [first] = tick().run_requests
        assert first.asset_selection == [dg.AssetKey("users")]
        assert tick().run_requests[0].run_key == first.run_key  # no run yet: same files, same key
        run = _run_for(instance, first, dg.DagsterRunStatus.STARTED)
        assert "queued or in progress" in _skip(tick())  # the busy check holds
        instance.report_run_failed(run)
        failed_at = _ended_at(instance, run.run_id)

        waiting = tick()  # the old code asked again under the run key Dagster already ran: never launched
        assert not waiting.run_requests, [r.run_key for r in waiting.run_requests]
        assert "1 unsuccessful ingestion run(s) of users" in _skip(waiting)
        assert run.run_id in _skip(waiting) and "next try in" in _skip(waiting)

        _clock(monkeypatch, failed_at + landing.RETRY_BACKOFF_S + 1)
        [second] = tick().run_requests
        assert second.run_key not in {first.run_key, None} and second.asset_selection == first.asset_selection
        canceled = _run_for(instance, second, dg.DagsterRunStatus.STARTED)
        instance.report_run_canceled(canceled)
        canceled_at = _ended_at(instance, canceled.run_id)

        _clock(monkeypatch, canceled_at + 1.5 * landing.RETRY_BACKOFF_S)
        assert "2 unsuccessful" in _skip(tick())  # the second wait is twice the first
        _clock(monkeypatch, canceled_at + 2 * landing.RETRY_BACKOFF_S + 1)
        [third] = tick().run_requests
        assert third.run_key not in {first.run_key, second.run_key}

        # new files: a fresh key and no wait, whatever became of the old ones
        (landed.landing / "users" / "b.csv").write_text("user_id,timezone\nu2,UTC\n")
        _clock(monkeypatch, failed_at)
        [fresh] = tick().run_requests
        assert fresh.run_key not in {first.run_key, second.run_key, third.run_key}
    assert landing.retry_backoff_s(1) == landing.RETRY_BACKOFF_S
    assert landing.retry_backoff_s(100) == landing.RETRY_BACKOFF_MAX_S  # capped


def test_a_batch_held_by_a_failed_run_from_before_the_fix_is_retried(
        landed: NotifySettings, monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs requested by the old sensor carry the first run key only (no landing-key tag): they count too."""
    with instance_for_test() as instance:
        def tick() -> dg.SensorResult:
            with dg.build_sensor_context(instance=instance, resources=resources_for(landed)) as context:
                return landing.landing_sensor(context)

        [first] = tick().run_requests
        old = create_run_for_test(instance, job_name=landing.INGEST_JOB, status=dg.DagsterRunStatus.STARTED,
                                  tags={"notify/landed": "users", RUN_KEY: first.run_key})
        instance.report_run_failed(old)
        _clock(monkeypatch, _ended_at(instance, old.run_id) + 3600)
        [retry] = tick().run_requests
        assert retry.run_key != first.run_key and retry.asset_selection == [dg.AssetKey("users")]


def test_the_sensor_daemon_launches_the_retry_of_a_failed_ingestion(
        landed: NotifySettings, monkeypatch: pytest.MonkeyPatch) -> None:
    """Through the real daemon iteration, which skips a request whose run key already has a run."""
    origin = LoadableTargetOrigin(module_name="notify_assets.definitions", working_directory=str(ROOT))
    start = datetime.now(UTC)
    queued = {"run_coordinator": {"module": "dagster._core.run_coordinator", "class": "QueuedRunCoordinator"}}
    with (instance_for_test(overrides=queued) as instance,  # queued: nothing executes
          WorkspaceProcessContext(instance, InProcessTestWorkspaceLoadTarget(
              InProcessCodeLocationOrigin(origin))) as workspace):
        def tick(after_s: int) -> list[dg.DagsterRun]:  # past the sensor's minimum interval each time
            with freeze_time(start + timedelta(seconds=after_s)):
                list(execute_sensor_iteration(workspace, logging.getLogger("landing-sensor-test"), None, None))
            return list(instance.get_runs(dg.RunsFilter(job_name=landing.INGEST_JOB)))

        [first] = tick(0)
        assert len(tick(10)) == 1  # queued: busy, nothing more
        instance.report_run_failed(first)
        assert len(tick(20)) == 1  # within the backoff
        state = next(s for s in instance.all_instigator_state() if s.name == "landing_sensor")
        latest = instance.get_ticks(state.instigator_origin_id, state.selector_id)[0]
        assert "next try in" in (latest.skip_reason or ""), latest
        _clock(monkeypatch, _ended_at(instance, first.run_id) + landing.RETRY_BACKOFF_S + 1)
        runs = tick(30)
        assert len(runs) == 2, "the landed users batch was never ingested again after one failed run"
        assert runs[0].tags[RUN_KEY] != first.tags[RUN_KEY]
        assert runs[0].asset_selection == first.asset_selection == {dg.AssetKey("users")}


# --- the settings -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,value,closest", [
    ("NOTIFY_EVN", "aws", "NOTIFY_ENV"),
    ("NOTIFY_CLOCK_STRAT", "2026-11-23T09:00:00Z", "NOTIFY_CLOCK_START"),
    ("NOTIFY_PLAN_START", "2026-11-01", "NOTIFY_PLAN_START_DATE"),
    ("notify_clock_frozn", "true", "NOTIFY_CLOCK_FROZEN"),  # pydantic-settings reads names in any case
])
def test_a_misspelt_notify_variable_is_refused_naming_the_closest_setting(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, name: str, value: str, closest: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError, match=rf"{name} \(did you mean {closest}\?\)"):
        load_settings(data_dir=tmp_path)
    with pytest.raises(ConfigurationError, match=name):  # the resources build NotifySettings directly
        NotifySettings(data_dir=tmp_path)


def test_settings_and_the_variables_read_elsewhere_are_accepted(monkeypatch: pytest.MonkeyPatch,
                                                                 tmp_path: Path) -> None:
    for name in ("NOTIFY_LOG_LEVEL", "NOTIFY_TEST_DAEMON_LOG", "NOTIFY_SOCKET"):  # read by others (settings.py)
        monkeypatch.setenv(name, "1")
    monkeypatch.setenv("NOTIFY_CLOCK_START", "2026-11-23T09:00:00Z")
    monkeypatch.setenv("notify_clock_frozen", "true")
    settings = load_settings(data_dir=tmp_path)
    assert settings.clock_start == datetime(2026, 11, 23, 9, tzinfo=UTC) and settings.clock_frozen


# Named in the repository but never read: the settings refuse them like any other unknown name.
NOT_VARIABLES = {"NOTIFY_ALLOW_SHARED_FILES"}  # notify_core/security/files.py: "is not a thing"
_SCANNED = ["notify_core", "notify_cli", "notify_assets", "notify_sensors", "notify_resources", "lambdas", "scripts",
            "tests", "bench", "deploy", ".ci", "Makefile", "README.md", "pyproject.toml", "dagster.yaml",
            "workspace.yaml"]
_TEXT = {".py", ".md", ".yaml", ".yml", ".toml", ".json", ".j2", ".sh", ".cfg", ".ini", ".env", ".txt", ""}


def test_every_notify_variable_the_repository_sets_or_reads_is_a_setting_or_allowlisted() -> None:
    """CI, the templates, the Dockerfiles, the tests and the Lambda handlers set or read these: refusing one
    would stop that entry point."""
    from notify_core.settings import ENVIRONMENT_ALLOWLIST
    known = {"NOTIFY_" + name.upper() for name in NotifySettings.model_fields} | ENVIRONMENT_ALLOWLIST
    found: dict[str, str] = {}
    for top in _SCANNED:
        root = ROOT / top
        for path in [root] if root.is_file() else sorted(root.rglob("*")) if root.is_dir() else []:
            if (not path.is_file() or path.resolve() == Path(__file__).resolve() or "__pycache__" in path.parts
                    or (path.suffix not in _TEXT and not path.name.endswith("Dockerfile"))
                    or path.stat().st_size > 2_000_000):
                continue
            text = path.read_text(errors="replace")
            for name in re.findall(r"\bNOTIFY_[A-Z0-9_]*[A-Z0-9]\b", text):
                found.setdefault(name, str(path.relative_to(ROOT)))
    assert {"NOTIFY_ENV", "NOTIFY_LOG_LEVEL", "NOTIFY_CLOCK_START"} <= set(found)  # the scan sees them
    assert {n: p for n, p in found.items() if n not in known | NOT_VARIABLES} == {}

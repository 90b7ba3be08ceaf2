"""`notify run` keeps its log lines for the whole run.

``logging.config.dictConfig`` closes every handler of the process and leaves it attached, and Dagster calls
it each time a run's log manager is made (``get_yaml_python_handlers``, with or without ``python_logs`` in
``dagster.yaml``). ``notify.jsonl``'s handler then had a closed file: every line logged after the run began
was lost, each with a "--- Logging error ---" traceback on stderr (2,266 of them on the demo's data).
"""

from __future__ import annotations

import json
import logging
import logging.config
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from notify_core.observability import configure_logging
from tests.pipeline.instances import repo_instance
from tests.retail_fixture import write_retail

REPO = Path(__file__).resolve().parents[2]
MORNING = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


def test_a_log_file_handler_closed_by_dictconfig_goes_on_writing(tmp_path: Path) -> None:
    path = tmp_path / "notify.jsonl"
    log = logging.getLogger("notify_core.test_run_logs")
    saved = {name: (logging.getLogger(name).handlers[:], logging.getLogger(name).level,
                    logging.getLogger(name).propagate) for name in ("notify_core", "lambdas", "notify_cli")}
    try:
        configure_logging(path=path)
        log.info("before")
        logging.config.dictConfig({"version": 1, "disable_existing_loggers": False})  # what Dagster runs
        log.info("after")
        [handler] = logging.getLogger("notify_core").handlers
        handler.close()  # and at exit: closed twice is fine
        handler.close()
    finally:
        for name, (handlers, level, propagate) in saved.items():
            logger = logging.getLogger(name)
            logger.handlers, logger.level, logger.propagate = handlers, level, propagate
    assert [json.loads(line)["message"] for line in path.read_text().splitlines()] == ["before", "after"]


def test_notify_run_logs_every_step_to_its_file_and_no_logging_error(tmp_path: Path) -> None:
    home, data = tmp_path / "dagster", tmp_path / "data"
    repo_instance(home).dispose()
    env = {**os.environ, "DAGSTER_HOME": str(home), "NOTIFY_CLOCK_START": MORNING.isoformat(),
           "NOTIFY_SOURCE_DATA": str(write_retail(tmp_path / "retail.parquet"))}
    done = subprocess.run([sys.executable, "-m", "notify_cli.main", "run", "--data-dir", str(data),
                           "--fast-forward-minutes", "60"], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Logging error" not in done.stderr, done.stderr[:3000]
    lines = [json.loads(line) for line in (data / "logs" / "notify.jsonl").read_text().splitlines()]
    ingested = {line["dataset"] for line in lines if line["message"] == "ingested"}
    assert ingested == {"campaigns", "products", "users", "purchases"}, ingested
    assert any(line["logger"].startswith("notify_core.delivery") for line in lines)  # the run's last steps too


def test_a_run_of_the_code_location_logs_to_the_data_directorys_file(tmp_path: Path) -> None:
    """A run the daemon launches loads the code location (``notify_assets.definitions:defs``) in its own
    process, where nothing had given Notify's loggers a handler: its INFO lines were dropped."""
    home, data = tmp_path / "dagster", tmp_path / "data"
    repo_instance(home).dispose()
    env = {**os.environ, "DAGSTER_HOME": str(home), "NOTIFY_DATA_DIR": str(data),
           "NOTIFY_CLOCK_START": MORNING.isoformat(),
           "NOTIFY_SOURCE_DATA": str(write_retail(tmp_path / "retail.parquet"))}
    dagster = Path(sys.executable).with_name("dagster")
    done = subprocess.run([str(dagster), "asset", "materialize", "-m", "notify_assets.definitions",
                           "--select", "online_retail_landing,campaigns"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    path = data / "logs" / "notify.jsonl"
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(line["message"], line["dataset"]) for line in lines if line["message"] == "ingested"] == [
        ("ingested", "campaigns")]
    assert path.stat().st_mode & 0o077 == 0 and path.parent.stat().st_mode & 0o077 == 0


def test_in_aws_the_code_location_logs_to_stdout(monkeypatch, capsys) -> None:
    """Code server and run pods: the cluster's log collection reads stdout; the pod's data directory is scratch."""
    import dagster as dg

    from notify_assets import definitions
    from notify_core.settings import NotifySettings

    aws = NotifySettings(env="aws", aws_region="eu-west-1", s3_bucket="b", sns_topic_arn="arn:aws:sns:eu-west-1:1:t")
    monkeypatch.setattr(definitions, "load_settings", lambda: aws)
    monkeypatch.setattr(definitions, "build_definitions", lambda _settings: dg.Definitions())
    saved = {name: (logging.getLogger(name).handlers[:], logging.getLogger(name).level,
                    logging.getLogger(name).propagate) for name in ("notify_core", "lambdas", "notify_cli")}
    umask = os.umask(0o077)  # defs() makes the process's umask private: given back after
    try:
        for name in saved:
            logging.getLogger(name).handlers = []
        definitions.defs()
        logging.getLogger("notify_core.test_run_logs").info("from a run pod")
    finally:
        os.umask(umask)
        for name, (handlers, level, propagate) in saved.items():
            logger = logging.getLogger(name)
            logger.handlers, logger.level, logger.propagate = handlers, level, propagate
    [line] = [json.loads(out) for out in capsys.readouterr().out.splitlines() if out.startswith("{")]
    assert line["message"] == "from a run pod" and line["level"] == "info"

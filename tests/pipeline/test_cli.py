"""`notify run` end to end on the fixture: a summary, then 0 rows written on the second run."""

from __future__ import annotations

import re

from typer.testing import CliRunner

from notify_cli.main import app
from tests.retail_fixture import write_retail


def test_notify_run_twice(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.setenv("NOTIFY_SOURCE_DATA", str(write_retail(tmp_path / "retail.parquet")))
    runner = CliRunner()
    first = runner.invoke(app, ["run", "--data-dir", str(tmp_path / "data")])
    assert first.exit_code == 0, first.output
    assert "purchases" in first.output and "user_features" in first.output
    written = int(re.search(r"rows written or changed in the Store this run: (\d+)", first.output).group(1))
    assert written > 0
    second = runner.invoke(app, ["run", "--data-dir", str(tmp_path / "data")])
    assert second.exit_code == 0, second.output
    assert "rows written or changed in the Store this run: 0" in second.output


def test_unknown_stage_is_a_usage_error(tmp_path) -> None:
    result = CliRunner().invoke(app, ["run", "--data-dir", str(tmp_path), "--stage", "nope"])
    assert result.exit_code == 2
    assert "unknown stage" in result.output

"""A Dagster instance configured as the repo's ``dagster.yaml`` (what ``make demo`` and ``make dev`` run), with
its storage in a test's own folder."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import yaml

REPO = Path(__file__).resolve().parents[2]


def repo_instance(home: Path) -> dg.DagsterInstance:
    """The repo's ``dagster.yaml`` with every path under ``home`` (written there as ``home/dagster.yaml``, so a
    process started with ``DAGSTER_HOME=home`` opens the same instance)."""
    config = yaml.safe_load((REPO / "dagster.yaml").read_text())
    config["storage"] = {"sqlite": {"base_dir": str(home / "storage")}}
    config["local_artifact_storage"]["config"]["base_dir"] = str(home)
    config["compute_logs"]["config"]["base_dir"] = str(home / "compute_logs")
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    return dg.DagsterInstance.from_config(str(home))

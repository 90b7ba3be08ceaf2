"""Fixtures of the pipeline tests: a Dagster instance configured as the repo's ``dagster.yaml``, and a real
PostgreSQL (the Helm chart's Dagster storage)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from tests.pipeline.instances import repo_instance
from tests.servers import EmbeddedPostgres, started_or_fail


@pytest.fixture
def postgres() -> Iterator[EmbeddedPostgres]:
    server = started_or_fail(EmbeddedPostgres.start, what="PostgreSQL")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def dagster_home(tmp_path: Path) -> Path:
    """The folder of the test's Dagster instance (its ``dagster.yaml``, storage and captured logs)."""
    return tmp_path / "dagster"


@pytest.fixture
def instance(dagster_home: Path) -> Iterator[dg.DagsterInstance]:
    """A Dagster instance configured as the repo's ``dagster.yaml``, in :func:`dagster_home`."""
    opened = repo_instance(dagster_home)
    try:
        yield opened
    finally:
        opened.dispose()
